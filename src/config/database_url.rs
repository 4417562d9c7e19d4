//! PostgreSQL connection URLs (`postgres://user:pass@host:port/db?sslmode=...`), parsed by us
//! so every rule is ours and stated: which TLS modes exist, what a missing `sslmode` means,
//! which parameters are understood. Nothing here ever repeats a password: not in an error,
//! not in `Debug`, not in [`DatabaseUrl::redacted`].

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

/// The port PostgreSQL listens on when the URL names none.
pub const DEFAULT_PORT: u16 = 5432;

/// What a password is shown as.
const MASK: &str = "***";

/// A parsed, checked PostgreSQL connection URL.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    /// Host name or IP address (an IPv6 address without its brackets).
    pub host: String,
    /// TCP port (5432 when the URL names none).
    pub port: u16,
    /// Role to log in as (percent-decoded).
    pub user: String,
    /// Password (percent-decoded); `None` when the URL has none (or an empty one).
    pub password: Option<String>,
    /// Database name (percent-decoded).
    pub dbname: String,
    /// Transport security.
    pub tls: Tls,
    /// `application_name`, shown in `pg_stat_activity`.
    pub application_name: Option<String>,
}

/// Transport security of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// Cleartext (`sslmode=disable`).
    Disable,
    /// TLS with the certificate chain and the host name verified (`sslmode=require` or
    /// `verify-full`), against the system roots or the private CA in `root_cert`.
    Require {
        /// `sslrootcert`: a PEM file of the CA certificates to trust instead of the system's.
        root_cert: Option<PathBuf>,
    },
}

