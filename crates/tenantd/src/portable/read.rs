//! Reading a dump. Every line is hashed (and, with a dump key, MACed) as it
//! streams in; the checksum and then the HMAC are checked before what the
//! lines say is (header, counts, tenant, audit chain), and all of it before
//! [`super::import`] writes anything.

use std::collections::BTreeMap;
use std::io::BufRead;

use hmac::Hmac;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tenancy::TenantId;

use super::key::{DumpKey, verify};
use super::{FORMAT, Line, PortableError, Row, VERSION};
use crate::audit::{ChainWalk, HashInput};

/// How [`read`] establishes where a dump came from.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'k> {
    /// Its HMAC must verify under this key (`--dump-key-file`).
    Key(&'k DumpKey),
    /// Taken without authentication (`--unsigned`): the operator vouches
    /// for the file, and [`super::import`] audits that.
    Unsigned,
}

/// A dump read and checked, not yet written.
#[derive(Debug)]
pub struct Dump {
    /// The tenant.
    pub tenant: TenantId,
    /// Rows in file order.
    pub rows: Vec<Row>,
    /// Rows per table, as the file's `end` line states them.
    pub counts: BTreeMap<String, u64>,
    /// The file's SHA-256 (hex), as its end line states it and as checked.
    pub sha256: String,
    /// [`DumpKey::id`] of the key whose HMAC verified; `None` when read
    /// with [`Trust::Unsigned`].
    pub signed_by: Option<String>,
}

/// Reads and checks a dump: checksum, authenticity under `trust`, header,
/// counts, every row belongs to the tenant, and its audit chain is intact.
pub fn read(input: impl BufRead, schema: u32, trust: Trust<'_>) -> Result<Dump, PortableError> {
    let mac = match trust {
        Trust::Key(key) => Some(key.mac()),
        Trust::Unsigned => None,
    };
    let scanned = scan(input, mac)?;
    let Some(Line::End {
        counts,
        sha256,
        hmac,
        key_id,
    }) = scanned.end
    else {
        let why = if scanned.lines.is_empty() {
            "empty file"
        } else {
            "no end line: the file is truncated"
        };
        return Err(PortableError::Invalid(why.to_owned()));
    };
    if scanned.sha256 != sha256 {
        return Err(PortableError::Invalid(
            "checksum mismatch: the file was changed or damaged".to_owned(),
        ));
    }
    let signed_by = authenticate(trust, scanned.mac, hmac, key_id)?;
    let (tenant, rows) = content(scanned.lines, schema)?;
    check_counts(&rows, &counts)?;
    verify_audit(&tenant, &rows)?;
    Ok(Dump {
        tenant,
        rows,
        counts,
        sha256,
        signed_by,
    })
}

/// The lines of a dump, parsed, with what was computed over them as they
/// streamed in.
struct Scanned {
    /// Every line before the end line, with its number.
    lines: Vec<(usize, Line)>,
    /// The end line, if the file has one.
    end: Option<Line>,
    /// SHA-256 (hex) over the lines before the end line.
    sha256: String,
    /// The HMAC over the same bytes, when a key is given.
    mac: Option<Hmac<Sha256>>,
}

/// Parses every line, hashing (and MACing, with `mac`) each before the end
/// line as it streams in; a line after the end line is refused.
fn scan(input: impl BufRead, mut mac: Option<Hmac<Sha256>>) -> Result<Scanned, PortableError> {
    let mut hasher = Sha256::new();
    let mut lines: Vec<(usize, Line)> = Vec::new();
    let mut end: Option<Line> = None;
    for (n, line) in input.split(b'\n').enumerate() {
        let mut bytes = line?;
        let number = n + 1;
        if bytes.is_empty() {
            continue;
        }
        if end.is_some() {
            return Err(PortableError::Invalid(format!(
                "line {number}: data after the end line"
            )));
        }
        let parsed: Line = serde_json::from_slice(&bytes)
            .map_err(|e| PortableError::Invalid(format!("line {number}: {e}")))?;
        if matches!(parsed, Line::End { .. }) {
            end = Some(parsed);
            continue;
        }
        bytes.push(b'\n');
        hasher.update(&bytes);
        if let Some(mac) = mac.as_mut() {
            hmac::Mac::update(mac, &bytes);
        }
        lines.push((number, parsed));
    }
    Ok(Scanned {
        lines,
        end,
        sha256: hex::encode(hasher.finalize()),
        mac,
    })
}

