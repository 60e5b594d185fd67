//! A portable dump of one tenant (`tenantd tenants export` / `import`):
//! for backups, moves between deployments and data-portability requests.
//!
//! # Format (version 1)
//!
//! NDJSON, one JSON object per line:
//!
//! ```text
//! {"type":"header","format":"tenantd.tenant-export","version":1,"schema":5,"tenant_id":"acme","exported_at":"…"}
//! {"type":"row","table":"tenants","data":{"id":"acme","name":"Acme",…}}
//! {"type":"row","table":"records","data":{…}}            one line per row, every tenant table
//! {"type":"end","counts":{"records":12,…},"sha256":"<hex>","hmac":"<hex>","key_id":"<hex>"}
//! ```
//!
//! `sha256` covers every byte of the lines before the `end` line
//! (newlines included), so a truncated or damaged file is refused before
//! anything is written. It is unkeyed: anyone can recompute it over a file
//! of their own making. `hmac` is HMAC-SHA256 of the same bytes under the
//! operator's dump key ([`key`]), and `key_id` names that key; an import
//! verifies it before anything is written, so a dump this deployment
//! accepts was made by a holder of the key. A dump without `hmac`
//! (exported with `--unsigned`) is imported only with `--unsigned`, and
//! that import is audited in the operator's chain.
//!
//! An import never revives an id: a tenant that exists, an id that
//! belonged to a deleted tenant (retired: its audit trail and usage are
//! kept under it), and an id that already has rows here are all refused,
//! in the transaction that writes the rows.
//!
//! Rows carry the stored columns as they are (API keys as their keyed
//! hashes, never the keys; binary columns as `{"$hex": "…"}`), so the
//! audit chain keeps its hashes and is verified again on import. Search
//! indexes and per-tenant counters are rebuilt, not copied.
//!
//! API keys keep working after an import only where the target uses the
//! same `auth.key_pepper` (the hashes are keyed with it).

pub mod key;
mod read;
mod repo;
pub(crate) mod rows;

pub use key::DumpKey;
pub use read::{Dump, Trust, read};

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tenancy::TenantId;

use crate::audit::{AuditRepo, NewEvent, SYSTEM_CHAIN};
use crate::clock::{Clock, rfc3339_from_ms};
use crate::records::DataRows;
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
        /// HMAC-SHA256 (hex) of the same bytes under the dump key; absent
        /// in an unsigned dump.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hmac: Option<String>,
        /// [`DumpKey::id`] of the key `hmac` was made with (informative:
        /// only `hmac` is checked).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_id: Option<String>,
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
    /// The id belonged to a deleted tenant, whose audit trail and usage
    /// are kept under it: never given to another tenant.
    #[error(
        "tenant id {0} belonged to a deleted tenant whose audit trail and usage are kept; \
         a retired id is never reused, so the dump cannot be imported under it"
    )]
    Retired(String),
    /// Rows of this id exist here though no tenant does (e.g. from
    /// header-only use): an import never merges into them.
    #[error("tenant id {tenant} already has {table} rows here; import never merges")]
    Occupied {
        /// The id.
        tenant: String,
        /// A table holding its rows.
        table: &'static str,
    },
    /// The file is not a valid dump (names the line).
    #[error("invalid export file: {0}")]
    Invalid(String),
    /// The dump's origin is not proven: no HMAC, or one that does not
    /// verify under the dump key given. Nothing was imported.
    #[error("dump not authenticated: {0}; nothing was imported")]
    Unauthenticated(String),
    /// The dump key file cannot be used.
    #[error("dump key: {0}")]
    Key(String),
    /// The import is done but its audit event could not be written.
    #[error("tenant {tenant} was imported, but its audit event could not be written: {cause}")]
    Unaudited {
        /// The tenant.
        tenant: String,
        /// Why.
        cause: StoreError,
    },
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
pub(crate) const SCHEMA: u32 = 5;

