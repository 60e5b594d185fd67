//! [`PortableRepo`] for SQLite: tenant tables read and written column by
//! column, so a new column travels without code here.

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, Row, TypeInfo, ValueRef};
use tenancy::TenantId;

use super::{PortableRepo, Row as DumpRow};
use crate::records::NewRecord;
use crate::store::sqlite_support::map_sqlx;
use crate::store::{SqliteStore, StoreError};

/// Tenant tables in dependency order (parents first): the table, the
/// column naming the tenant, the order rows are read in, and a column the
/// database assigns (not carried over).
const TABLES: &[(&str, &str, &str, Option<&str>)] = &[
    ("tenants", "id", "id", None),
    ("api_keys", "tenant_id", "id", None),
    ("records", "tenant_id", "seq", Some("seq")),
    ("detection_jobs", "tenant_id", "seq", Some("seq")),
    ("job_turns", "tenant_id", "tenant_id", None),
    ("usage_counters", "tenant_id", "month, metric", None),
    ("usage_daily", "tenant_id", "day", None),
    ("audit_events", "tenant_id", "seq", None),
    ("audit_heads", "tenant_id", "tenant_id", None),
    ("billing_events", "tenant_id", "month", None),
];

/// The last migration's version.
const SCHEMA: u32 = 4;

fn to_json(row: &SqliteRow) -> Result<Map<String, Value>, StoreError> {
    let mut out = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i).map_err(map_sqlx)?;
        let value = if raw.is_null() {
            Value::Null
        } else {
            match raw.type_info().name() {
                "INTEGER" => Value::from(row.try_get::<i64, _>(i).map_err(map_sqlx)?),
                "REAL" => Value::from(row.try_get::<f64, _>(i).map_err(map_sqlx)?),
                "BLOB" => {
                    let bytes: Vec<u8> = row.try_get(i).map_err(map_sqlx)?;
                    serde_json::json!({ "$hex": hex::encode(bytes) })
                }
                _ => Value::from(row.try_get::<String, _>(i).map_err(map_sqlx)?),
            }
        };
        out.insert(column.name().to_owned(), value);
    }
    Ok(out)
}

fn invalid(why: String) -> StoreError {
    StoreError::Internal(format!("import: {why}"))
}

/// A record row as the search indexer wants it.
fn record_of(data: &Map<String, Value>) -> Result<NewRecord, StoreError> {
    let text = |k: &str| {
        data.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let parse = |k: &str, default: &str| -> Result<Value, StoreError> {
        serde_json::from_str(data.get(k).and_then(Value::as_str).unwrap_or(default))
            .map_err(|_| invalid(format!("records.{k} is not JSON")))
    };
    let tags = parse("tags", "[]")?;
    let fields = parse("fields", "{}")?;
    Ok(NewRecord {
        kind: text("kind"),
        name: text("name"),
        url: text("url"),
        description: data
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        tags: serde_json::from_value(tags).map_err(|_| invalid("records.tags".to_owned()))?,
        fields: match fields {
            Value::Object(m) => m,
            _ => return Err(invalid("records.fields is not an object".to_owned())),
        },
    })
}

#[async_trait]
impl PortableRepo for SqliteStore {
    fn schema_version(&self) -> u32 {
        SCHEMA
    }

    async fn export_rows(&self, tenant: &TenantId) -> Result<Vec<DumpRow>, StoreError> {
        // One read transaction: a consistent snapshot across tables.
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        let mut rows = Vec::new();
        for (table, column, order, _) in TABLES {
            let sql = format!("SELECT * FROM {table} WHERE {column} = ?1 ORDER BY {order}");
            let found = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(map_sqlx)?;
            for row in &found {
                rows.push(((*table).to_owned(), to_json(row)?));
            }
        }
        tx.commit().await.map_err(map_sqlx)?;
        Ok(rows)
    }

    async fn import_rows(&self, tenant: &TenantId, rows: &[DumpRow]) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM tenants WHERE id = ?1")
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        if exists.is_some() {
            return Err(StoreError::Conflict(format!("tenant {tenant} exists")));
        }
        // Column names come from the file: only the table's own columns
        // are accepted, so nothing from the file reaches SQL as text.
        let mut columns_of = std::collections::HashMap::new();
        for (table, _, _, _) in TABLES {
            let names: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT name FROM pragma_table_info('{table}')"
            )))
            .fetch_all(&mut *tx)
            .await
            .map_err(map_sqlx)?;
            columns_of.insert(*table, names);
        }
        for (table, data) in rows {
            let Some((table, tenant_column, _, generated)) =
                TABLES.iter().find(|(t, ..)| *t == table.as_str())
            else {
                return Err(invalid(format!("unknown table {table:?}")));
            };
            if data.get(*tenant_column).and_then(Value::as_str) != Some(tenant.as_str()) {
                return Err(invalid(format!("a {table} row of another tenant")));
            }
            // `table` was found in TABLES, and every TABLES entry was put
            // in `columns_of` above, so the index cannot miss.
            let known = &columns_of[table];
            let mut names = Vec::new();
            let mut values = Vec::new();
            for (name, value) in data {
                if Some(name.as_str()) == *generated {
                    continue;
                }
                let Some(column) = known.iter().find(|k| *k == name) else {
                    return Err(invalid(format!("unknown column {table}.{name}")));
                };
                names.push(column.clone());
                values.push(value);
            }
            let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
            let sql = format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                placeholders.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for value in values {
                query = match value {
                    Value::Null => query.bind(None::<String>),
                    Value::Bool(b) => query.bind(i64::from(*b)),
                    Value::Number(n) if n.is_i64() || n.is_u64() => query.bind(
                        n.as_i64()
                            .ok_or_else(|| invalid("integer out of range".to_owned()))?,
                    ),
                    Value::Number(n) => query.bind(n.as_f64().unwrap_or(0.0)),
                    Value::String(s) => query.bind(s.clone()),
                    Value::Object(o) => match o.get("$hex").and_then(Value::as_str) {
                        Some(h) => {
                            query.bind(hex::decode(h).map_err(|_| invalid("bad $hex".to_owned()))?)
                        }
                        None => return Err(invalid(format!("an object in {table}"))),
                    },
                    Value::Array(_) => return Err(invalid(format!("an array in {table}"))),
                };
            }
            let done = query.execute(&mut *tx).await.map_err(map_sqlx)?;
            if *table == "records" {
                let record = record_of(data)?;
                crate::records::sqlite_support::index(
                    &mut tx,
                    done.last_insert_rowid(),
                    tenant,
                    &record,
                )
                .await?;
            }
        }
        tx.commit().await.map_err(map_sqlx)
    }
}