impl DatabaseUrl {
    /// Parses and checks `s`. The error says why in words and never echoes the password (nor
    /// any part of the URL that might hold it when the URL is malformed).
    pub fn parse(s: &str) -> Result<DatabaseUrl, String> {
        let s = s.trim();
        let rest = strip_scheme(s).ok_or_else(|| {
            "expected a postgres:// or postgresql:// URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)"
                .to_string()
        })?;
        if rest.contains('#') {
            return Err(
                "a '#' is not understood in a database URL (write it as %23 in a password)".into(),
            );
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, after) = rest.split_at(authority_end);
        // The last '@' ends the user information, so a password holding a raw '@' still
        // parses as the operator meant it.
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => return Err("the URL names no user (postgres://USER@HOST/DATABASE)".into()),
            Some(info) => {
                let (user, password) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                let user = decode(user).ok_or("the user name has an invalid %-escape")?;
                if user.is_empty() {
                    return Err("the URL names no user (postgres://USER@HOST/DATABASE)".into());
                }
                let password = match password {
                    Some(p) => Some(decode(p).ok_or("the password has an invalid %-escape")?),
                    None => None,
                };
                (user, password.filter(|p| !p.is_empty()))
            }
        };
        let (host, port) = host_and_port(hostport)?;
        let (path, query) = match after.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (after, None),
        };
        let dbname = decode(path.strip_prefix('/').unwrap_or(path))
            .ok_or("the database name has an invalid %-escape")?;
        if dbname.is_empty() {
            return Err("the URL names no database (postgres://USER@HOST/DATABASE)".into());
        }
        let params = Params::parse(query.unwrap_or(""))?;
        let tls = tls_for(&host, params.sslmode.as_deref(), params.sslrootcert)?;
        Ok(DatabaseUrl {
            host,
            port,
            user,
            password,
            dbname,
            tls,
            application_name: params.application_name,
        })
    }

    /// The URL with the password masked, safe for logs and `config show`:
    /// `postgres://user:***@host:port/db?sslmode=...`.
    pub fn redacted(&self) -> String {
        let mut out = format!("postgres://{}", encode(&self.user));
        if self.password.is_some() {
            out.push(':');
            out.push_str(MASK);
        }
        out.push('@');
        if self.host.contains(':') {
            out.push_str(&format!("[{}]", self.host));
        } else {
            out.push_str(&self.host);
        }
        out.push_str(&format!(":{}/{}", self.port, encode(&self.dbname)));
        match &self.tls {
            Tls::Disable => out.push_str("?sslmode=disable"),
            Tls::Require { root_cert } => {
                out.push_str("?sslmode=require");
                if let Some(path) = root_cert {
                    out.push_str("&sslrootcert=");
                    out.push_str(&encode(&path.display().to_string()));
                }
            }
        }
        if let Some(name) = &self.application_name {
            out.push_str("&application_name=");
            out.push_str(&encode(name));
        }
        out
    }

    /// Whether the host is this machine (127.0.0.0/8, ::1 or `localhost`).
    pub fn is_loopback(&self) -> bool {
        is_loopback(&self.host)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Whether `s` is written as a PostgreSQL URL (whether or not it is a valid one).
pub fn is_database_url(s: &str) -> bool {
    strip_scheme(s.trim()).is_some()
}

/// `s` as it may be shown: [`DatabaseUrl::redacted`] when it parses, else the scheme and
/// what follows the last '@' up to any query, with everything before that '@' and the whole
/// query masked (a malformed URL may hold its password anywhere there).
pub fn shown(s: &str) -> String {
    if let Ok(url) = DatabaseUrl::parse(s) {
        return url.redacted();
    }
    let s = s.trim();
    let Some(rest) = strip_scheme(s) else {
        return MASK.into();
    };
    let scheme = &s[..s.len() - rest.len()];
    let (masked, tail) = match rest.rfind('@') {
        Some(i) => (true, &rest[i + 1..]),
        None => (false, rest),
    };
    let (tail, query) = match tail.find(['?', '#']) {
        Some(q) => (&tail[..q], true),
        None => (tail, false),
    };
    let mut out = scheme.to_string();
    if masked {
        out.push_str(MASK);
        out.push('@');
    }
    out.push_str(tail);
    if query {
        out.push('?');
        out.push_str(MASK);
    }
    out
}

/// What follows `postgres://` or `postgresql://` (scheme in any letter case).
fn strip_scheme(s: &str) -> Option<&str> {
    ["postgresql://", "postgres://"].iter().find_map(|scheme| {
        s.get(..scheme.len())
            .filter(|head| head.eq_ignore_ascii_case(scheme))
            .map(|_| &s[scheme.len()..])
    })
}

fn host_and_port(hostport: &str) -> Result<(String, u16), String> {
    if hostport.contains(',') {
        return Err(
            "one host per URL: list hot standbys in storage.postgres.read_urls instead".into(),
        );
    }
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let (addr, after) = inner
            .split_once(']')
            .ok_or("an IPv6 host is missing its closing ']'")?;
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err("the bracketed host is not an IPv6 address".into());
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or("expected ':PORT' after the bracketed IPv6 host")?,
            ),
        };
        (addr.to_string(), port)
    } else {
        if hostport.matches(':').count() > 1 {
            return Err("an IPv6 host must be written in brackets ([::1]:5432)".into());
        }
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("the URL names no host (postgres://USER@HOST/DATABASE)".into());
    }
    let valid = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
    if !valid {
        return Err(
            "the host is not a host name or IP address (Unix sockets are not supported)".into(),
        );
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or("the port is not a number from 1 to 65535")?,
    };
    Ok((host, port))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip: IpAddr| ip.is_loopback())
}

/// The query parameters we understand.
#[derive(Default)]
struct Params {
    sslmode: Option<String>,
    sslrootcert: Option<PathBuf>,
    application_name: Option<String>,
}

