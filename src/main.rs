//! The `block-manager` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    // `serve` (the default command) takes over SIGTERM and SIGINT before anything else, so a
    // signal during start-up stops it cleanly; the other commands keep the default action.
    let first = std::env::args_os().nth(1);
    let serving = first
        .as_ref()
        .is_none_or(|a| a == "serve" || a.to_string_lossy().starts_with('-'));
    if serving {
        block_manager::signals::catch_early();
    }
    block_manager::cli::main()
}
