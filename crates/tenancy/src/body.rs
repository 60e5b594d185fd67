//! Reading a request's JSON body for its `tenant_id`, on the routes that
//! take a body tenant ([`crate::TenancyLayerBuilder::body_tenant_routes`]).

use bytes::Bytes;
use http::request::Parts;
use http_body::Body as HttpBody;
use http_body_util::BodyExt as _;

use crate::error::TenancyError;
use crate::resolve::TenantSource;

/// Reads a JSON body (within the layer's body limit; the caller's timeout
/// bounds the time) and takes its top-level `tenant_id`. The bytes are
/// handed on unchanged. A body that is not JSON names no tenant here: the
/// handler's own parser reports it.
pub(crate) async fn read_body_tenant<B>(
    enabled: bool,
    limit: usize,
    parts: &Parts,
    body: B,
) -> Result<(B, Option<String>), TenancyError>
where
    B: HttpBody<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let is_json = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_content_type);
    if !enabled || !is_json {
        return Ok((body, None));
    }
    let bytes = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(TenancyError::BodyTooLarge);
        }
        Err(_) => return Err(TenancyError::UnreadableBody),
    };
    let tenant = peek_tenant(&bytes)?;
    Ok((B::from(bytes), tenant))
}

/// Whether a `Content-Type` is JSON the way axum's `Json` extractor judges
/// it (`application/json` or `application/*+json`, any case, any
/// parameters), so the layer reads every body a handler will parse.
pub fn is_json_content_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let Some(subtype) = essence.strip_prefix("application/") else {
        return false;
    };
    subtype == "json" || subtype.ends_with("+json")
}

/// The top-level `tenant_id` of a JSON object; `None` when absent, null or
/// when the body is not a JSON object (its handler refuses it). A
/// `tenant_id` that is not a string is refused here.
fn peek_tenant(bytes: &[u8]) -> Result<Option<String>, TenancyError> {
    /// Skips every other field without building it.
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(default)]
        tenant_id: Option<serde_json::Value>,
    }
    // A derived struct also accepts a JSON array; only an object has fields.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Ok(None);
    }
    match serde_json::from_slice::<Peek>(bytes).map(|p| p.tenant_id) {
        Err(_) | Ok(None | Some(serde_json::Value::Null)) => Ok(None),
        Ok(Some(serde_json::Value::String(s))) => Ok(Some(s)),
        Ok(Some(_)) => Err(TenancyError::InvalidTenantId {
            from: TenantSource::Body,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_as_axum_sees_them() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.x+JSON",
        ] {
            assert!(is_json_content_type(ok), "{ok}");
        }
        for no in ["text/json", "application/jsonx", "multipart/form-data"] {
            assert!(!is_json_content_type(no), "{no}");
        }
    }

    #[test]
    fn only_an_object_names_a_tenant() {
        assert_eq!(
            peek_tenant(br#"{"tenant_id":"a","x":1}"#),
            Ok(Some("a".to_owned()))
        );
        assert_eq!(peek_tenant(br#"["a"]"#), Ok(None));
        assert_eq!(peek_tenant(br#"{"tenant_id":null}"#), Ok(None));
        assert_eq!(peek_tenant(b"not json"), Ok(None));
        assert!(peek_tenant(br#"{"tenant_id":["a"]}"#).is_err());
    }
}
