//! A portable dump of one tenant (`tenantd tenants export` / `import`):
//! for backups, moves between deployments and data-portability requests.
//!
//! # Format (version 1)
//!
//! NDJSON, one JSON object per line:
//!
//! ```text
//! {"type":"header","format":"tenantd.tenant-export","version":1,"schema":4,"tenant_id":"acme","exported_at":"…"}
//! {"type":"row","table":"tenants","data":{"id":"acme","name":"Acme",…}}
//! {"type":"row","table":"records","data":{…}}            one line per row, every tenant table
//! {"type":"end","counts":{"records":12,…},"sha256":"<hex>"}
//! ```
//!
//! `sha256` covers every byte of the lines before the `end` line
//! (newlines included), so a truncated or edited file is refused before
//! anything is written. Rows carry the stored columns as they are (API
//! keys as their keyed hashes, never the keys; binary columns as
//! `{"$hex": "…"}`), so the audit chain keeps its hashes and is verified
//! again on import. Search indexes and per-tenant counters are rebuilt,
//! not copied.
//!
//! API keys keep working after an import only where the target uses the
//! same `auth.key_pepper` (the hashes are keyed with it).

mod postgres;
mod sqlite;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tenancy::TenantId;

use crate::audit::{ChainWalk, HashInput};
use crate::clock::now_rfc3339;
use crate::store::{AdminStore, StoreError};

/// The `format` of the header line.
pub const FORMAT: &str = "tenantd.tenant-export";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

/// One stored row: its table and its columns.
pub type Row = (String, Map<String, Value>);

/// One line of a dump.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Line {
    /// First line.
    Header {
        /// [`FORMAT`].
        format: String,
        /// [`VERSION`].
        version: u32,
        /// Storage schema version of the exporting build.
        schema: u32,
        /// The tenant.
        tenant_id: String,
        /// When (RFC 3339).
        exported_at: String,
    },
    /// A row of a tenant table.
    Row {
        /// Table.
        table: String,
        /// Columns.
        data: Map<String, Value>,
    },
    /// Last line.
    End {
        /// Rows per table.
        counts: BTreeMap<String, u64>,
        /// SHA-256 (hex) of every preceding byte.
        sha256: String,
    },
}

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum PortableError {
    /// No such tenant (export).
    #[error("tenant {0} not found")]
    NotFound(String),
    /// The tenant already exists here (import never merges).
    #[error("tenant {0} already exists here; delete it first or import elsewhere")]
    Exists(String),
    /// The file is not a valid dump (names the line).
    #[error("invalid export file: {0}")]
    Invalid(String),
    /// Reading or writing the file.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A tenant table as dumps carry it. The same list serves every backend,
/// so a dump written by one imports into the other.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Table {
    /// The table.
    pub(crate) name: &'static str,
    /// The column naming the tenant.
    pub(crate) tenant_column: &'static str,
    /// The columns rows are read in order of.
    pub(crate) order: &'static [&'static str],
    /// A column the database assigns: exported, not carried over.
    pub(crate) assigned: Option<&'static str>,
}

impl Table {
    const fn new(
        name: &'static str,
        tenant_column: &'static str,
        order: &'static [&'static str],
        assigned: Option<&'static str>,
    ) -> Self {
        Self {
            name,
            tenant_column,
            order,
            assigned,
        }
    }
}

/// Tenant tables in dependency order (parents first).
pub(crate) const TABLES: &[Table] = &[
    Table::new("tenants", "id", &["id"], None),
    Table::new("api_keys", "tenant_id", &["id"], None),
    Table::new("records", "tenant_id", &["seq"], Some("seq")),
    Table::new("detection_jobs", "tenant_id", &["seq"], Some("seq")),
    Table::new("job_turns", "tenant_id", &["tenant_id"], None),
    Table::new("usage_counters", "tenant_id", &["month", "metric"], None),
    Table::new("usage_daily", "tenant_id", &["day"], None),
    Table::new("audit_events", "tenant_id", &["seq"], None),
    Table::new("audit_heads", "tenant_id", &["tenant_id"], None),
    Table::new("billing_events", "tenant_id", &["month"], None),
];

/// The tables whose rows live in a tenant's own database when it is
/// dedicated, and move with it between tiers (its data, as opposed to the
/// platform's rows about it).
pub(crate) const DATA_TABLES: &[&str] = &["records"];

/// The [`TABLES`] entries of [`DATA_TABLES`].
pub(crate) fn data_tables() -> impl Iterator<Item = &'static Table> {
    TABLES.iter().filter(|t| DATA_TABLES.contains(&t.name))
}

/// The storage schema version dumps are written with (the last migration,
/// the same number on every backend).
pub(crate) const SCHEMA: u32 = 4;

/// An import refused because of what the file holds.
pub(crate) fn invalid(why: String) -> StoreError {
    StoreError::Internal(format!("import: {why}"))
}

