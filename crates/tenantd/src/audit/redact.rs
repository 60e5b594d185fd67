//! Request parameters as the audit log keeps them: secrets replaced,
//! long strings cut, the whole bounded.

use serde_json::{Map, Value};

/// Longest string kept whole.
const MAX_STRING: usize = 256;
/// Deepest nesting kept.
const MAX_DEPTH: usize = 6;
/// Largest params text kept; above it only the top-level keys remain.
const MAX_TEXT: usize = 4096;
const REDACTED: &str = "***";

fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    matches!(
        k.as_str(),
        "key" | "api_key" | "apikey" | "authorization" | "pepper" | "credential" | "credentials"
    ) || ["secret", "password", "token", "private"]
        .iter()
        .any(|s| k.contains(s))
}

/// An API key (`<tenant>_sk_<secret>`) or a JWT (`eyJ….….…`).
fn looks_like_credential(s: &str) -> bool {
    let s = s.trim();
    let bearer = s.strip_prefix("Bearer ").unwrap_or(s);
    s.contains("_sk_") || (bearer.starts_with("eyJ") && bearer.matches('.').count() == 2)
}

/// `url` with its userinfo (user and password) replaced by `***` and its
/// query string dropped, for
/// showing a connection URL (a tenant's dedicated database) anywhere.
pub fn without_userinfo(url: &str) -> String {
    // Connection URLs may carry a password as a query parameter too
    // (`?password=…`): the query string is dropped as well.
    let url = url.split_once('?').map_or(url, |(base, _)| base);
    match url_userinfo(url) {
        Some((scheme, rest)) => format!("{scheme}://***@{rest}"),
        None => url.to_owned(),
    }
}

/// `(scheme, rest after '@')` of a URL that carries userinfo.
fn url_userinfo(s: &str) -> Option<(String, String)> {
    let (scheme, rest) = s.split_once("://")?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some((scheme.to_owned(), rest[at + 1..].to_owned()))
}

fn clean(value: &mut Value, depth: usize) {
    match value {
        Value::Object(map) => {
            if depth >= MAX_DEPTH {
                *value = Value::String("…".to_owned());
                return;
            }
            for (key, v) in map.iter_mut() {
                if is_secret(key) && !v.is_null() {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    clean(v, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            if depth >= MAX_DEPTH {
                *value = Value::String("…".to_owned());
                return;
            }
            items.iter_mut().for_each(|v| clean(v, depth + 1));
        }
        // A credential pasted under an innocent name is still a credential.
        Value::String(s) if looks_like_credential(s) => {
            *s = REDACTED.to_owned();
        }
        // `scheme://user:password@host/…` keeps the scheme and host only.
        Value::String(s) if url_userinfo(s).is_some() => {
            if let Some((scheme, host)) = url_userinfo(s) {
                *s = format!("{scheme}://{REDACTED}@{host}");
            }
        }
        Value::String(s) if s.chars().count() > MAX_STRING => {
            let cut: String = s.chars().take(MAX_STRING).collect();
            *s = format!("{cut}…");
        }
        _ => {}
    }
}

/// The params JSON text of an event: `{"query": {...}, "body": ...}` with
/// secrets redacted. A body that is not JSON is recorded by its size only.
pub fn redact_params(query: Option<&str>, body: &[u8]) -> String {
    let mut params = Map::new();
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        let pairs: Map<String, Value> = form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
        params.insert("query".to_owned(), Value::Object(pairs));
    }
    if !body.is_empty() {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => {
                params.insert("body".to_owned(), v);
            }
            Err(_) => {
                params.insert("body_bytes".to_owned(), Value::from(body.len()));
            }
        }
    }
    let mut value = Value::Object(params);
    clean(&mut value, 0);
    let text = value.to_string();
    if text.len() <= MAX_TEXT {
        return text;
    }
    // Too large: keep the shape (top-level body keys), not the content.
    let keys: Vec<Value> = value
        .get("body")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().map(Value::String).collect())
        .unwrap_or_default();
    serde_json::json!({ "truncated": true, "body_keys": keys, "bytes": text.len() }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let body = br#"{"name":"n","oidc":{"client_secret":"s3cr3t","issuer":"https://i"},"api_key":"acme_sk_x","password":"p","max_api_keys":3}"#;
        let text = redact_params(Some("grace_seconds=5&token=abc"), body);
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(!text.contains("acme_sk_x"), "{text}");
        assert!(!text.contains("abc"), "{text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["body"]["oidc"]["issuer"], "https://i");
        assert_eq!(v["body"]["max_api_keys"], 3);
        assert_eq!(v["query"]["grace_seconds"], "5");
    }

    #[test]
    fn userinfo_of_urls_is_redacted() {
        let body = br#"{"repository_url":"https://oauth2:glpat-xyz@gitlab.example.com/a/b.git","url":"https://example.com/x@y"}"#;
        let text = redact_params(None, body);
        assert!(!text.contains("glpat-xyz"), "{text}");
        assert!(
            text.contains("https://***@gitlab.example.com/a/b.git"),
            "{text}"
        );
        assert!(text.contains("https://example.com/x@y"), "{text}");
    }

    #[test]
    fn connection_urls_lose_userinfo_and_query_passwords() {
        assert_eq!(
            without_userinfo("postgres://vault:s3cret@db-2:5432/vault"),
            "postgres://***@db-2:5432/vault"
        );
        assert_eq!(
            without_userinfo("postgres://db-2/vault?user=vault&password=s3cret"),
            "postgres://db-2/vault"
        );
        assert_eq!(
            without_userinfo("postgres://db-2/vault"),
            "postgres://db-2/vault"
        );
    }

    #[test]
    fn credential_values_are_redacted_whatever_their_name() {
        let body = br#"{"note":"acme_sk_abcdefghijklmnop","other":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig","plain":"hello"}"#;
        let text = redact_params(None, body);
        assert!(!text.contains("abcdefghijklmnop"), "{text}");
        assert!(!text.contains("eyJzdWIi"), "{text}");
        assert!(text.contains("hello"), "{text}");
    }

    #[test]
    fn large_and_non_json_bodies_are_bounded() {
        let big = format!(
            r#"{{"description":"{}","fields":{{"a":"{}"}}}}"#,
            "x".repeat(10_000),
            "y".repeat(300)
        );
        let text = redact_params(None, big.as_bytes());
        assert!(text.len() <= MAX_TEXT, "{}", text.len());
        let text = redact_params(None, b"\xff\xfe not json");
        assert_eq!(text, r#"{"body_bytes":11}"#);
        assert_eq!(redact_params(None, b""), "{}");
    }
}
