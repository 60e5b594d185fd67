//! Redaction: the one place that decides what of a URL, a JSON document or
//! a line of text may be shown. Everything that echoes a value a secret may
//! hide in goes through here (the audit log's params, admin views,
//! `/health/tenants`, move reports, dumps, log lines, error details,
//! `tenantd config check`), so a rule fixed here is fixed everywhere.
//!
//! - [`url`]: the userinfo becomes `***`; every query value becomes `***`
//!   except those of a short allow-list of parameters that cannot carry a
//!   credential (names are kept, so an operator still sees the shape); a
//!   fragment becomes `***`. Over-redacting a harmless parameter costs a
//!   little readability; under-redacting leaks a password, so the list is
//!   of what is known harmless, not of what is known secret.
//! - [`text`]: free text (an error message, a log field): every URL in it
//!   as [`url`], and `password=…`-style pairs (libpq connection strings)
//!   masked.
//! - [`json`]: a JSON document: values under secret-looking names, values
//!   that look like API keys or JWTs, and every string as [`url`] or
//!   [`text`].
//! - [`params`]: the audit log's parameters: [`json`], then bounded.

use serde_json::{Map, Value};

/// What a secret is replaced with.
pub const REDACTED: &str = "***";

/// Longest string kept whole in audit params.
const MAX_STRING: usize = 256;
/// Deepest nesting kept in audit params.
const MAX_DEPTH: usize = 6;
/// Largest params text kept; above it only the top-level keys remain.
const MAX_TEXT: usize = 4096;

/// Query parameters whose values are shown: connection settings that
/// cannot hold a credential. Every other value is `***`.
const HARMLESS_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "connect_timeout",
    "application_name",
    "target_session_attrs",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "sslrootcert",
    "ssl-root-cert",
    "statement-cache-capacity",
];

/// Whether a key or parameter name says its value is a secret.
pub fn is_secret_name(name: &str) -> bool {
    let k = name.to_ascii_lowercase();
    matches!(
        k.as_str(),
        "key" | "pass" | "pwd" | "apikey" | "authorization" | "credential" | "credentials"
    ) || k.ends_with("_key")
        || k.ends_with("-key")
        || ["secret", "password", "passwd", "token", "private", "pepper"]
            .iter()
            .any(|s| k.contains(s))
}

/// An API key (`<tenant>_sk_<secret>`) or a JWT (`eyJ….….…`).
fn looks_like_credential(s: &str) -> bool {
    let s = s.trim();
    let bearer = s.strip_prefix("Bearer ").unwrap_or(s);
    s.contains("_sk_") || (bearer.starts_with("eyJ") && bearer.matches('.').count() == 2)
}

/// `(scheme, rest)` of a string that starts with `scheme://`.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once("://")?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then_some((scheme, rest))
}

/// Where the userinfo of `rest` (a URL after `scheme://`) ends: the byte
/// index of its `@`, or of the authority's end when it ends in a colon
/// that is not a port (`user:password` without a host).
///
/// A password with an unencoded `/`, `?` or `#` makes a URL no client can
/// use, but it is still typed and must still not be shown: when the
/// authority holds a colon that is not a port, the userinfo runs to the
/// last `@` of the whole URL.
fn userinfo_end(rest: &str) -> Option<(usize, bool)> {
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    if let Some(at) = authority.rfind('@') {
        return Some((at, true));
    }
    let host_port = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or("", |(_, after)| after),
        None => authority,
    };
    let bogus_port = host_port
        .split_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && !port.bytes().all(|b| b.is_ascii_digit()));
    if !bogus_port {
        return None;
    }
    match rest.rfind('@') {
        Some(at) => Some((at, true)),
        // `user:password` alone: keep what is before the colon.
        None => authority.find(':').map(|colon| (colon, false)),
    }
}