/// One stored value on its way between a row and a dump.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    /// SQL NULL (`null`).
    Null,
    /// An integer (a JSON number).
    Integer(i64),
    /// A floating-point number (a JSON number).
    Real(f64),
    /// Text (a JSON string).
    Text(String),
    /// Bytes (`{"$hex": "…"}`).
    Bytes(Vec<u8>),
}

impl Cell {
    /// The value as a dump line carries it.
    pub(crate) fn into_json(self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Integer(n) => Value::from(n),
            Cell::Real(x) => Value::from(x),
            Cell::Text(s) => Value::from(s),
            Cell::Bytes(bytes) => serde_json::json!({ "$hex": hex::encode(bytes) }),
        }
    }

    /// A dump's value for a column of `table` (booleans become 0 or 1).
    pub(crate) fn from_json(table: &str, value: &Value) -> Result<Self, StoreError> {
        Ok(match value {
            Value::Null => Cell::Null,
            Value::Bool(b) => Cell::Integer(i64::from(*b)),
            Value::Number(n) if n.is_i64() || n.is_u64() => Cell::Integer(
                n.as_i64()
                    .ok_or_else(|| invalid("integer out of range".to_owned()))?,
            ),
            Value::Number(n) => Cell::Real(n.as_f64().unwrap_or(0.0)),
            Value::String(s) => Cell::Text(s.clone()),
            Value::Object(o) => match o.get("$hex").and_then(Value::as_str) {
                Some(h) => Cell::Bytes(hex::decode(h).map_err(|_| invalid("bad $hex".to_owned()))?),
                None => return Err(invalid(format!("an object in {table}"))),
            },
            Value::Array(_) => return Err(invalid(format!("an array in {table}"))),
        })
    }
}

/// A dump row ready to write: its table and its columns with values.
pub(crate) type Checked<'c, C> = (&'static Table, Vec<(&'c C, Cell)>);

/// Checks one dump row for import into `tenant`: its table is one of
/// [`TABLES`], it belongs to `tenant`, and every column is one of
/// `columns[table]` (the target's own column list, read from its catalog).
/// Returns the table and the columns to write with their values, the
/// assigned column left out. The names returned are `columns`' own, so
/// nothing from the file reaches SQL as text.
pub(crate) fn checked_row<'c, C: AsRef<str>>(
    tenant: &TenantId,
    table: &str,
    data: &Map<String, Value>,
    columns: &'c HashMap<&'static str, Vec<C>>,
) -> Result<Checked<'c, C>, StoreError> {
    let entry = TABLES.iter().find(|t| t.name == table);
    let (Some(entry), Some(known)) = (entry, columns.get(table)) else {
        return Err(invalid(format!("unknown table {table:?}")));
    };
    let table = entry.name;
    if data.get(entry.tenant_column).and_then(Value::as_str) != Some(tenant.as_str()) {
        return Err(invalid(format!("a {table} row of another tenant")));
    }
    let mut names = Vec::new();
    let mut values = Vec::new();
    for (name, value) in data {
        if Some(name.as_str()) == entry.assigned {
            continue;
        }
        let Some(column) = known.iter().find(|k| k.as_ref() == name) else {
            return Err(invalid(format!("unknown column {table}.{name}")));
        };
        names.push(column);
        values.push(value);
    }
    let mut out = Vec::with_capacity(names.len());
    for (column, value) in names.into_iter().zip(values) {
        out.push((column, Cell::from_json(table, value)?));
    }
    Ok((entry, out))
}

/// Row-level access for dumps. Administrative: it reads and writes every
/// table of one named tenant.
#[async_trait]
pub trait PortableRepo: Send + Sync {
    /// Storage schema version (the last migration).
    fn schema_version(&self) -> u32;
    /// Every row of `tenant`, table by table in dependency order.
    async fn export_rows(&self, tenant: &TenantId) -> Result<Vec<Row>, StoreError>;
    /// Writes `rows` of `tenant` in one transaction (refused with
    /// `Conflict` when the tenant exists); rebuilds indexes and counters.
    async fn import_rows(&self, tenant: &TenantId, rows: &[Row]) -> Result<(), StoreError>;
}

