//! Redaction of what `config show`, start-up errors and logs print: values of keys that
//! hold credentials, and the user information and query string of URLs.

/// What a redacted value is shown as.
pub const REDACTED: &str = "<redacted>";

/// Whether a key names a credential: `*password*`, `*secret*`, `*token*`, `*api_key*`, or
/// any `*_key` (whose value is then redacted when it is text).
pub fn is_credential_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "api_key"]
        .iter()
        .any(|w| k.contains(w))
        || k.ends_with("_key")
}

/// A shown value with what may be secret removed: the whole value under a credential key,
/// else the user information and query string of anything that looks like a URL.
pub fn value(leaf_key: &str, v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::String(s) if s.is_empty() => v.to_string(),
        Value::String(_) if is_credential_key(leaf_key) => format!("\"{REDACTED}\""),
        Value::Number(_) | Value::Bool(_)
            if is_credential_key(leaf_key) && !leaf_key.ends_with("_key") =>
        {
            format!("\"{REDACTED}\"")
        }
        Value::String(s) => Value::String(url(s)).to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| value(leaf_key, i))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// `scheme://user:secret@host/path?query` → `scheme://<redacted>@host/path?<redacted>`:
/// connection URLs of other services often carry credentials in either place. Also applied
/// to every URL inside a longer text (a comma-separated list of hosts, say).
pub fn url(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        let scheme_start = head[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        if super::database_url::is_database_url(&head[scheme_start..]) {
            // A database URL's password may hold any character when it was not
            // percent-encoded: mask by its own rules rather than split it here.
            let end = database_url_end(tail);
            out.push_str(&head[..scheme_start]);
            out.push_str(&super::database_url::shown(
                &rest[scheme_start..head.len() + end],
            ));
            rest = &tail[end..];
            continue;
        }
        out.push_str(head);
        // The URL runs to the next whitespace or comma.
        let end = tail
            .find(|c: char| c.is_whitespace() || c == ',')
            .unwrap_or(tail.len());
        let (url, after) = tail.split_at(end);
        let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
        let (authority, path) = url.split_at(authority_end);
        match authority.rfind('@') {
            Some(i) => {
                out.push_str(REDACTED);
                out.push_str(&authority[i..]);
            }
            None => out.push_str(authority),
        }
        match path.find('?') {
            Some(q) => {
                out.push_str(&path[..=q]);
                out.push_str(REDACTED);
            }
            None => out.push_str(path),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Where a database URL that starts `tail` ends: at whitespace, or at a comma that starts
/// the next database URL of a list.
fn database_url_end(tail: &str) -> usize {
    let end = tail.find(char::is_whitespace).unwrap_or(tail.len());
    tail[..end]
        .match_indices(',')
        .map(|(i, _)| i)
        .find(|&i| super::database_url::is_database_url(&tail[i + 1..end]))
        .unwrap_or(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credential_keys_are_redacted_wherever_they_sit() {
        for key in [
            "password",
            "admin_password",
            "client_secret",
            "auth_token",
            "tokens",
            "engine_api_key",
            "signing_key",
        ] {
            assert_eq!(value(key, &json!("hunter2")), "\"<redacted>\"", "{key}");
        }
        assert_eq!(value("password", &json!(12345)), "\"<redacted>\"");
        assert_eq!(value("name", &json!("block-manager")), "\"block-manager\"");
        assert_eq!(
            value("api_key", &json!("")),
            "\"\"",
            "unset stays visibly unset"
        );
        let list = value("list", &json!(["redis://:pw@h:1", "plain"]));
        assert!(!list.contains("pw@") && list.contains("plain"), "{list}");
    }

    #[test]
    fn url_credentials_and_query_strings_are_redacted() {
        assert_eq!(
            url("mongodb://lucid:pass@mongo:27017/lucid?authSource=admin"),
            "mongodb://<redacted>@mongo:27017/lucid?<redacted>"
        );
        assert_eq!(url("https://TOKEN@host/x"), "https://<redacted>@host/x");
        assert_eq!(
            url("http://host:8084/api?key=abc"),
            "http://host:8084/api?<redacted>"
        );
        assert_eq!(
            url("http://block-manager:8086"),
            "http://block-manager:8086"
        );
        assert_eq!(
            url("redis://:a@r1:1, redis://:b@r2:2"),
            "redis://<redacted>@r1:1, redis://<redacted>@r2:2"
        );
        assert_eq!(url("no url here"), "no url here");
    }

    #[test]
    fn database_url_passwords_never_show_even_when_not_percent_encoded() {
        // A password written with a raw '/', '?', '#' or ',' breaks a naive authority split.
        for raw in [
            "postgres://bm:se/cr3t@db.example:5432/chain?sslmode=require",
            "postgresql://bm:se?cr3t@db.example/chain",
            "postgres://bm:se#cr3t@db.example/chain",
            "postgres://bm:se,cr3t@db.example/chain",
            "postgres://bm:se@cr3t@db.example/chain",
        ] {
            let shown = url(raw);
            assert!(!shown.contains("cr3t"), "{raw} shown as {shown}");
            assert!(shown.contains("db.example"), "{raw} shown as {shown}");
        }
    }
}
