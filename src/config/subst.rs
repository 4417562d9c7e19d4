//! `${VAR}` / `${VAR:-default}` substitution inside parsed config values.
//!
//! Substitution runs on the parsed value tree, not the raw text, so a YAML syntax error still
//! points at the operator's own line and column, and so we can tell which key held which
//! variable. A scalar that is exactly one reference is re-typed after substitution
//! (`port: ${BLOCK_MANAGER_PORT:-8086}` is the number 8086, not the string "8086").

use serde_json::Value;

/// A `${VAR}` with no default whose variable was unset or empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsetVar {
    /// Dotted key path that held the reference, e.g. `service.port`.
    pub key: String,
    /// The variable's name.
    pub var: String,
}

/// Substitutes every string in `value`, in place, reading variables through `lookup`.
/// Returns the references that resolved to nothing. Keys for which `is_text` holds keep
/// their substituted value as text (an API key `${KEY}` set to `0042` stays `"0042"`).
pub fn substitute_tree(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    is_text: &dyn Fn(&str) -> bool,
) -> Vec<UnsetVar> {
    let mut unset = Vec::new();
    walk(
        value,
        &mut String::new(),
        &Ctx { lookup, is_text },
        &mut unset,
    );
    unset
}

struct Ctx<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    is_text: &'a dyn Fn(&str) -> bool,
}

fn walk(value: &mut Value, path: &mut String, ctx: &Ctx<'_>, unset: &mut Vec<UnsetVar>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                walk(child, path, ctx, unset);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(child, path, ctx, unset);
                path.truncate(len);
            }
        }
        Value::String(text) if text.contains("${") => {
            let (out, missing, whole) = expand(text, ctx.lookup);
            unset.extend(missing.into_iter().map(|var| UnsetVar {
                key: path.clone(),
                var,
            }));
            *value = if whole && !(ctx.is_text)(path) {
                retype(out)
            } else {
                Value::String(out)
            };
        }
        _ => {}
    }
}

/// Expands references in one string. Returns the text, the variables that resolved to nothing,
/// and whether the string was exactly one reference (so its result may be re-typed).
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> (String, Vec<String>, bool) {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    let mut references = 0;
    let mut literal = false;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let inner = &rest[start + 2..start + len];
        if start > 0 {
            literal = true;
        }
        out.push_str(&rest[..start]);
        references += 1;
        // `${VAR:-default}` uses the default when VAR is unset *or empty*; `${VAR-default}` only
        // when unset (shell semantics). A bare `${VAR}` becomes empty when unset.
        let (name, default, empty_counts) = match inner.find(":-") {
            Some(i) => (&inner[..i], Some(&inner[i + 2..]), true),
            None => match inner.find('-') {
                Some(i) => (&inner[..i], Some(&inner[i + 1..]), false),
                None => (inner, None, true),
            },
        };
        let name = name.trim();
        let found = lookup(name).filter(|v| !(empty_counts && v.is_empty()));
        match (found, default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => missing.push(name.to_string()),
        }
        rest = &rest[start + len + 1..];
    }
    if !rest.is_empty() {
        literal = true;
    }
    out.push_str(rest);
    (out, missing, references == 1 && !literal)
}

/// Gives a substituted scalar the type YAML would have given the same text written literally.
pub fn retype(text: String) -> Value {
    let t = text.trim();
    match t {
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(n) = t.parse::<i64>() {
        return Value::from(n);
    }
    if let Ok(n) = t.parse::<u64>() {
        return Value::from(n);
    }
    if t.contains(['.', 'e', 'E'])
        && t.chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '.')
        && let Ok(f) = t.parse::<f64>()
        && f.is_finite()
    {
        return Value::from(f);
    }
    Value::String(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn default_applies_when_variable_is_unset() {
        let mut v = json!({"a": "${X:-30}"});
        substitute_tree(&mut v, &env(&[]), &|_| false);
        assert_eq!(v, json!({"a": 30}));
    }

    #[test]
    fn default_applies_when_variable_is_empty() {
        let mut v = json!({"a": "${X:-30}"});
        substitute_tree(&mut v, &env(&[("X", "")]), &|_| false);
        assert_eq!(v, json!({"a": 30}));
    }

    #[test]
    fn set_variable_wins_over_default_and_keeps_its_type() {
        let mut v = json!({"port": "${P:-8086}", "on": "${B:-false}", "ratio": "${R:-1.5}"});
        substitute_tree(&mut v, &env(&[("P", "9000"), ("B", "true")]), &|_| false);
        assert_eq!(v, json!({"port": 9000, "on": true, "ratio": 1.5}));
    }

    #[test]
    fn text_keys_keep_digits_as_text() {
        let mut v = json!({"key": "${K}", "port": "${P}"});
        substitute_tree(&mut v, &env(&[("K", "0042"), ("P", "0042")]), &|k| {
            k == "key"
        });
        assert_eq!(v, json!({"key": "0042", "port": 42}));
    }

    #[test]
    fn dash_without_colon_uses_default_only_when_unset() {
        let (out, _, _) = expand("${X-d}", &env(&[("X", "")]));
        assert_eq!(out, "");
        let (out, _, _) = expand("${X-d}", &env(&[]));
        assert_eq!(out, "d");
    }

    #[test]
    fn unset_bare_reference_is_empty_and_reported_with_its_key() {
        let mut v = json!({"service": {"host": "${NOPE}"}});
        let unset = substitute_tree(&mut v, &env(&[]), &|_| false);
        assert_eq!(v, json!({"service": {"host": ""}}));
        assert_eq!(
            unset,
            vec![UnsetVar {
                key: "service.host".into(),
                var: "NOPE".into()
            }]
        );
    }

    #[test]
    fn references_inside_text_stay_strings() {
        let mut v = json!({"url": "http://${H:-localhost}:${P:-8086}/x", "n": "v${N:-1}"});
        substitute_tree(&mut v, &env(&[]), &|_| false);
        assert_eq!(v, json!({"url": "http://localhost:8086/x", "n": "v1"}));
    }

    #[test]
    fn negative_and_dashed_defaults_are_kept_whole() {
        // The service we replace produced "-30" for "${X:-30}"; make sure the dash belongs to the syntax.
        let (out, _, _) = expand("${X:--30}", &env(&[]));
        assert_eq!(out, "-30");
        let (out, _, _) = expand("${X:-a-b}", &env(&[]));
        assert_eq!(out, "a-b");
    }

    #[test]
    fn unterminated_reference_is_left_as_text() {
        let (out, missing, _) = expand("abc ${X", &env(&[]));
        assert_eq!(out, "abc ${X");
        assert!(missing.is_empty());
    }

    #[test]
    fn arrays_are_substituted_with_indexed_paths() {
        let mut v = json!({"cors": {"allowed_origins": ["${O1:-http://a}", "${O2}"]}});
        let unset = substitute_tree(&mut v, &env(&[]), &|_| false);
        assert_eq!(v["cors"]["allowed_origins"][0], "http://a");
        assert_eq!(unset[0].key, "cors.allowed_origins[1]");
    }
}