/// An import refused because of what the file holds.
pub(crate) fn invalid(why: String) -> StoreError {
    StoreError::Internal(format!("import: {why}").into())
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

/// `SELECT` telling whether `table` has a row of the tenant bound as `$1`.
pub(crate) fn any_row_sql(table: &Table) -> String {
    format!(
        "SELECT 1 FROM {} WHERE {} = $1 LIMIT 1",
        table.name, table.tenant_column
    )
}

/// What [`PortableRepo::import_rows`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// The rows are written.
    Written,
    /// Nothing written: a tenant with this id exists.
    Exists,
    /// Nothing written: the id belonged to a deleted tenant.
    Retired,
    /// Nothing written: this table already has rows of the id.
    Occupied(&'static str),
}

/// Row-level access for dumps, implemented once on
/// [`crate::store::Db`]. Administrative: it reads and writes every
/// table of one named tenant.
#[async_trait]
pub trait PortableRepo: Send + Sync {
    /// Storage schema version (the last migration).
    fn schema_version(&self) -> u32;
    /// Every row of `tenant`, table by table in dependency order.
    async fn export_rows(&self, tenant: &TenantId) -> Result<Vec<Row>, StoreError>;
    /// Writes `rows` of `tenant` in one transaction and rebuilds indexes
    /// and counters, unless the id is taken, retired or has rows in any
    /// tenant table: decided in that transaction (under the registry lock
    /// on PostgreSQL), with the retired-id check tenant creation uses.
    async fn import_rows(&self, tenant: &TenantId, rows: &[Row]) -> Result<Imported, StoreError>;
}

/// Writes the dump of `tenant` to `out`, signed under `key` (unsigned
/// without one: `--unsigned`), stamped with `clock`'s now; returns the
/// rows per table.
pub async fn export(
    store: &AdminStore,
    tenant: &TenantId,
    key: Option<&DumpKey>,
    out: &mut impl Write,
    clock: &Clock,
) -> Result<BTreeMap<String, u64>, PortableError> {
    let repo = store.db();
    let mut rows = repo.export_rows(tenant).await?;
    let Some((_, tenant_row)) = rows.iter().find(|(table, _)| table == "tenants") else {
        return Err(PortableError::NotFound(tenant.to_string()));
    };
    // A dedicated tenant's records are in its own database.
    if let Some(target) = dedicated_target(store, tenant, tenant_row) {
        let own = store.pools().open_target(&target).await.map_err(|e| {
            StoreError::Unavailable(
                crate::redact::text(&format!("{}: {e:#}", target.describe())).into(),
            )
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
            *url = crate::redact::url(url);
            let text =
                serde_json::to_string(&spec).map_err(|e| PortableError::Invalid(e.to_string()))?;
            data.insert("spec".to_owned(), Value::String(text));
        }
    }
    let mut hasher = Sha256::new();
    let mut mac = key.map(DumpKey::mac);
    let mut counts = BTreeMap::new();
    let mut write = |line: &Line| -> Result<(), PortableError> {
        let mut text =
            serde_json::to_vec(line).map_err(|e| PortableError::Invalid(e.to_string()))?;
        text.push(b'\n');
        hasher.update(&text);
        if let Some(mac) = mac.as_mut() {
            hmac::Mac::update(mac, &text);
        }
        out.write_all(&text)?;
        Ok(())
    };
    write(&Line::Header {
        format: FORMAT.to_owned(),
        version: VERSION,
        schema: repo.schema_version(),
        tenant_id: tenant.to_string(),
        exported_at: clock.now_rfc3339(),
    })?;
    for (table, data) in rows {
        *counts.entry(table.clone()).or_insert(0) += 1;
        write(&Line::Row { table, data })?;
    }
    let end = Line::End {
        counts: counts.clone(),
        sha256: hex::encode(hasher.finalize()),
        hmac: mac.map(|mac| hex::encode(hmac::Mac::finalize(mac).into_bytes())),
        key_id: key.map(DumpKey::id),
    };
    let mut text = serde_json::to_vec(&end).map_err(|e| PortableError::Invalid(e.to_string()))?;
    text.push(b'\n');
    out.write_all(&text)?;
    out.flush()?;
    Ok(counts)
}

fn text<'a>(data: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    data.get(key).and_then(Value::as_str)
}

/// The dedicated database a `tenants` row binds its tenant to, if any.
fn dedicated_target(
    store: &AdminStore,
    tenant: &TenantId,
    tenant_row: &Map<String, Value>,
) -> Option<crate::store::Target> {
    let spec: crate::tenants::model::TenantSpec =
        serde_json::from_str(text(tenant_row, "spec")?).ok()?;
    spec.storage?.target(store.pools().data_dir(), tenant)
}

/// Writes `dump` into the shared database; the id must be new here (not
/// a tenant, not retired, no rows). A tenant that was dedicated where it
/// was exported lands in the shared tier here (its old database means
/// nothing on this deployment); `tenantd tenants move` puts it in a
/// database of its own again.
///
/// Every import is audited in the operator's chain ([`SYSTEM_CHAIN`]) as
/// `tenants.import` with its outcome. An unsigned dump (read with
/// [`Trust::Unsigned`]) is also recorded as `tenants.import_unsigned`
/// *before* any row is written: if that record cannot be made, nothing is
/// imported. The audit events are stamped with `clock`'s now.
pub async fn import(store: &AdminStore, dump: &Dump, clock: &Clock) -> Result<(), PortableError> {
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
    if dump.signed_by.is_none() {
        audit(store, dump, ACTION_UNSIGNED, 202, None, clock).await?;
    }
    let id = dump.tenant.to_string();
    let result = match store.db().import_rows(&dump.tenant, &rows).await {
        Ok(Imported::Written) => Ok(()),
        Ok(Imported::Exists) => Err(PortableError::Exists(id.clone())),
        Ok(Imported::Retired) => Err(PortableError::Retired(id.clone())),
        Ok(Imported::Occupied(table)) => Err(PortableError::Occupied {
            tenant: id.clone(),
            table,
        }),
        // An identity-provider binding another tenant holds.
        Err(StoreError::Conflict(why)) if why.message() == crate::tenants::oidc::TAKEN => {
            Err(StoreError::Conflict(why).into())
        }
        Err(e) => Err(e.into()),
    };
    let status = match &result {
        Ok(()) => 201,
        Err(PortableError::Store(StoreError::Unavailable(_))) => 503,
        Err(PortableError::Store(StoreError::Conflict(_))) => 409,
        Err(PortableError::Store(_)) => 500,
        Err(_) => 409,
    };
    let error = result.as_ref().err().map(ToString::to_string);
    let recorded = audit(store, dump, ACTION, status, error, clock).await;
    match (result, recorded) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(cause)) => Err(PortableError::Unaudited { tenant: id, cause }),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// The audit action of every import (with its outcome).
pub const ACTION: &str = "tenants.import";
/// The audit action recorded before an unsigned dump is written.
pub const ACTION_UNSIGNED: &str = "tenants.import_unsigned";

/// Appends an import event to the operator's chain (imports run from the
/// CLI, on the store, outside any request).
async fn audit(
    store: &AdminStore,
    dump: &Dump,
    action: &str,
    status: u16,
    error: Option<String>,
    clock: &Clock,
) -> Result<(), StoreError> {
    let at_ms = clock.now_ms();
    let params = serde_json::json!({
        "tenant_id": dump.tenant.as_str(),
        "sha256": dump.sha256,
        "signed_by": dump.signed_by,
        "rows": dump.counts,
        "error": error,
    });
    store
        .db()
        .append_events(&[NewEvent {
            id: crate::audit::new_event_id(),
            outbox: None,
            tenant: SYSTEM_CHAIN.to_owned(),
            at: rfc3339_from_ms(at_ms),
            at_ms,
            actor: "cli".to_owned(),
            action: action.to_owned(),
            target: Some(dump.tenant.to_string()),
            request_id: None,
            ip: None,
            user_agent: None,
            status,
            duration_ms: 0,
            params: params.to_string(),
        }])
        .await
}
