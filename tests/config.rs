//! Configuration: layering and precedence, `${VAR}` substitution, the Lucid files, and the
//! one-line errors that stop start-up.

// figment's Jail closures must return figment's own (large) error type.
#![allow(clippy::result_large_err)]

use block_manager::config::{LoadOptions, load};
use figment::Jail;

const REPO_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config");

fn copy_repo_config(jail: &Jail) {
    std::fs::create_dir_all(jail.directory().join("config")).unwrap();
    for f in [
        "block-manager-config.yaml",
        "block-manager-config.json",
        "block-manager-errors.yaml",
        "block-manager-logging.yaml",
    ] {
        std::fs::copy(
            format!("{REPO_CONFIG}/{f}"),
            jail.directory().join("config").join(f),
        )
        .unwrap();
    }
}

fn main_file(jail: &Jail, text: &str) -> figment::error::Result<()> {
    std::fs::create_dir_all(jail.directory().join("config")).unwrap();
    jail.create_file("config/block-manager-config.yaml", text)
        .map(|_| ())
}

fn err(opts: &LoadOptions) -> String {
    load(opts)
        .expect_err("configuration should be refused")
        .to_string()
}

#[test]
fn runs_on_built_in_defaults_with_no_files_at_all() {
    Jail::expect_with(|_| {
        let l = load(&LoadOptions::default()).unwrap();
        assert!(l.files.is_empty());
        assert_eq!(l.config.service.host, "0.0.0.0");
        assert_eq!(l.config.service.port, 8086);
        assert_eq!(l.config.storage.blocks_path, "data/blocks");
        assert!(l.config.upstream().is_none());
        Ok(())
    });
}

#[test]
fn lucid_files_with_defaults_in_substitutions_load_unchanged() {
    Jail::expect_with(|jail| {
        copy_repo_config(jail);
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(l.files.len(), 3, "{:?}", l.files);
        assert_eq!(
            l.config.service.port, 8086,
            "port: ${{BLOCK_MANAGER_PORT:-8086}} is a number"
        );
        assert_eq!(l.config.synchronization.sync_timeout_seconds, 30.0);
        assert_eq!(
            l.config
                .error_handling
                .blockchain_engine
                .circuit_breaker
                .failure_threshold,
            5
        );
        assert_eq!(
            l.config.error_codes.get("BM_001").map(String::as_str),
            Some("Block not found")
        );
        assert!(l.config.logging_config.handlers.contains_key("error_file"));
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        Ok(())
    });
}

#[test]
fn json_main_file_gives_the_same_settings_as_yaml() {
    Jail::expect_with(|jail| {
        copy_repo_config(jail);
        let yaml = serde_json::to_value(load(&LoadOptions::default()).unwrap().config).unwrap();
        jail.set_env("BLOCK_MANAGER_CONFIG", "config/block-manager-config.json");
        let json = serde_json::to_value(load(&LoadOptions::default()).unwrap().config).unwrap();
        assert_eq!(yaml, json);
        Ok(())
    });
}