impl Params {
    fn parse(query: &str) -> Result<Params, String> {
        let mut params = Params::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).unwrap_or_default();
            // A name is echoed only when it looks like one: in a malformed URL, what sits
            // where a name should be may be part of a password.
            let named = if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                format!("'{name}'")
            } else {
                "a query parameter".to_string()
            };
            if !pair.contains('=') {
                return Err(format!("{named} has no value (expected NAME=VALUE)"));
            }
            let value = decode(value).ok_or(format!("{named} has an invalid %-escape"))?;
            let slot = match name.as_str() {
                "sslmode" => &mut params.sslmode,
                "application_name" => &mut params.application_name,
                "sslrootcert" => {
                    if params.sslrootcert.is_some() {
                        return Err(format!("{named} is given twice"));
                    }
                    if value.is_empty() {
                        return Err(format!(
                            "{named} is empty (expected the path of a PEM file)"
                        ));
                    }
                    let path = PathBuf::from(&value);
                    if !path.is_file() {
                        return Err(format!(
                            "sslrootcert '{}' is not a readable file (expected the PEM file of the private CA)",
                            path.display()
                        ));
                    }
                    params.sslrootcert = Some(path);
                    continue;
                }
                "connect_timeout" => {
                    return Err(format!(
                        "{named} is not understood: use storage.postgres.connect_timeout_seconds"
                    ));
                }
                _ => {
                    return Err(format!(
                        "unknown parameter {named}: only sslmode, sslrootcert and application_name are understood"
                    ));
                }
            };
            if slot.is_some() {
                return Err(format!("{named} is given twice"));
            }
            *slot = Some(value);
        }
        Ok(params)
    }
}

fn tls_for(host: &str, sslmode: Option<&str>, root_cert: Option<PathBuf>) -> Result<Tls, String> {
    let mode = match sslmode {
        Some(mode) => mode,
        // No silent cleartext across a network: only this machine defaults to it.
        None if is_loopback(host) && root_cert.is_none() => "disable",
        None => "require",
    };
    match mode {
        "disable" if root_cert.is_some() => {
            Err("sslrootcert is given with sslmode=disable: a CA is used only with TLS".into())
        }
        "disable" => Ok(Tls::Disable),
        "require" | "verify-full" => Ok(Tls::Require { root_cert }),
        "prefer" | "allow" => Err(format!(
            "sslmode={mode} is refused: it falls back to cleartext silently; use require (TLS, verified) or disable (cleartext)"
        )),
        "verify-ca" => Err(
            "sslmode=verify-ca is refused: the host name is always verified; use require or verify-full"
                .into(),
        ),
        _ => Err(
            "unknown sslmode: expected disable, require or verify-full".into(),
        ),
    }
}