/// Writes the dump of `tenant` to `out`; returns the rows per table.
pub async fn export(
    store: &AdminStore,
    tenant: &TenantId,
    out: &mut impl Write,
) -> Result<BTreeMap<String, u64>, PortableError> {
    let repo = store.portable();
    let mut rows = repo.export_rows(tenant).await?;
    let Some((_, tenant_row)) = rows.iter().find(|(table, _)| table == "tenants") else {
        return Err(PortableError::NotFound(tenant.to_string()));
    };
    // A dedicated tenant's records are in its own database.
    if let Some(target) = dedicated_target(store, tenant, tenant_row) {
        let own = store.pools().open_target(&target).await.map_err(|e| {
            StoreError::Unavailable(crate::audit::redact::text(&format!(
                "{}: {e:#}",
                target.describe()
            )))
        })?;
        let data = own.data_rows(tenant).await;
        own.close().await;
        rows.retain(|(table, _)| !DATA_TABLES.contains(&table.as_str()));
        rows.extend(data?);
    }
    // A dedicated database's URL may carry its password; the dump never
    // does (an import lands the tenant shared anyway).
    for (table, data) in &mut rows {
        if table != "tenants" {
            continue;
        }
        let Some(Ok(mut spec)) =
            text(data, "spec").map(serde_json::from_str::<crate::tenants::model::TenantSpec>)
        else {
            continue;
        };
        if let Some(url) = spec.storage.as_mut().and_then(|s| s.url.as_mut()) {
            *url = crate::audit::redact::url(url);
            let text =
                serde_json::to_string(&spec).map_err(|e| PortableError::Invalid(e.to_string()))?;
            data.insert("spec".to_owned(), Value::String(text));
        }
    }
    let mut hasher = Sha256::new();
    let mut counts = BTreeMap::new();
    let mut write = |line: &Line, hasher: &mut Sha256| -> Result<(), PortableError> {
        let mut text =
            serde_json::to_vec(line).map_err(|e| PortableError::Invalid(e.to_string()))?;
        text.push(b'\n');
        hasher.update(&text);
        out.write_all(&text)?;
        Ok(())
    };
    write(
        &Line::Header {
            format: FORMAT.to_owned(),
            version: VERSION,
            schema: repo.schema_version(),
            tenant_id: tenant.to_string(),
            exported_at: now_rfc3339(),
        },
        &mut hasher,
    )?;
    for (table, data) in rows {
        *counts.entry(table.clone()).or_insert(0) += 1;
        write(&Line::Row { table, data }, &mut hasher)?;
    }
    let end = Line::End {
        counts: counts.clone(),
        sha256: hex::encode(hasher.finalize()),
    };
    let mut text = serde_json::to_vec(&end).map_err(|e| PortableError::Invalid(e.to_string()))?;
    text.push(b'\n');
    out.write_all(&text)?;
    out.flush()?;
    Ok(counts)
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
}

/// Reads and checks a dump: header, checksum, counts, every row belongs to
/// the tenant, and its audit chain is intact.
pub fn read(input: impl BufRead, schema: u32) -> Result<Dump, PortableError> {
    let mut hasher = Sha256::new();
    let mut tenant: Option<TenantId> = None;
    let mut rows = Vec::new();
    let mut end: Option<(BTreeMap<String, u64>, String)> = None;
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
        match parsed {
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
            Line::End { counts, sha256 } => {
                end = Some((counts, sha256));
                continue;
            }
        }
        bytes.push(b'\n');
        hasher.update(&bytes);
    }
    let tenant = tenant.ok_or_else(|| PortableError::Invalid("empty file".to_owned()))?;
    let (counts, sha256) =
        end.ok_or_else(|| PortableError::Invalid("no end line: the file is truncated".to_owned()))?;
    if hex::encode(hasher.finalize()) != sha256 {
        return Err(PortableError::Invalid(
            "checksum mismatch: the file was changed or damaged".to_owned(),
        ));
    }
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for (table, _) in &rows {
        *seen.entry(table.clone()).or_insert(0) += 1;
    }
    if seen != counts {
        return Err(PortableError::Invalid(format!(
            "row counts {seen:?} differ from the end line's {counts:?}"
        )));
    }
    verify_audit(&tenant, &rows)?;
    Ok(Dump {
        tenant,
        rows,
        counts,
    })
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

/// Writes a checked dump into `store`; the tenant must not exist there.
/// The dedicated database a `tenants` row binds its tenant to, if any.
fn dedicated_target(
    store: &AdminStore,
    tenant: &TenantId,
    tenant_row: &Map<String, Value>,
) -> Option<crate::store::Target> {
    let spec: crate::tenants::model::TenantSpec =
        serde_json::from_str(text(tenant_row, "spec")?).ok()?;
    crate::store::Target::of(store.pools().data_dir(), tenant, spec.storage.as_ref())
}

/// Writes `dump` into the shared database. A tenant that was dedicated
/// where it was exported lands in the shared tier here (its old database
/// means nothing on this deployment); `tenantd tenants move` puts it in a
/// database of its own again.
pub async fn import(store: &AdminStore, dump: &Dump) -> Result<(), PortableError> {
    let mut rows = dump.rows.clone();
    for (table, data) in &mut rows {
        if table != "tenants" {
            continue;
        }
        let Some(Ok(mut spec)) =
            text(data, "spec").map(serde_json::from_str::<crate::tenants::model::TenantSpec>)
        else {
            continue;
        };
        if let Some(storage) = spec.storage.as_mut()
            && storage.isolation.as_deref() == Some("dedicated")
        {
            storage.isolation = Some("shared".to_owned());
            storage.url = None;
            storage.database = None;
            spec.moving_until_ms = None;
            let text =
                serde_json::to_string(&spec).map_err(|e| PortableError::Invalid(e.to_string()))?;
            data.insert("spec".to_owned(), Value::String(text));
        }
    }
    match store.portable().import_rows(&dump.tenant, &rows).await {
        Err(StoreError::Conflict(_)) => Err(PortableError::Exists(dump.tenant.to_string())),
        other => Ok(other?),
    }
}
