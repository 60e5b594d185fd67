//! Record types: what clients send, what is stored, what comes back.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tenancy::TenantId;
use utoipa::ToSchema;

use super::RecordsError;
use super::fts::MAX_QUERY_CHARS;
use crate::limits::{QuotaExceeded, QuotaLimits};
use crate::store::StoreError;

/// Default page size of lists and searches.
pub const DEFAULT_LIMIT: u64 = 50;
/// Largest page size.
pub const MAX_LIMIT: u64 = 1000;

const MAX_NAME: usize = 256;
const MAX_URL: usize = 2048;
const MAX_DESCRIPTION: usize = 10_000;
const MAX_TAGS: usize = 64;
const MAX_TAG: usize = 64;
const MAX_KIND: usize = 64;

/// A record id: `rec_` followed by a ULID (sortable by creation time).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "rec_01JD6ZK8Q3V2N4M5P6R7S8T9VW")]
pub struct RecordId(String);

impl RecordId {
    /// A fresh id.
    pub fn generate() -> Self {
        Self(format!("rec_{}", ulid::Ulid::new()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Not a record id. Callers answer 404: an id that cannot exist is a
/// record that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("not a record id")]
pub struct InvalidRecordId;

impl FromStr for RecordId {
    type Err = InvalidRecordId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ulid = s
            .strip_prefix("rec_")
            .filter(|u| u.len() == 26)
            .and_then(|u| ulid::Ulid::from_string(u).ok())
            .ok_or(InvalidRecordId)?;
        Ok(Self(format!("rec_{ulid}")))
    }
}

impl TryFrom<String> for RecordId {
    type Error = InvalidRecordId;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<RecordId> for String {
    fn from(id: RecordId) -> Self {
        id.0
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stored record, as returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Record {
    /// Opaque id, unique in the tenant.
    pub id: RecordId,
    /// The owning tenant (always the caller's).
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// Kind of thing described (`repository`, `service`, ...).
    pub kind: String,
    /// Name, unique per `(tenant, kind)`.
    pub name: String,
    /// Where the thing lives.
    pub url: String,
    /// Free text.
    pub description: Option<String>,
    /// Labels for filtering.
    pub tags: Vec<String>,
    /// Arbitrary structured facts.
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    /// Creation time, RFC 3339 UTC; serialised as `@timestamp`, the name
    /// clients of the records API already read.
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// Last change, RFC 3339 UTC.
    pub updated_at: String,
}

/// Body of `POST /records` and `PUT /records/{id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordInput {
    /// Name, unique per `(tenant, kind)`; 1 to 256 characters.
    pub name: String,
    /// Kind: 1 to 64 of letters, digits, `_`, `-`, `.`.
    pub kind: String,
    /// Location; 1 to 2048 characters without whitespace.
    pub url: String,
    /// Free text, up to 10,000 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// Up to 64 tags of 1 to 64 characters.
    #[serde(default)]
    pub tags: Vec<String>,
    /// A JSON object of facts.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
    /// Optional tenant (must agree with the header/query if those are sent).
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// A validated record, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecord {
    /// See [`RecordInput::kind`].
    pub kind: String,
    /// See [`RecordInput::name`].
    pub name: String,
    /// See [`RecordInput::url`].
    pub url: String,
    /// See [`RecordInput::description`].
    pub description: Option<String>,
    /// Trimmed, de-duplicated tags in first-seen order.
    pub tags: Vec<String>,
    /// See [`RecordInput::fields`].
    pub fields: Map<String, Value>,
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

impl NewRecord {
    /// Bytes this record occupies, for storage accounting.
    pub fn size_bytes(&self) -> i64 {
        let fields = serde_json::to_string(&self.fields)
            .map(|s| s.len())
            .unwrap_or(0);
        let tags: usize = self.tags.iter().map(String::len).sum();
        let total = self.kind.len()
            + self.name.len()
            + self.url.len()
            + self.description.as_ref().map_or(0, String::len)
            + tags
            + fields;
        i64::try_from(total).unwrap_or(i64::MAX)
    }
}

impl RecordInput {
    /// Every text of the record checked for what storage cannot keep
    /// ([`crate::input`]), before any other rule, so the answer is the
    /// same on both backends.
    fn check_text(&self) -> Result<(), crate::input::TextError> {
        use crate::input::{check_list, check_object, check_opt, check_text};
        check_text("name", &self.name)?;
        check_text("kind", &self.kind)?;
        check_text("url", &self.url)?;
        check_opt("description", self.description.as_deref())?;
        check_list("tags", &self.tags)?;
        check_object("fields", &self.fields)?;
        check_opt("tenant_id", self.tenant_id.as_deref())
    }
}

impl TryFrom<RecordInput> for NewRecord {
    type Error = RecordsError;

    fn try_from(input: RecordInput) -> Result<Self, RecordsError> {
        input.check_text()?;
        let name = input.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > MAX_NAME || has_control(&name) {
            return Err(RecordsError::invalid(
                "name",
                format!("must be 1 to {MAX_NAME} characters without control characters"),
            ));
        }
        let kind = input.kind.trim().to_owned();
        let kind_ok = !kind.is_empty()
            && kind.len() <= MAX_KIND
            && kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !kind_ok {
            return Err(RecordsError::invalid(
                "kind",
                format!("must be 1 to {MAX_KIND} of letters, digits, '_', '-' and '.'"),
            ));
        }
        let url = input.url.trim().to_owned();
        if url.is_empty()
            || url.len() > MAX_URL
            || url.chars().any(char::is_whitespace)
            || has_control(&url)
        {
            return Err(RecordsError::invalid(
                "url",
                format!("must be 1 to {MAX_URL} characters without whitespace"),
            ));
        }
        let description = input
            .description
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty());
        if description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
        {
            return Err(RecordsError::invalid(
                "description",
                format!("must be at most {MAX_DESCRIPTION} characters"),
            ));
        }
        let tags = validate_tags(input.tags)?;
        Ok(Self {
            kind,
            name,
            url,
            description,
            tags,
            fields: input.fields,
        })
    }
}

fn validate_tags(raw: Vec<String>) -> Result<Vec<String>, RecordsError> {
    if raw.len() > MAX_TAGS {
        return Err(RecordsError::invalid(
            "tags",
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    let mut tags: Vec<String> = Vec::with_capacity(raw.len());
    for tag in raw {
        let tag = tag.trim().to_owned();
        if tag.is_empty() || tag.chars().count() > MAX_TAG || has_control(&tag) {
            return Err(RecordsError::invalid(
                "tags",
                format!("each tag must be 1 to {MAX_TAG} characters without control characters"),
            ));
        }
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

/// Body of `POST /records/search`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Words to find in name, description, url, tags and fields (all must
    /// match; the last one as a prefix). Empty: list everything.
    #[serde(default)]
    pub query: String,
    /// Only records of this kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// Only records carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Page size, 1 to 1000 (default 50).
    #[serde(default)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Optional tenant; can only name the caller's own tenant.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// A validated search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// The text (may have no searchable terms).
    pub text: String,
    /// Kind filter.
    pub kind: Option<String>,
    /// Tag filter (all of).
    pub tags: Vec<String>,
    /// Page size.
    pub limit: u64,
    /// Rows to skip (decoded from the cursor).
    pub offset: u64,
}

/// Validates a page size.
pub fn check_limit(limit: Option<u64>) -> Result<u64, RecordsError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(l) if (1..=MAX_LIMIT).contains(&l) => Ok(l),
        Some(_) => Err(RecordsError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

/// Encodes a page position as an opaque cursor.
pub fn encode_cursor(offset: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("o:{offset}"))
}

/// The cursor after a page of `returned` rows read at `offset`, out of
/// `total`: `None` on the last (or an empty) page.
pub(crate) fn page_cursor(offset: u64, returned: usize, total: u64) -> Option<String> {
    let next = offset.saturating_add(returned as u64);
    (returned > 0 && next < total).then(|| encode_cursor(next))
}

/// Decodes [`encode_cursor`]'s output.
pub fn decode_cursor(cursor: Option<&str>) -> Result<u64, RecordsError> {
    let Some(cursor) = cursor.filter(|c| !c.is_empty()) else {
        return Ok(0);
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("o:").and_then(|n| n.parse::<u64>().ok()))
        .filter(|o| *o <= i64::MAX as u64)
        .ok_or_else(|| RecordsError::invalid("cursor", "is not a cursor returned by this API"))
}

impl TryFrom<SearchRequest> for SearchQuery {
    type Error = RecordsError;

    fn try_from(req: SearchRequest) -> Result<Self, RecordsError> {
        {
            use crate::input::{check_list, check_opt, check_text};
            check_text("query", &req.query)?;
            check_opt("kind", req.kind.as_deref())?;
            check_list("tags", &req.tags)?;
            check_opt("cursor", req.cursor.as_deref())?;
        }
        if req.query.chars().count() > MAX_QUERY_CHARS {
            return Err(RecordsError::invalid(
                "query",
                format!("must be at most {MAX_QUERY_CHARS} characters"),
            ));
        }
        let kind = req
            .kind
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty());
        Ok(Self {
            text: req.query,
            kind,
            tags: validate_tags(req.tags)?,
            limit: check_limit(req.limit)?,
            offset: decode_cursor(req.cursor.as_deref())?,
        })
    }
}

/// A record row as every backend stores it (JSON and times as text),
/// before it is checked and parsed.
#[derive(Debug)]
pub(crate) struct StoredRecord {
    pub(crate) id: String,
    pub(crate) tenant_id: String,
    pub(crate) kind: String,
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) description: Option<String>,
    pub(crate) tags: String,
    pub(crate) fields: String,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
}

impl StoredRecord {
    /// The record, or `Internal` naming the first column that is corrupt.
    pub(crate) fn into_record(self) -> Result<Record, StoreError> {
        let corrupt =
            |what: &str| StoreError::Internal(format!("corrupt record row: {what}").into());
        Ok(Record {
            id: self.id.parse().map_err(|_| corrupt("id"))?,
            tenant_id: TenantId::new(&self.tenant_id).map_err(|_| corrupt("tenant_id"))?,
            kind: self.kind,
            name: self.name,
            url: self.url,
            description: self.description,
            tags: serde_json::from_str(&self.tags).map_err(|_| corrupt("tags"))?,
            fields: serde_json::from_str(&self.fields).map_err(|_| corrupt("fields"))?,
            timestamp: self.created_at.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// `value` as the JSON text stored in a column.
pub(crate) fn json_text(value: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(e.to_string().into()))
}

/// Refuses a write that would take a tenant storing `used` (records,
/// bytes) past `max_records` or `max_storage_mb` by adding
/// `added_records` and `added_bytes`. Backends call it with figures read
/// under a lock that holds until their commit.
pub(crate) fn check_quota(
    quotas: &QuotaLimits,
    used: (i64, i64),
    added_records: i64,
    added_bytes: i64,
) -> Result<(), StoreError> {
    let (records, bytes) = used;
    let over = |used: i64, added: i64, limit: u64| {
        added > 0 && u64::try_from(used.saturating_add(added)).unwrap_or(u64::MAX) > limit
    };
    if let Some(limit) = quotas.max_records
        && over(records, added_records, limit)
    {
        return Err(QuotaExceeded {
            quota: "max_records",
            limit,
        }
        .into());
    }
    if let (Some(limit), Some(max)) = (quotas.max_storage_mb, quotas.max_storage_bytes())
        && over(bytes, added_bytes, max)
    {
        return Err(QuotaExceeded {
            quota: "max_storage_mb",
            limit,
        }
        .into());
    }
    Ok(())
}

/// One search result: the record and its relevance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchHit {
    /// The record.
    #[serde(flatten)]
    pub record: Record,
    /// Relevance (higher is better); absent for listings without terms.
    pub score: Option<f64>,
}

/// A page of results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchPage {
    /// Matches in the caller's tenant, over all pages.
    pub total: u64,
    /// This page, best match first (newest first without terms).
    pub results: Vec<SearchHit>,
    /// Cursor of the next page; absent on the last.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests;