/// Who signed the dump: with [`Trust::Key`], its end line's `hmac` must
/// verify under the key (`mac` is computed over the file); `None` when
/// read with [`Trust::Unsigned`].
fn authenticate(
    trust: Trust<'_>,
    mac: Option<Hmac<Sha256>>,
    hmac: Option<String>,
    key_id: Option<String>,
) -> Result<Option<String>, PortableError> {
    let (Trust::Key(key), Some(mac)) = (trust, mac) else {
        return Ok(None);
    };
    let Some(tag) = hmac else {
        return Err(PortableError::Unauthenticated(
            "the dump is unsigned (its end line has no hmac); import it with --unsigned \
             only if you know where it came from"
                .to_owned(),
        ));
    };
    if !verify(mac, &tag) {
        let named = key_id.map_or_else(String::new, |k| format!(" (the dump names key {k})"));
        return Err(PortableError::Unauthenticated(format!(
            "its HMAC does not verify under dump key {}{named}: the file was changed \
             after it was signed, or signed with another key",
            key.id()
        )));
    }
    Ok(Some(key.id()))
}

/// The rows per table must be what the end line states.
fn check_counts(rows: &[Row], counts: &BTreeMap<String, u64>) -> Result<(), PortableError> {
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for (table, _) in rows {
        *seen.entry(table.clone()).or_insert(0) += 1;
    }
    if seen != *counts {
        return Err(PortableError::Invalid(format!(
            "row counts {seen:?} differ from the end line's {counts:?}"
        )));
    }
    Ok(())
}

/// The tenant of the header (first line) and the rows after it.
fn content(lines: Vec<(usize, Line)>, schema: u32) -> Result<(TenantId, Vec<Row>), PortableError> {
    let mut tenant: Option<TenantId> = None;
    let mut rows = Vec::with_capacity(lines.len());
    for (number, line) in lines {
        match line {
            Line::Header {
                format,
                version,
                schema: theirs,
                tenant_id,
                ..
            } => {
                if number != 1 || tenant.is_some() {
                    return Err(PortableError::Invalid(format!(
                        "line {number}: a second header"
                    )));
                }
                if format != FORMAT || version != VERSION {
                    return Err(PortableError::Invalid(format!(
                        "line 1: format {format} version {version}; this build reads {FORMAT} version {VERSION}"
                    )));
                }
                if theirs > schema {
                    return Err(PortableError::Invalid(format!(
                        "line 1: written by a newer tenantd (schema {theirs}; this one has {schema})"
                    )));
                }
                tenant = Some(
                    TenantId::new(&tenant_id)
                        .map_err(|e| PortableError::Invalid(format!("line 1: tenant_id: {e}")))?,
                );
            }
            Line::Row { table, data } => {
                if tenant.is_none() {
                    return Err(PortableError::Invalid("line 1: no header".to_owned()));
                }
                rows.push((table, data));
            }
            Line::End { .. } => {
                return Err(PortableError::Invalid(format!(
                    "line {number}: an end line before the last"
                )));
            }
        }
    }
    let tenant = tenant.ok_or_else(|| PortableError::Invalid("no header".to_owned()))?;
    Ok((tenant, rows))
}

fn text<'a>(data: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    data.get(key).and_then(Value::as_str)
}

fn number(data: &Map<String, Value>, key: &str) -> Option<u64> {
    data.get(key).and_then(Value::as_u64)
}

/// Re-checks the tenant's audit chain from the rows with the walk
/// `tenantd audit verify` uses: sequence, links, hashes and head.
fn verify_audit(tenant: &TenantId, rows: &[Row]) -> Result<(), PortableError> {
    let bad = |why: String| PortableError::Invalid(format!("audit chain: {why}"));
    let mut walk = ChainWalk::default();
    for (_, data) in rows.iter().filter(|(t, _)| t == "audit_events") {
        let event = HashInput {
            tenant: tenant.as_str(),
            seq: number(data, "seq").ok_or_else(|| bad("an event without seq".to_owned()))?,
            id: text(data, "id").unwrap_or_default(),
            at: text(data, "at").unwrap_or_default(),
            actor: text(data, "actor").unwrap_or_default(),
            action: text(data, "action").unwrap_or_default(),
            target: text(data, "target"),
            request_id: text(data, "request_id"),
            ip: text(data, "ip"),
            user_agent: text(data, "user_agent"),
            status: u16::try_from(number(data, "status").unwrap_or(0)).unwrap_or(0),
            duration_ms: number(data, "duration_ms").unwrap_or(0),
            params: text(data, "params").unwrap_or_default(),
            prev_hash: text(data, "prev_hash").unwrap_or_default(),
        };
        walk.step(&event, text(data, "hash").unwrap_or_default())
            .map_err(bad)?;
    }
    let head = rows.iter().find(|(t, _)| t == "audit_heads").map(|(_, h)| {
        (
            number(h, "seq").unwrap_or(0),
            text(h, "hash").unwrap_or_default(),
        )
    });
    walk.finish(head).map_err(bad)
}
