//! Text at the boundary: the one rule every text input passes before it can
//! reach storage, on both backends alike.
//!
//! U+0000 (NUL) is refused. PostgreSQL's `text` cannot store it (the driver
//! fails the statement, which used to surface as a 500); SQLite can. Refusing
//! it everywhere keeps the two backends the same and gives the client a 422
//! that names the field (`description`, `fields.lang`, `tags[2]`, `action`).
//!
//! Two places call it: the JSON and query-string extractors
//! ([`crate::extract::ApiJson`], [`crate::extract::ApiQuery`]), so every route's
//! body and query is covered, later ones included; and the model
//! validations (records, jobs, tenants), which also serve inputs that do not
//! come through HTTP (the CLI, static configuration).

use serde_json::Value;

/// A text input holds a character storage cannot keep.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: must not contain the NUL character (U+0000)")]
pub struct TextError {
    /// The field, as a path into the request (`fields.lang`, `tags[0]`).
    pub field: String,
}

/// The longest field path echoed back.
const MAX_FIELD: usize = 120;

fn refused(field: &str) -> TextError {
    let shown: String = field
        .replace('\0', "\\u0000")
        .chars()
        .take(MAX_FIELD)
        .collect();
    TextError { field: shown }
}

/// Checks one text value.
pub fn check_text(field: &str, value: &str) -> Result<(), TextError> {
    if value.contains('\0') {
        Err(refused(field))
    } else {
        Ok(())
    }
}

/// Checks one optional text value.
pub fn check_opt(field: &str, value: Option<&str>) -> Result<(), TextError> {
    value.map_or(Ok(()), |v| check_text(field, v))
}

/// `parent.key`, or `key` at the top.
fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Checks every key and string of a JSON value, at any depth; the error
/// names the first offending one by its path under `field` (`""` for a
/// whole body).
pub fn check_json(field: &str, value: &Value) -> Result<(), TextError> {
    match value {
        Value::String(s) => check_text(field, s),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_json(&format!("{field}[{i}]"), v)),
        Value::Object(map) => check_object(field, map),
        _ => Ok(()),
    }
}

/// Checks every key and string of a JSON object (`fields`, `metadata`).
pub fn check_object(field: &str, map: &serde_json::Map<String, Value>) -> Result<(), TextError> {
    map.iter().try_for_each(|(k, v)| {
        let path = child(field, k);
        check_text(&path, k)?;
        check_json(&path, v)
    })
}

/// Checks each string of a list (`tags[0]`, …).
pub fn check_list(field: &str, items: &[String]) -> Result<(), TextError> {
    items
        .iter()
        .enumerate()
        .try_for_each(|(i, s)| check_text(&format!("{field}[{i}]"), s))
}

/// Checks a JSON body as received. A string can hold NUL only as the
/// escape `\u0000` (a raw control character is a syntax error), so bodies
/// without that sequence, nearly all, are not parsed a second time. A body
/// that does not parse is left to the JSON extractor to report.
pub fn check_json_body(body: &[u8]) -> Result<(), TextError> {
    const ESCAPE: &[u8] = b"\\u0000";
    if !body.windows(ESCAPE.len()).any(|w| w == ESCAPE) {
        return Ok(());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => check_json("", &value),
        Err(_) => Ok(()),
    }
}

/// Checks every parameter name and value of a query string (decoded as
/// the query extractor decodes it).
pub fn check_query(query: &str) -> Result<(), TextError> {
    form_urlencoded::parse(query.as_bytes()).try_for_each(|(name, value)| {
        check_text(&name, &name)?;
        check_text(&name, &value)
    })
}

/// A refused text is the client's doing: 422 naming the field.
impl From<TextError> for crate::error::ApiError {
    fn from(e: TextError) -> Self {
        Self::Validation(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_is_refused_naming_the_path() {
        assert_eq!(check_text("kind", "a\0").expect_err("nul").field, "kind");
        assert!(check_text("kind", "a").is_ok());
        let body = json!({"description": "ok", "fields": {"lang": "r\u{0}ust"}});
        assert_eq!(check_json("", &body).expect_err("nul").field, "fields.lang");
        let body = json!({"tags": ["a", "b\u{0}"]});
        assert_eq!(check_json("", &body).expect_err("nul").field, "tags[1]");
        let body = json!({"fields": {"a\u{0}b": 1}});
        assert_eq!(
            check_json("", &body).expect_err("nul").field,
            "fields.a\\u0000b"
        );
        assert!(check_json("", &json!({"a": [1, true, null, {"b": "c"}]})).is_ok());
    }

    #[test]
    fn bodies_are_checked_as_sent() {
        let err = check_json_body(br#"{"description":"a\u0000b"}"#).expect_err("nul");
        assert_eq!(
            err.to_string(),
            "description: must not contain the NUL character (U+0000)"
        );
        // An escaped backslash followed by the letters is not a NUL.
        assert!(check_json_body(br#"{"description":"a\\u0000b"}"#).is_ok());
        assert!(check_json_body(br#"{"description":"#).is_ok());
        assert!(check_json_body(b"").is_ok());
    }

    #[test]
    fn query_strings_are_checked_decoded() {
        assert_eq!(check_query("kind=%00").expect_err("nul").field, "kind");
        assert_eq!(
            check_query("limit=5&actor=a%00b").expect_err("nul").field,
            "actor"
        );
        assert_eq!(check_query("a%00=1").expect_err("nul").field, "a\\u0000");
        assert!(check_query("kind=a%20b&x=").is_ok());
    }
}