#[test]
fn environment_overrides_files_and_flags_override_environment() {
    Jail::expect_with(|jail| {
        copy_repo_config(jail);
        jail.set_env("BLOCK_MANAGER_PORT", "9001");
        jail.set_env("BLOCK_MANAGER_HOST", "127.0.0.1");
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(
            (l.config.service.host.as_str(), l.config.service.port),
            ("127.0.0.1", 9001)
        );
        let l = load(&LoadOptions {
            port: Some(9002),
            host: Some("::1".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            (l.config.service.host.as_str(), l.config.service.port),
            ("::1", 9002)
        );
        Ok(())
    });
}

#[test]
fn double_underscore_variables_set_any_key_and_named_variables_win() {
    Jail::expect_with(|jail| {
        jail.set_env("BLOCK_MANAGER__SYNCHRONIZATION__FETCH_BATCH_SIZE", "250");
        jail.set_env("BLOCK_MANAGER__ERROR_HANDLING__RETRY__MAX_ATTEMPTS", "7");
        jail.set_env("BLOCK_MANAGER__SERVICE__PORT", "7000");
        jail.set_env("BLOCK_MANAGER_PORT", "7001");
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(l.config.synchronization.fetch_batch_size, 250);
        assert_eq!(
            l.config.error_handling.retry.max_retries, 6,
            "our older max_attempts counts the first try"
        );
        assert_eq!(l.config.service.port, 7001);
        Ok(())
    });
}

#[test]
fn every_named_variable_reaches_its_key() {
    Jail::expect_with(|jail| {
        jail.set_env("BLOCK_MANAGER_URL", "http://bm.example:8086");
        jail.set_env("BLOCK_STORAGE_PATH", "/srv/blocks");
        jail.set_env("BLOCKCHAIN_ENGINE_URL", "http://engine:8084");
        jail.set_env("SYNC_TIMEOUT", "12");
        jail.set_env("LUCID_ENV", "staging");
        jail.set_env("LUCID_PLATFORM", "amd64");
        jail.set_env("LOG_LEVEL", "DEBUG");
        jail.set_env("BLOCK_MANAGER_API_KEY", "w");
        jail.set_env("BLOCK_MANAGER_READ_API_KEY", "r");
        jail.set_env("BLOCKCHAIN_ENGINE_API_KEY", "e");
        jail.set_env("MONGODB_URL", "mongodb://x");
        let l = load(&LoadOptions::default()).unwrap();
        let c = &l.config;
        assert_eq!(c.service.url, "http://bm.example:8086");
        assert_eq!(c.storage.blocks_path, "/srv/blocks");
        assert_eq!(c.upstream(), Some("http://engine:8084"));
        assert_eq!(c.synchronization.sync_timeout_seconds, 12.0);
        assert_eq!(
            c.error_handling.blockchain_engine.request_timeout_seconds,
            12.0
        );
        assert_eq!(
            (c.service.environment.as_str(), c.service.platform.as_str()),
            ("staging", "amd64")
        );
        assert_eq!(c.logging.level, "DEBUG");
        assert_eq!(c.security.api_key.get(), Some("w"));
        assert_eq!(c.security.read_api_key.get(), Some("r"));
        assert_eq!(c.synchronization.engine_api_key.get(), Some("e"));
        assert!(l.notices.iter().any(|n| n.contains("MONGODB_URL")));
        assert!(!format!("{c:?}").contains("\"w\""), "secrets never print");
        Ok(())
    });
}

#[test]
fn substitution_defaults_apply_when_unset_and_keep_their_type() {
    Jail::expect_with(|jail| {
        main_file(
            jail,
            "synchronization:\n  poll_interval_seconds: ${X_POLL:-30}\n  fetch_batch_size: ${X_BATCH:-40}\nrate_limits:\n  enabled: ${X_RL:-false}\n",
        )?;
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(
            l.config.synchronization.poll_interval_seconds, 30.0,
            "${{X:-30}} with X unset is 30, not -30"
        );
        assert_eq!(l.config.synchronization.fetch_batch_size, 40);
        assert!(!l.config.rate_limits.enabled);
        jail.set_env("X_BATCH", "");
        jail.set_env("X_POLL", "2.5");
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(
            l.config.synchronization.fetch_batch_size, 40,
            "empty counts as unset for :-"
        );
        assert_eq!(l.config.synchronization.poll_interval_seconds, 2.5);
        Ok(())
    });
}

#[test]
fn bad_port_from_environment_names_the_variable() {
    Jail::expect_with(|jail| {
        jail.set_env("BLOCK_MANAGER_PORT", "abc");
        assert_eq!(
            err(&LoadOptions::default()),
            "invalid BLOCK_MANAGER_PORT 'abc': expected an integer 1-65535"
        );
        jail.set_env("BLOCK_MANAGER_PORT", "70000");
        assert_eq!(
            err(&LoadOptions::default()),
            "invalid BLOCK_MANAGER_PORT '70000': expected an integer 1-65535"
        );
        Ok(())
    });
}

#[test]
fn unresolvable_host_is_refused() {
    Jail::expect_with(|jail| {
        jail.set_env("BLOCK_MANAGER_HOST", "no-such-host.invalid");
        let e = err(&LoadOptions::default());
        assert!(
            e.starts_with("invalid BLOCK_MANAGER_HOST 'no-such-host.invalid'"),
            "{e}"
        );
        Ok(())
    });
}

#[test]
fn yaml_syntax_error_names_file_line_and_column() {
    Jail::expect_with(|jail| {
        main_file(jail, "service:\n  port: 8086\n   host: [oops\n")?;
        let e = err(&LoadOptions::default());
        assert!(
            e.starts_with("invalid YAML in config/block-manager-config.yaml at line 3, column"),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
        Ok(())
    });
}

#[test]
fn wrong_type_for_a_known_key_names_key_and_file() {
    Jail::expect_with(|jail| {
        main_file(jail, "storage:\n  cache_size_mb: lots\n")?;
        let e = err(&LoadOptions::default());
        assert!(e.starts_with("invalid storage.cache_size_mb 'lots' (from config/block-manager-config.yaml): expected"), "{e}");
        Ok(())
    });
}

#[test]
fn unset_variable_in_a_required_key_names_key_file_and_variable() {
    Jail::expect_with(|jail| {
        main_file(jail, "service:\n  host: ${BM_TEST_NOT_SET}\n")?;
        let e = err(&LoadOptions::default());
        assert!(
            e.contains("service.host")
                && e.contains("BM_TEST_NOT_SET")
                && e.contains("config/block-manager-config.yaml"),
            "{e}"
        );
        // The same reference is fine when the environment supplies the key anyway.
        jail.set_env("BLOCK_MANAGER_HOST", "127.0.0.1");
        assert!(load(&LoadOptions::default()).is_ok());
        Ok(())
    });
}

#[test]
fn unset_variable_in_an_optional_key_is_empty() {
    Jail::expect_with(|jail| {
        main_file(jail, "synchronization:\n  engine_url: ${BM_TEST_ENGINE}\n")?;
        let l = load(&LoadOptions::default()).unwrap();
        assert!(l.config.upstream().is_none());
        Ok(())
    });
}

#[test]
fn a_named_config_file_that_does_not_exist_is_an_error() {
    Jail::expect_with(|jail| {
        jail.set_env("BLOCK_MANAGER_CONFIG", "nope.yaml");
        assert_eq!(
            err(&LoadOptions::default()),
            "invalid BLOCK_MANAGER_CONFIG 'nope.yaml': no such file"
        );
        Ok(())
    });
}

#[test]
fn unknown_keys_of_our_sections_warn_and_foreign_sections_are_accepted() {
    Jail::expect_with(|jail| {
        main_file(jail, "service:\n  colour: blue\nsomething_else:\n  x: 1\n")?;
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(l.warnings[0].contains("service.colour"));
        Ok(())
    });
}

#[test]
fn invalid_upstream_url_and_log_level_are_refused() {
    Jail::expect_with(|jail| {
        jail.set_env("BLOCKCHAIN_ENGINE_URL", "engine:8084");
        assert!(
            err(&LoadOptions::default()).starts_with("invalid BLOCKCHAIN_ENGINE_URL 'engine:8084'")
        );
        jail.set_env("BLOCKCHAIN_ENGINE_URL", "");
        jail.set_env("LOG_LEVEL", "LOUD");
        assert!(err(&LoadOptions::default()).starts_with("invalid LOG_LEVEL 'LOUD'"));
        Ok(())
    });
}

#[test]
fn errors_file_severity_and_messages_reach_the_catalog() {
    Jail::expect_with(|jail| {
        copy_repo_config(jail);
        let l = load(&LoadOptions::default()).unwrap();
        let cat = block_manager::error::Catalog::from_config(&l.config);
        assert_eq!(cat.severity("ST_001"), "critical");
        assert_eq!(cat.severity("RATE_001"), "warning");
        assert_eq!(cat.message("VAL_003"), "Merkle root invalid");
        Ok(())
    });
}

#[test]
fn text_keys_keep_values_that_look_like_numbers() {
    Jail::expect_with(|jail| {
        jail.set_env("BLOCK_MANAGER_API_KEY", "0042");
        jail.set_env("BLOCK_STORAGE_PATH", "2024");
        jail.set_env("BLOCK_MANAGER_URL", "http://x/a}b");
        main_file(jail, "security:\n  read_api_key: ${READ_KEY_VAR}\n")?;
        jail.set_env("READ_KEY_VAR", "true");
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(l.config.security.api_key.get(), Some("0042"));
        assert_eq!(l.config.security.read_api_key.get(), Some("true"));
        assert_eq!(l.config.storage.blocks_path, "2024");
        assert_eq!(l.config.service.url, "http://x/a}b");
        Ok(())
    });
}

#[test]
fn empty_variables_count_as_unset_and_lists_can_come_from_the_environment() {
    Jail::expect_with(|jail| {
        copy_repo_config(jail);
        jail.set_env("BLOCK_MANAGER_PORT", "");
        jail.set_env("LOG_LEVEL", "");
        jail.set_env(
            "BLOCK_MANAGER__CORS__ALLOWED_ORIGINS",
            "[\"http://a\", \"http://b\"]",
        );
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(l.config.service.port, 8086);
        assert_eq!(l.config.logging.level, "INFO");
        assert_eq!(l.config.cors.allowed_origins, ["http://a", "http://b"]);
        Ok(())
    });
}

#[test]
fn errors_name_the_flag_and_never_echo_a_secret() {
    Jail::expect_with(|jail| {
        let e = err(&LoadOptions {
            config_path: Some("nope.yaml".into()),
            ..Default::default()
        });
        assert_eq!(e, "invalid --config 'nope.yaml': no such file");
        main_file(jail, "security:\n  api_key: [not, text]\n")?;
        let e = err(&LoadOptions::default());
        assert!(e.contains("security.api_key") && !e.contains("not"), "{e}");
        Ok(())
    });
}

#[test]
fn reorg_damping_settings_load_and_bad_ones_name_their_key() {
    Jail::expect_with(|jail| {
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(l.config.synchronization.max_reorgs_per_window, 5);
        assert_eq!(l.config.synchronization.reorg_window_seconds, 600.0);
        main_file(
            jail,
            "synchronization:\n  max_reorgs_per_window: 2\n  reorg_window_seconds: 60\n",
        )?;
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(l.config.synchronization.max_reorgs_per_window, 2);
        assert_eq!(l.config.synchronization.reorg_window_seconds, 60.0);
        main_file(jail, "synchronization:\n  max_reorgs_per_window: 0\n")?;
        let e = err(&LoadOptions::default());
        assert!(e.contains("synchronization.max_reorgs_per_window"), "{e}");
        main_file(jail, "synchronization:\n  reorg_window_seconds: -1\n")?;
        let e = err(&LoadOptions::default());
        assert!(e.contains("synchronization.reorg_window_seconds"), "{e}");
        Ok(())
    });
}

#[test]
fn event_stream_bounds_are_checked_and_name_their_key() {
    Jail::expect_with(|jail| {
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(l.config.api.max_event_streams, 256);
        assert_eq!(l.config.api.event_keepalive_seconds, 15.0);
        jail.set_env("BLOCK_MANAGER__API__MAX_EVENT_STREAMS", "0");
        let e = err(&LoadOptions::default());
        assert_eq!(
            e,
            "invalid BLOCK_MANAGER__API__MAX_EVENT_STREAMS '0': expected 1-65536"
        );
        jail.set_env("BLOCK_MANAGER__API__MAX_EVENT_STREAMS", "8");
        jail.set_env("BLOCK_MANAGER__API__EVENT_KEEPALIVE_SECONDS", "0");
        let e = err(&LoadOptions::default());
        assert!(
            e.starts_with("invalid BLOCK_MANAGER__API__EVENT_KEEPALIVE_SECONDS '0'"),
            "{e}"
        );
        jail.set_env("BLOCK_MANAGER__API__EVENT_KEEPALIVE_SECONDS", "0.5");
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(l.config.api.max_event_streams, 8);
        assert_eq!(l.config.api.event_keepalive_seconds, 0.5);
        assert_eq!(l.config.synchronization.push_fallback_poll_seconds, 30.0);
        jail.set_env(
            "BLOCK_MANAGER__SYNCHRONIZATION__PUSH_FALLBACK_POLL_SECONDS",
            "-1",
        );
        let e = err(&LoadOptions::default());
        assert!(
            e.starts_with(
                "invalid BLOCK_MANAGER__SYNCHRONIZATION__PUSH_FALLBACK_POLL_SECONDS '-1'"
            ),
            "{e}"
        );
        Ok(())
    });
}

fn retry_value(l: &block_manager::config::Loaded, key: &str) -> serde_json::Value {
    serde_json::to_value(&l.config).unwrap()["error_handling"]["retry"][key].clone()
}

#[test]
fn lucid_max_requests_wins_over_our_requests_with_one_warning() {
    Jail::expect_with(|jail| {
        main_file(jail, "rate_limits:\n  max_requests: 5\n")?;
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(l.config.rate_limits.requests, 5);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        main_file(jail, "rate_limits:\n  requests: 7\n  max_requests: 5\n")?;
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(l.config.rate_limits.requests, 5);
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(
            l.warnings[0].contains("rate_limits.max_requests wins"),
            "{:?}",
            l.warnings
        );
        Ok(())
    });
}

#[test]
fn older_retry_names_are_aliases_and_lucid_names_win_from_any_layer() {
    Jail::expect_with(|jail| {
        std::fs::create_dir_all(jail.directory().join("config")).unwrap();
        main_file(jail, "service:\n  name: bm\n")?;
        jail.create_file(
            "config/block-manager-errors.yaml",
            "error_handling:\n  retry:\n    max_attempts: 4\n    initial_delay_seconds: 0.25\n    max_delay_seconds: 9\n    exponential_base: 3\n",
        )?;
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(
            retry_value(&l, "max_retries"),
            3,
            "attempts include the first try"
        );
        assert_eq!(retry_value(&l, "retry_delay_seconds"), 0.25);
        assert_eq!(retry_value(&l, "max_backoff_seconds"), 9.0);
        assert_eq!(retry_value(&l, "backoff_multiplier"), 3.0);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        jail.set_env("BLOCK_MANAGER__ERROR_HANDLING__RETRY__MAX_RETRIES", "1");
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(retry_value(&l, "max_retries"), 1);
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(l.warnings[0].contains("error_handling.retry.max_retries wins"));
        Ok(())
    });
}

#[test]
fn engine_url_wins_over_the_dependencies_url_with_one_warning_when_they_differ() {
    Jail::expect_with(|jail| {
        main_file(
            jail,
            "dependencies:\n  blockchain_engine_url: http://engine:8084\n",
        )?;
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(l.config.upstream(), Some("http://engine:8084"));
        main_file(
            jail,
            "dependencies:\n  blockchain_engine_url: http://engine:8084\nsynchronization:\n  engine_url: http://other:9000\n",
        )?;
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(l.config.upstream(), Some("http://other:9000"));
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        Ok(())
    });
}

#[test]
fn durations_and_sizes_that_cannot_be_held_are_refused_naming_variable_and_why() {
    for (var, value, why) in [
        (
            "BLOCK_MANAGER__ERROR_HANDLING__RETRY__INITIAL_DELAY_SECONDS",
            "1e20",
            "at most 31536000",
        ),
        (
            "BLOCK_MANAGER__ERROR_HANDLING__RETRY__RETRY_DELAY_SECONDS",
            "-1",
            "≥ 0",
        ),
        (
            "BLOCK_MANAGER__SERVICE__SHUTDOWN_GRACE_SECONDS",
            "1e20",
            "at most",
        ),
        (
            "BLOCK_MANAGER__ERROR_HANDLING__RETRY__MAX_DELAY_SECONDS",
            "1e300",
            "at most",
        ),
        (
            "BLOCK_MANAGER__ERROR_HANDLING__BLOCKCHAIN_ENGINE__CIRCUIT_BREAKER__RECOVERY_TIMEOUT_SECONDS",
            "1e20",
            "at most",
        ),
        (
            "BLOCK_MANAGER__ERROR_HANDLING__SYNCHRONIZATION__SYNC_BACKOFF_SECONDS",
            "1e20",
            "at most",
        ),
        (
            "BLOCK_MANAGER__RATE_LIMITS__WINDOW_SECONDS",
            "99999999999",
            "at most",
        ),
        (
            "BLOCK_MANAGER__CHAIN__MAX_FUTURE_SKEW_SECONDS",
            "99999999999",
            "at most",
        ),
        (
            "BLOCK_MANAGER__SYNCHRONIZATION__POLL_INTERVAL_SECONDS",
            "0",
            "> 0",
        ),
        (
            "BLOCK_MANAGER__ERROR_HANDLING__RETRY__BACKOFF_MULTIPLIER",
            "1e300",
            "1 to 1000",
        ),
        (
            "BLOCK_MANAGER__ERROR_HANDLING__RETRY__MAX_RETRIES",
            "100000",
            "at most",
        ),
        ("BLOCK_MANAGER__API__MAX_BODY_BYTES", "0", "expected 1 to"),
        (
            "BLOCK_MANAGER__STORAGE__CACHE_SIZE_MB",
            "99999999999999",
            "expected 1 to",
        ),
    ] {
        Jail::expect_with(|jail| {
            jail.set_env(var, value);
            let e = err(&LoadOptions::default());
            assert!(e.contains(var) && e.contains(why), "{var}={value}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
            Ok(())
        });
    }
}

/// `block-manager <args>` with only the test environment and `env`.
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_block-manager"))
        .current_dir(dir.path())
        .env_clear()
        .envs(env.iter().copied())
        .env("BLOCK_MANAGER_HOST", "127.0.0.1")
        .env("BLOCK_MANAGER_PORT", "0")
        .args(args)
        .output()
        .expect("binary runs");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ),
    )
}

#[test]
fn config_check_and_serve_refuse_1e20_seconds_with_exit_2_and_one_line() {
    for var in [
        "BLOCK_MANAGER__ERROR_HANDLING__RETRY__INITIAL_DELAY_SECONDS",
        "BLOCK_MANAGER__SERVICE__SHUTDOWN_GRACE_SECONDS",
    ] {
        for args in [&["config", "check"][..], &["serve"][..]] {
            let (code, out) = run_binary(args, &[(var, "1e20")]);
            assert_eq!(code, Some(2), "{args:?} {var}: {out}");
            assert_eq!(out.lines().count(), 1, "{args:?} {var}: {out}");
            assert!(out.contains(var), "{out}");
        }
    }
}

#[test]
fn a_refused_url_is_echoed_without_its_credentials_or_query() {
    Jail::expect_with(|jail| {
        jail.set_env(
            "BLOCKCHAIN_ENGINE_URL",
            "ftp://bob:hunter2@engine:8084/api?token=abc",
        );
        let e = err(&LoadOptions::default());
        assert!(e.contains("BLOCKCHAIN_ENGINE_URL"), "{e}");
        assert!(!e.contains("hunter2") && !e.contains("abc"), "{e}");
        Ok(())
    });
}

#[test]
fn optional_numbers_are_typed_from_variables_and_substitutions() {
    Jail::expect_with(|jail| {
        std::fs::create_dir_all(jail.directory().join("config")).unwrap();
        main_file(jail, "service:\n  name: bm\n")?;
        jail.create_file(
            "config/block-manager-errors.yaml",
            "error_handling:\n  synchronization:\n    sync_backoff_seconds: ${SYNC_BACKOFF:-2.5}\n",
        )?;
        jail.set_env(
            "BLOCK_MANAGER__ERROR_HANDLING__BLOCKCHAIN_ENGINE__MAX_RETRIES",
            "4",
        );
        let l = load(&LoadOptions::default()).unwrap();
        let e = &l.config.error_handling;
        assert_eq!(e.blockchain_engine.max_retries, Some(4));
        assert_eq!(e.synchronization.sync_backoff_seconds, Some(2.5));
        Ok(())
    });
}

#[test]
fn a_bad_value_under_a_lucid_name_is_reported_under_that_name() {
    Jail::expect_with(|jail| {
        main_file(jail, "rate_limits:\n  max_requests: 0\n")?;
        let e = err(&LoadOptions::default());
        assert!(
            e.starts_with(
                "invalid rate_limits.max_requests '0' (from config/block-manager-config.yaml)"
            ),
            "{e}"
        );
        std::fs::create_dir_all(jail.directory().join("config")).unwrap();
        main_file(jail, "service:\n  name: bm\n")?;
        jail.create_file(
            "config/block-manager-errors.yaml",
            "error_handling:\n  retry:\n    max_attempts: 5000\n",
        )?;
        let e = err(&LoadOptions::default());
        assert!(
            e.starts_with("invalid error_handling.retry.max_attempts '5000'"),
            "{e}"
        );
        Ok(())
    });
}

#[test]
fn connection_bounds_refuse_unrepresentable_timeouts_and_a_zero_cap() {
    Jail::expect_with(|jail| {
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(l.config.api.header_timeout_seconds, 10.0);
        assert_eq!(l.config.api.idle_timeout_seconds, 60.0);
        assert_eq!(l.config.api.max_connections, 1024);
        let cases = [
            (
                "BLOCK_MANAGER__API__HEADER_TIMEOUT_SECONDS",
                "0",
                "seconds must be > 0",
            ),
            (
                "BLOCK_MANAGER__API__HEADER_TIMEOUT_SECONDS",
                "1e20",
                "seconds must be at most 31536000 (one year)",
            ),
            (
                "BLOCK_MANAGER__API__IDLE_TIMEOUT_SECONDS",
                "-1",
                "seconds must be ≥ 0",
            ),
            (
                "BLOCK_MANAGER__API__MAX_CONNECTIONS",
                "0",
                "expected 1-1000000",
            ),
        ];
        for (var, value, why) in cases {
            jail.clear_env();
            jail.set_env(var, value);
            let e = err(&LoadOptions::default());
            assert!(e.starts_with(&format!("invalid {var} '")), "{e}");
            assert!(e.ends_with(&format!("': {why}")), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        jail.clear_env();
        main_file(jail, "api:\n  max_connections: 0\n")?;
        let e = err(&LoadOptions::default());
        assert!(
            e.starts_with("invalid api.max_connections '0' (from "),
            "{e}"
        );
        Ok(())
    });
}

// ---- PostgreSQL engine settings (spec §12) ----------------------------------------------

use block_manager::config::StorageBackend;

#[test]
fn postgres_settings_have_their_defaults_and_the_embedded_engine_is_the_default() {
    Jail::expect_with(|_| {
        let c = load(&LoadOptions::default()).unwrap().config;
        let p = &c.storage.postgres;
        assert_eq!(c.storage.backend, None);
        assert_eq!(c.storage.engine(), StorageBackend::Embedded);
        assert_eq!(p.url, None);
        assert!(p.read_urls.is_empty());
        assert_eq!(p.pool_size, 8);
        assert_eq!(p.connect_timeout_seconds, 5.0);
        assert_eq!(p.statement_timeout_seconds, 10.0);
        assert_eq!(p.lock_timeout_seconds, 2.0);
        assert_eq!(p.replay_wait_ms, 20);
        assert_eq!(p.cache_mb, 64);
        Ok(())
    });
}

#[test]
fn database_variables_reach_their_keys_and_a_read_url_list_is_split_at_commas() {
    Jail::expect_with(|jail| {
        jail.set_env(
            "BLOCK_MANAGER_DATABASE_URL",
            "postgres://bm:pw@db.example/chain",
        );
        jail.set_env(
            "BLOCK_MANAGER_DATABASE_READ_URLS",
            "postgres://bm:pw@standby-1/chain, postgres://bm:pw@standby-2/chain,",
        );
        jail.set_env("BLOCK_MANAGER__STORAGE__POSTGRES__POOL_SIZE", "16");
        jail.set_env("BLOCK_MANAGER__STORAGE__POSTGRES__REPLAY_WAIT_MS", "0");
        let c = load(&LoadOptions::default()).unwrap().config;
        assert_eq!(
            c.storage.engine(),
            StorageBackend::Postgres,
            "a URL selects postgres"
        );
        let p = &c.storage.postgres;
        assert_eq!(p.url.as_deref(), Some("postgres://bm:pw@db.example/chain"));
        assert_eq!(
            p.read_urls,
            [
                "postgres://bm:pw@standby-1/chain",
                "postgres://bm:pw@standby-2/chain"
            ]
        );
        assert_eq!((p.pool_size, p.replay_wait_ms), (16, 0));
        assert!(
            !format!("{c:?}").contains(":pw@"),
            "Debug never prints a password"
        );

        jail.set_env("BLOCK_STORAGE_BACKEND", "postgres");
        let c = load(&LoadOptions::default()).unwrap().config;
        assert_eq!(c.storage.backend, Some(StorageBackend::Postgres));
        Ok(())
    });
}

#[test]
fn the_file_form_of_read_urls_is_a_list_and_an_unset_substitution_is_unset() {
    Jail::expect_with(|jail| {
        main_file(
            jail,
            "storage:\n  backend: ${BLOCK_STORAGE_BACKEND:-}\n  postgres:\n    url: ${PRIMARY:-postgres://bm@127.0.0.1:6000/chain}\n    read_urls:\n      - postgres://bm@127.0.0.1:6001/chain\n      - postgres://bm@127.0.0.1:6002/chain\n    cache_mb: 0\n",
        )?;
        let l = load(&LoadOptions::default()).unwrap();
        let p = &l.config.storage.postgres;
        assert_eq!(l.config.storage.backend, None, "an empty backend is unset");
        assert_eq!(l.config.storage.engine(), StorageBackend::Postgres);
        assert_eq!(p.read_urls.len(), 2);
        assert_eq!(p.cache_mb, 0, "0 turns the cache off");
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);

        main_file(
            jail,
            "storage:\n  backend: embedded\n  postgres:\n    url: ${BLOCK_MANAGER_DATABASE_URL}\n",
        )?;
        let c = load(&LoadOptions::default()).unwrap().config;
        assert_eq!(
            c.storage.postgres.url, None,
            "an unset ${{VAR}} leaves the URL unset"
        );
        assert_eq!(c.storage.engine(), StorageBackend::Embedded);
        Ok(())
    });
}

#[test]
fn a_set_database_url_changes_nothing_since_lucid_env_files_hold_mongodb_there() {
    Jail::expect_with(|jail| {
        copy_repo_config(jail);
        let before = serde_json::to_value(load(&LoadOptions::default()).unwrap().config).unwrap();
        jail.set_env(
            "DATABASE_URL",
            "mongodb://lucid:mongo-secret@lucid-mongodb:27017/lucid?authSource=admin",
        );
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(serde_json::to_value(&l.config).unwrap(), before);
        assert_eq!(l.config.storage.engine(), StorageBackend::Embedded);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        // Even a PostgreSQL URL there is not ours: only BLOCK_MANAGER_DATABASE_URL is.
        jail.set_env("DATABASE_URL", "postgres://bm:pw@db.example/chain");
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(serde_json::to_value(&l.config).unwrap(), before);
        let notice = l
            .notices
            .iter()
            .find(|n| n.contains("DATABASE_URL"))
            .expect("one info line says DATABASE_URL is ignored");
        assert!(notice.contains("BLOCK_MANAGER_DATABASE_URL"), "{notice}");
        assert!(!notice.contains("pw"), "{notice}");
        Ok(())
    });
}

#[test]
fn a_bad_database_url_names_its_key_and_source_and_never_the_password() {
    Jail::expect_with(|jail| {
        jail.set_env(
            "BLOCK_MANAGER_DATABASE_URL",
            "postgres://bm:Hunter2@db.example/chain?sslmode=prefer",
        );
        let e = err(&LoadOptions::default());
        assert!(e.starts_with("invalid BLOCK_MANAGER_DATABASE_URL '"), "{e}");
        assert!(e.contains("sslmode=prefer is refused"), "{e}");
        assert!(!e.contains("Hunter2"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");

        jail.clear_env();
        main_file(
            jail,
            "storage:\n  postgres:\n    url: postgres://bm:Hunter2@db.example/chain\n    read_urls:\n      - postgres://bm:Hunter2@standby-1/chain\n      - postgres://bm:Hunter2@standby-2/chain?sslmode=verify-ca\n",
        )?;
        let e = err(&LoadOptions::default());
        assert!(
            e.starts_with("invalid storage.postgres.read_urls[1] 'postgres://***@standby-2/chain"),
            "{e}"
        );
        assert!(e.contains("(from config/block-manager-config.yaml)"), "{e}");
        assert!(e.contains("verify-ca"), "{e}");
        assert!(!e.contains("Hunter2"), "{e}");

        jail.set_env(
            "BLOCK_MANAGER_DATABASE_READ_URLS",
            "postgres://bm:Hunter2@standby-1/chain,postgres://bm:Hunter2/x@standby-2/chain",
        );
        let e = err(&LoadOptions::default());
        assert!(
            e.starts_with(
                "invalid BLOCK_MANAGER_DATABASE_READ_URLS (storage.postgres.read_urls[1]) '"
            ),
            "{e}"
        );
        assert!(!e.contains("Hunter2"), "{e}");

        main_file(
            jail,
            "storage:\n  postgres:\n    url: postgres://bm:Hunter2@db.example\n",
        )?;
        jail.clear_env();
        let e = err(&LoadOptions::default());
        assert!(
            e.starts_with("invalid storage.postgres.url 'postgres://"),
            "{e}"
        );
        assert!(e.contains("no database"), "{e}");
        assert!(!e.contains("Hunter2"), "{e}");
        Ok(())
    });
}

#[test]
fn engine_conflicts_stop_start_up_with_exit_2_and_one_line_naming_key_and_source() {
    let url = "postgres://bm:Hunter2@db.example/chain";
    let cases: [(&[(&str, &str)], &str); 6] = [
        (
            &[
                ("BLOCK_STORAGE_BACKEND", "embedded"),
                ("BLOCK_MANAGER_DATABASE_URL", url),
            ],
            "invalid BLOCK_STORAGE_BACKEND 'embedded': conflicts with storage.postgres.url (from BLOCK_MANAGER_DATABASE_URL)",
        ),
        (
            &[("BLOCK_STORAGE_BACKEND", "postgres")],
            "invalid BLOCK_STORAGE_BACKEND 'postgres': the postgres engine needs storage.postgres.url",
        ),
        (
            &[("BLOCK_MANAGER_DATABASE_READ_URLS", url)],
            "invalid BLOCK_MANAGER_DATABASE_READ_URLS (storage.postgres.read_urls) '",
        ),
        (
            &[("BLOCK_STORAGE_BACKEND", "sqlite")],
            "invalid BLOCK_STORAGE_BACKEND 'sqlite'",
        ),
        (
            &[(
                "BLOCK_MANAGER_DATABASE_URL",
                "postgres://bm:Hunter2@db.example/chain?sslmode=allow",
            )],
            "invalid BLOCK_MANAGER_DATABASE_URL 'postgres://***@db.example/chain?***': sslmode=allow is refused",
        ),
        (
            &[
                ("BLOCK_MANAGER_DATABASE_URL", url),
                (
                    "BLOCK_MANAGER_DATABASE_READ_URLS",
                    "postgres://bm:Hunter2@standby/chain,postgres://bm:Hunter2@standby/chain?sslmode=prefer",
                ),
            ],
            "invalid BLOCK_MANAGER_DATABASE_READ_URLS (storage.postgres.read_urls[1]) 'postgres://***@standby/chain?***': sslmode=prefer is refused",
        ),
    ];
    for (env, start) in cases {
        for args in [&["config", "check"][..], &["serve"][..]] {
            let (code, out) = run_binary(args, env);
            assert_eq!(code, Some(2), "{args:?} {env:?}: {out}");
            assert_eq!(out.lines().count(), 1, "{args:?} {env:?}: {out}");
            assert!(out.contains(start), "{args:?} {env:?}: {out}");
            assert!(!out.contains("Hunter2"), "{out}");
        }
    }
    // From a file, the key and the file are named.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bm.yaml");
    std::fs::write(
        &file,
        format!("storage:\n  backend: embedded\n  postgres:\n    url: {url}\n"),
    )
    .unwrap();
    let (code, out) = run_binary(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "invalid storage.backend 'embedded' (from {}): conflicts with storage.postgres.url (from {})",
            file.display(),
            file.display()
        )),
        "{out}"
    );
}

#[test]
fn postgres_bounds_are_checked_and_name_their_key() {
    let cases = [
        ("POOL_SIZE", "0", "expected 1-256"),
        ("POOL_SIZE", "257", "expected 1-256"),
        ("CONNECT_TIMEOUT_SECONDS", "0", "seconds must be > 0"),
        (
            "CONNECT_TIMEOUT_SECONDS",
            "1e20",
            "seconds must be at most 31536000 (one year)",
        ),
        ("STATEMENT_TIMEOUT_SECONDS", "-1", "seconds must be ≥ 0"),
        (
            "STATEMENT_TIMEOUT_SECONDS",
            "0.0001",
            "expected seconds from 0.001 to 2147483",
        ),
        (
            "STATEMENT_TIMEOUT_SECONDS",
            "3000000",
            "expected seconds from 0.001 to 2147483",
        ),
        ("LOCK_TIMEOUT_SECONDS", "0", "seconds must be > 0"),
        ("REPLAY_WAIT_MS", "60001", "expected 0-60000"),
        ("CACHE_MB", "4097", "expected 0-4096"),
    ];
    for (key, value, why) in cases {
        Jail::expect_with(|jail| {
            let var = format!("BLOCK_MANAGER__STORAGE__POSTGRES__{key}");
            jail.set_env(&var, value);
            let e = err(&LoadOptions::default());
            assert!(
                e.starts_with(&format!("invalid {var} '")),
                "{var}={value}: {e}"
            );
            assert!(e.ends_with(why), "{var}={value}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
            Ok(())
        });
    }
}

#[test]
fn config_show_and_check_never_print_a_database_password() {
    let env = [
        (
            "BLOCK_MANAGER_DATABASE_URL",
            "postgres://bm:Pw1%2Fqx@db.example:5433/chain?sslmode=require",
        ),
        (
            "BLOCK_MANAGER_DATABASE_READ_URLS",
            "postgres://bm:Pw2qx@10.0.0.7/chain?sslmode=disable,postgres://bm:Pw3qx@[2001:db8::7]/chain",
        ),
    ];
    let (code, out) = run_binary(&["config", "show"], &env);
    assert_eq!(code, Some(0), "{out}");
    for secret in ["Pw1", "Pw2", "Pw3", "qx"] {
        assert!(!out.contains(secret), "{secret} shown: {out}");
    }
    assert!(
        out.contains(
            "storage.postgres.url = \"postgres://bm:***@db.example:5433/chain?sslmode=require\"    # BLOCK_MANAGER_DATABASE_URL"
        ),
        "{out}"
    );
    assert!(
        out.contains("postgres://bm:***@10.0.0.7:5432/chain?sslmode=disable"),
        "{out}"
    );
    assert!(
        out.contains("postgres://bm:***@[2001:db8::7]:5432/chain"),
        "{out}"
    );
    assert!(out.contains("storage.backend = null"), "{out}");

    let (code, out) = run_binary(&["config", "check"], &env);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("qx") && !out.contains("Pw"), "{out}");
    // Cleartext to another host is allowed (the operator asked) but warned about.
    assert!(
        out.contains("warning: storage.postgres.read_urls[0]") && out.contains("cleartext"),
        "{out}"
    );
}

#[test]
fn lucid_files_with_postgres_settings_report_none_of_them_as_unused_or_unknown() {
    Jail::expect_with(|jail| {
        copy_repo_config(jail);
        let main =
            std::fs::read_to_string(jail.directory().join("config/block-manager-config.yaml"))
                .unwrap();
        let main = main.replacen(
            "storage:\n",
            "storage:\n  backend: ${BLOCK_STORAGE_BACKEND:-postgres}\n  postgres:\n    url: ${BLOCK_MANAGER_DATABASE_URL:-postgres://bm@127.0.0.1/chain}\n    read_urls: [\"postgres://bm@127.0.0.1:5433/chain\"]\n    pool_size: 4\n    connect_timeout_seconds: 3\n    statement_timeout_seconds: 5\n    lock_timeout_seconds: 1\n    replay_wait_ms: 10\n    cache_mb: 32\n",
            1,
        );
        jail.create_file("config/block-manager-config.yaml", &main)?;
        let l = load(&LoadOptions::default()).unwrap();
        assert_eq!(l.config.storage.engine(), StorageBackend::Postgres);
        assert_eq!(l.config.storage.postgres.pool_size, 4);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert!(
            !l.notices.iter().any(|n| n.contains("storage.")),
            "{:?}",
            l.notices
        );
        Ok(())
    });
}

#[test]
fn lucid_fixture_files_with_the_database_variables_name_no_postgres_key_as_unused() {
    for main in ["block-manager-config.yaml", "block-manager-config.json"] {
        Jail::expect_with(|jail| {
            let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lucid");
            std::fs::create_dir_all(jail.directory().join("config")).unwrap();
            for f in [
                main,
                "block-manager-errors.yaml",
                "block-manager-logging.yaml",
            ] {
                std::fs::copy(
                    format!("{fixtures}/{f}"),
                    jail.directory().join("config").join(f),
                )
                .unwrap();
            }
            jail.set_env("BLOCK_MANAGER_CONFIG", format!("config/{main}"));
            jail.set_env("BLOCK_STORAGE_BACKEND", "postgres");
            jail.set_env(
                "BLOCK_MANAGER_DATABASE_URL",
                "postgres://bm:pw@127.0.0.1/chain",
            );
            jail.set_env(
                "BLOCK_MANAGER_DATABASE_READ_URLS",
                "postgres://bm:pw@127.0.0.1:5433/chain",
            );
            jail.set_env("BLOCK_MANAGER__STORAGE__POSTGRES__CACHE_MB", "16");
            jail.set_env(
                "DATABASE_URL",
                "mongodb://lucid:pw@lucid-mongodb:27017/lucid",
            );
            let l = load(&LoadOptions::default()).unwrap();
            assert_eq!(l.config.storage.engine(), StorageBackend::Postgres);
            assert_eq!(l.config.storage.postgres.cache_mb, 16);
            for line in l.warnings.iter().chain(&l.notices) {
                assert!(
                    !line.contains("storage.postgres") && !line.contains("storage.backend"),
                    "{main}: {line}"
                );
            }
            Ok(())
        });
    }
}