/// Percent-decoding into UTF-8 text; `None` for a bad escape or bytes that are not UTF-8.
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes what is not an unreserved URL character, so a shown URL parses back.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b'*') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> DatabaseUrl {
        DatabaseUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn refused(s: &str) -> String {
        match DatabaseUrl::parse(s) {
            Ok(u) => panic!("{s} accepted as {u}"),
            Err(e) => e,
        }
    }

    #[test]
    fn both_schemes_parse_into_every_part() {
        for scheme in ["postgres", "postgresql", "PostgreSQL"] {
            let u = parse(&format!(
                "{scheme}://bm:pw@db.example:6543/chain?sslmode=require&application_name=bm-1"
            ));
            assert_eq!(u.host, "db.example");
            assert_eq!(u.port, 6543);
            assert_eq!(u.user, "bm");
            assert_eq!(u.password.as_deref(), Some("pw"));
            assert_eq!(u.dbname, "chain");
            assert_eq!(u.tls, Tls::Require { root_cert: None });
            assert_eq!(u.application_name.as_deref(), Some("bm-1"));
        }
        let e = refused("mysql://bm@db/chain");
        assert!(e.contains("postgres://"), "{e}");
    }

    #[test]
    fn user_password_and_database_are_percent_decoded() {
        let u = parse("postgres://b%40m:p%2Fw%3F%23%25%20@db.example/my%20chain");
        assert_eq!(u.user, "b@m");
        assert_eq!(u.password.as_deref(), Some("p/w?#% "));
        assert_eq!(u.dbname, "my chain");
        for bad in [
            "postgres://bm:p%zz@db/chain",
            "postgres://bm:p%2@db/chain",
            "postgres://bm:p%ff@db/chain",
        ] {
            let e = refused(bad);
            assert!(e.contains("password") && !e.contains("p%"), "{bad}: {e}");
        }
        // A raw '@' in a password: the last '@' ends the user information.
        let u = parse("postgres://bm:p@ss@db.example/chain");
        assert_eq!(
            (u.password.as_deref(), u.host.as_str()),
            (Some("p@ss"), "db.example")
        );
    }

    #[test]
    fn the_port_defaults_to_5432_and_must_be_1_to_65535() {
        assert_eq!(parse("postgres://bm@db.example/chain").port, 5432);
        assert_eq!(parse("postgres://bm@db.example:1/chain").port, 1);
        for bad in [":0", ":65536", ":", ":abc"] {
            let e = refused(&format!("postgres://bm@db.example{bad}/chain"));
            assert!(e.contains("port"), "{bad}: {e}");
        }
    }

    #[test]
    fn ipv6_hosts_are_written_in_brackets() {
        let u = parse("postgres://bm@[::1]:5433/chain");
        assert_eq!((u.host.as_str(), u.port), ("::1", 5433));
        assert_eq!(u.tls, Tls::Disable, "::1 is loopback");
        let u = parse("postgres://bm@[2001:db8::7]/chain");
        assert_eq!((u.host.as_str(), u.port), ("2001:db8::7", 5432));
        assert_eq!(u.tls, Tls::Require { root_cert: None });
        assert_eq!(
            u.redacted(),
            "postgres://bm@[2001:db8::7]:5432/chain?sslmode=require"
        );
        for bad in [
            "postgres://bm@::1/chain",
            "postgres://bm@[::1/chain",
            "postgres://bm@[db.example]/chain",
            "postgres://bm@[::1]5432/chain",
        ] {
            refused(bad);
        }
    }

    #[test]
    fn sslmode_defaults_to_cleartext_only_on_loopback() {
        for host in ["127.0.0.1", "127.8.9.10", "localhost", "LOCALHOST", "[::1]"] {
            let u = parse(&format!("postgres://bm@{host}/chain"));
            assert_eq!(u.tls, Tls::Disable, "{host}");
            assert!(u.is_loopback(), "{host}");
        }
        for host in ["10.0.0.5", "db.example", "128.0.0.1", "localhost.example"] {
            let u = parse(&format!("postgres://bm@{host}/chain"));
            assert_eq!(u.tls, Tls::Require { root_cert: None }, "{host}");
            assert!(!u.is_loopback(), "{host}");
        }
    }

    #[test]
    fn sslmode_disable_require_and_verify_full_are_accepted() {
        assert_eq!(
            parse("postgres://bm@db.example/chain?sslmode=disable").tls,
            Tls::Disable,
            "the operator asked for cleartext"
        );
        assert_eq!(
            parse("postgres://bm@127.0.0.1/chain?sslmode=require").tls,
            Tls::Require { root_cert: None }
        );
        assert_eq!(
            parse("postgres://bm@db.example/chain?sslmode=verify-full").tls,
            Tls::Require { root_cert: None }
        );
    }

    #[test]
    fn prefer_allow_and_verify_ca_are_refused_with_a_reason() {
        for (mode, why) in [
            ("prefer", "cleartext"),
            ("allow", "cleartext"),
            ("verify-ca", "host name is always verified"),
        ] {
            let e = refused(&format!("postgres://bm:pw@db.example/chain?sslmode={mode}"));
            assert!(e.contains(mode) && e.contains(why), "{mode}: {e}");
        }
        let e = refused("postgres://bm@db.example/chain?sslmode=on");
        assert!(
            e.contains("expected disable, require or verify-full"),
            "{e}"
        );
    }

    #[test]
    fn sslrootcert_must_name_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let u = parse(&format!(
            "postgres://bm@db.example/chain?sslmode=verify-full&sslrootcert={}",
            ca.display()
        ));
        assert_eq!(
            u.tls,
            Tls::Require {
                root_cert: Some(ca.clone())
            }
        );
        // A private CA on a loopback host means TLS was wanted.
        let u = parse(&format!(
            "postgres://bm@127.0.0.1/chain?sslrootcert={}",
            ca.display()
        ));
        assert_eq!(
            u.tls,
            Tls::Require {
                root_cert: Some(ca.clone())
            }
        );
        let missing = dir.path().join("nope.pem");
        let e = refused(&format!(
            "postgres://bm@db.example/chain?sslrootcert={}",
            missing.display()
        ));
        assert!(e.contains("sslrootcert") && e.contains("nope.pem"), "{e}");
        let e = refused(&format!(
            "postgres://bm@db.example/chain?sslmode=disable&sslrootcert={}",
            ca.display()
        ));
        assert!(e.contains("sslmode=disable"), "{e}");
    }

    #[test]
    fn unknown_parameters_are_named_and_duplicates_refused() {
        let e = refused("postgres://bm@db.example/chain?target_session_attrs=any");
        assert!(e.contains("'target_session_attrs'"), "{e}");
        let e = refused("postgres://bm@db.example/chain?connect_timeout=3");
        assert!(e.contains("connect_timeout_seconds"), "{e}");
        let e = refused("postgres://bm@db.example/chain?sslmode=require&sslmode=disable");
        assert!(e.contains("twice"), "{e}");
        let e = refused("postgres://bm@db.example/chain?sslmode");
        assert!(e.contains("'sslmode' has no value"), "{e}");
        let e = refused("postgres://bm@db.example/chain?password=hunter2");
        assert!(e.contains("'password'") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_missing_user_host_or_database_is_refused() {
        for (url, what) in [
            ("postgres://db.example/chain", "no user"),
            ("postgres://@db.example/chain", "no user"),
            ("postgres://bm@/chain", "no host"),
            ("postgres://bm@db.example", "no database"),
            ("postgres://bm@db.example/", "no database"),
            ("postgres://bm@db.example/?sslmode=require", "no database"),
            ("postgres://bm@h1,h2/chain", "read_urls"),
            ("postgres://bm@%2Frun%2Fpg/chain", "Unix sockets"),
        ] {
            let e = refused(url);
            assert!(e.contains(what), "{url}: {e}");
        }
    }

    #[test]
    fn the_password_is_in_no_error_and_not_in_redacted_or_debug() {
        let secret = "Zq7sEcReT";
        for url in [
            format!("postgres://bm:{secret}@db.example/chain?sslmode=prefer"),
            format!("postgres://bm:{secret}@db.example/chain?sslmode=verify-ca"),
            format!("postgres://bm:{secret}@db.example/chain?bogus=1"),
            format!("postgres://bm:{secret}@db.example"),
            format!("postgres://bm:{secret}@db.example:99999/chain"),
            format!("postgres://bm:{secret}@/chain"),
            format!("postgres://bm:{secret}@[::1/chain"),
            format!("postgres://bm:{secret}%zz@db.example/chain"),
            // Malformed: the raw '/', '?' or '#' puts the password where the host would be.
            format!("postgres://bm:{secret}/x@db.example/chain"),
            format!("postgres://bm:1{secret}?x@db.example/chain"),
            format!("postgres://bm:99?{secret}@db.example/chain"),
            format!("postgres://bm:{secret}#x@db.example/chain"),
            format!("postgres://bm:{secret}@db.example/chain?sslmode={secret}"),
        ] {
            let e = refused(&url);
            assert!(!e.contains(secret), "{url}: {e}");
            let shown = shown(&url);
            assert!(!shown.contains(secret), "{url}: shown as {shown}");
        }
        let u = parse(&format!("postgres://bm:{secret}@db.example/chain"));
        assert_eq!(
            u.redacted(),
            "postgres://bm:***@db.example:5432/chain?sslmode=require"
        );
        assert!(!format!("{u:?} {u}").contains(secret));
        assert_eq!(
            shown(&format!("postgres://bm:{secret}@db.example/chain")),
            u.redacted()
        );
    }

    #[test]
    fn redacted_parses_back_to_the_same_url_but_the_password() {
        let u = parse("postgres://b%40m:pw@db.example:6000/my%20chain?application_name=a%26b");
        let back = parse(&u.redacted());
        assert_eq!(back.user, "b@m");
        assert_eq!(back.dbname, "my chain");
        assert_eq!(back.application_name.as_deref(), Some("a&b"));
        assert_eq!((back.host, back.port, back.tls), (u.host, u.port, u.tls));
        assert_eq!(back.password.as_deref(), Some(MASK));
    }
}