/// A query string with every value outside [`HARMLESS_PARAMS`] replaced.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let (name, value) = match pair.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (pair, None),
            };
            let harmless = HARMLESS_PARAMS.iter().any(|h| h.eq_ignore_ascii_case(name));
            let plain_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            match value {
                _ if pair.is_empty() || harmless => pair.to_owned(),
                // A bare word may itself be the secret.
                None => REDACTED.to_owned(),
                Some(v) if !plain_name => {
                    if v.is_empty() {
                        REDACTED.to_owned()
                    } else {
                        format!("{REDACTED}={REDACTED}")
                    }
                }
                Some("") => format!("{name}="),
                Some(_) => format!("{name}={REDACTED}"),
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `s` with its userinfo, its query values (except harmless connection
/// settings) and its fragment replaced by `***`. A string that does not
/// start with `scheme://` is returned unchanged.
///
/// ```text
/// postgres://vault:pw@db:5432/v?sslmode=require&password=pw#x
///   → postgres://***@db:5432/v?sslmode=require&password=***#***
/// ```
pub fn url(s: &str) -> String {
    let Some((scheme, rest)) = split_scheme(s) else {
        return s.to_owned();
    };
    let mut out = String::with_capacity(s.len());
    out.push_str(scheme);
    out.push_str("://");
    let after = match userinfo_end(rest) {
        Some((at, true)) => {
            out.push_str(REDACTED);
            out.push('@');
            &rest[at + 1..]
        }
        Some((colon, false)) => {
            out.push_str(&rest[..=colon]);
            out.push_str(REDACTED);
            let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            &rest[authority_len..]
        }
        None => rest,
    };
    let (before_fragment, fragment) = match after.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (after, None),
    };
    match before_fragment.split_once('?') {
        Some((base, query)) => {
            out.push_str(base);
            out.push('?');
            out.push_str(&redact_query(query));
        }
        None => out.push_str(before_fragment),
    }
    if let Some(fragment) = fragment {
        out.push('#');
        if !fragment.is_empty() {
            out.push_str(REDACTED);
        }
    }
    out
}

/// Free text (an error message, a log field) with every URL in it
/// redacted as [`url`], and the value of every `name=value` pair whose
/// name says secret (`password=…`, `sslpassword=…`, libpq's
/// `key = 'value'` form too) replaced by `***`.
pub fn text(s: &str) -> String {
    mask_pairs(&urls_in(s))
}

/// Each `scheme://…` run of `s` (up to whitespace or a quote) as [`url`].
fn urls_in(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("://") {
        let scheme_start = run_start(&rest[..pos], |c| {
            c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')
        });
        let end = rest[pos + 3..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .map_or(rest.len(), |i| pos + 3 + i);
        out.push_str(&rest[..scheme_start]);
        let candidate = &rest[scheme_start..end];
        if split_scheme(candidate).is_some() {
            out.push_str(&url(candidate));
        } else {
            out.push_str(candidate);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Where the run of characters matching `part` that ends `s` starts.
fn run_start(s: &str, part: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .rev()
        .find(|&(_, c)| !part(c))
        .map_or(0, |(i, c)| i + c.len_utf8())
}

/// `name=value` pairs of `s` with a secret name get `***` for a value.
fn mask_pairs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let name_end = rest[..eq].trim_end().len();
        let name_start = run_start(&rest[..name_end], |c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
        });
        let name = &rest[name_start..name_end];
        out.push_str(&rest[..=eq]);
        let after = &rest[eq + 1..];
        if name.is_empty() || !is_secret_name(name) {
            rest = after;
            continue;
        }
        let value_start = after.len() - after.trim_start().len();
        out.push_str(&after[..value_start]);
        let value = &after[value_start..];
        let value_len = match value.strip_prefix('\'') {
            // libpq quotes values with spaces: 'a b', with \' inside.
            Some(quoted) => {
                let mut escaped = false;
                quoted
                    .char_indices()
                    .find(|&(_, c)| {
                        let close = c == '\'' && !escaped;
                        escaped = c == '\\' && !escaped;
                        close
                    })
                    .map_or(value.len(), |(i, _)| i + 2)
            }
            None => value
                .find(|c: char| c.is_whitespace() || matches!(c, '&' | ';' | ',' | '"' | ')'))
                .unwrap_or(value.len()),
        };
        if value_len > 0 {
            out.push_str(REDACTED);
        }
        rest = &value[value_len..];
    }
    out.push_str(rest);
    out
}

/// A JSON string as shown: `***` for a credential, [`url`] for a URL,
/// [`text`] for anything else.
fn string(s: &str) -> String {
    if looks_like_credential(s) {
        REDACTED.to_owned()
    } else if split_scheme(s).is_some() {
        url(s)
    } else {
        text(s)
    }
}

/// Redacts `value` in place, at any depth: values under a secret name
/// (except `null` and booleans, which say whether, not what) become
/// `***`, and every string goes through [`url`] or [`text`].
pub fn json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_secret_name(key) && !v.is_null() && !v.is_boolean() {
                    *v = Value::String(REDACTED.to_owned());
                } else {
                    json(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(json),
        Value::String(s) => {
            let shown = string(s);
            if shown != *s {
                *s = shown;
            }
        }
        _ => {}
    }
}

/// Cuts long strings and deep nesting (after [`json`]).
fn bound(value: &mut Value, depth: usize) {
    match value {
        Value::Object(_) | Value::Array(_) if depth >= MAX_DEPTH => {
            *value = Value::String("…".to_owned());
        }
        Value::Object(map) => map.values_mut().for_each(|v| bound(v, depth + 1)),
        Value::Array(items) => items.iter_mut().for_each(|v| bound(v, depth + 1)),
        Value::String(s) if s.chars().count() > MAX_STRING => {
            let cut: String = s.chars().take(MAX_STRING).collect();
            *s = format!("{cut}…");
        }
        _ => {}
    }
}

/// The params JSON text of an audit event: `{"query": {...}, "body": ...}`
/// redacted as [`json`] and bounded. A body that is not JSON is recorded
/// by its size only.
pub fn params(query: Option<&str>, body: &[u8]) -> String {
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
    json(&mut value);
    bound(&mut value, 0);
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
mod tests;
