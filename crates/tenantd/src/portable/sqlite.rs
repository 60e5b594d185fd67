//! [`PortableRepo`] for SQLite: tenant tables read and written column by
//! column, so a new column travels without code here.

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, Row, TypeInfo, ValueRef};
use tenancy::TenantId;

use super::{
    Cell, DATA_TABLES, Imported, PortableRepo, Row as DumpRow, SCHEMA, TABLES, Table, any_row_sql,
    checked_row, data_tables, invalid,
};
use crate::records::NewRecord;
use crate::store::sqlite_support::map_sqlx;
use crate::store::{DataRows, SqliteStore, StoreError};
use crate::tenants::sqlite_is_retired;

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
                "BLOB" => Cell::Bytes(row.try_get(i).map_err(map_sqlx)?).into_json(),
                _ => Value::from(row.try_get::<String, _>(i).map_err(map_sqlx)?),
            }
        };
        out.insert(column.name().to_owned(), value);
    }
    Ok(out)
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
        self.read_tables(tenant, TABLES.iter()).await
    }

    async fn import_rows(
        &self,
        tenant: &TenantId,
        rows: &[DumpRow],
    ) -> Result<Imported, StoreError> {
        // One writer at a time (BEGIN IMMEDIATE): the checks below hold
        // until the rows are committed.
        let mut tx = self.write_tx().await?;
        if sqlite_is_retired(&mut tx, tenant).await? {
            return Ok(Imported::Retired);
        }
        for table in TABLES {
            let found: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(any_row_sql(table)))
                .bind(tenant.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_sqlx)?;
            if found.is_some() {
                return Ok(match table.name {
                    "tenants" => Imported::Exists,
                    name => Imported::Occupied(name),
                });
            }
        }
        let oidc = crate::tenants::oidc::in_dump(rows);
        crate::tenants::sqlite_refuse_taken_oidc(&mut tx, tenant, oidc.as_ref(), false).await?;
        insert_rows(&mut tx, tenant, rows).await?;
        self.commit(tx).await?;
        Ok(Imported::Written)
    }
}

#[async_trait]
impl DataRows for SqliteStore {
    async fn data_rows(&self, tenant: &TenantId) -> Result<Vec<DumpRow>, StoreError> {
        self.read_tables(tenant, data_tables()).await
    }

    async fn replace_data_rows(
        &self,
        tenant: &TenantId,
        rows: &[DumpRow],
    ) -> Result<(), StoreError> {
        if let Some((table, _)) = rows
            .iter()
            .find(|(t, _)| !DATA_TABLES.contains(&t.as_str()))
        {
            return Err(invalid(format!("{table} rows do not move between tiers")));
        }
        let mut tx = self.write_tx().await?;
        delete_data(&mut tx, tenant).await?;
        insert_rows(&mut tx, tenant, rows).await?;
        self.commit(tx).await
    }

    async fn delete_data_rows(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let mut tx = self.write_tx().await?;
        let n = delete_data(&mut tx, tenant).await?;
        self.commit(tx).await?;
        Ok(n)
    }
}

/// Deletes `tenant`'s data rows and their search index entries.
async fn delete_data(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    tenant: &TenantId,
) -> Result<u64, StoreError> {
    sqlx::query(
        "DELETE FROM records_fts WHERE rowid IN (SELECT seq FROM records WHERE tenant_id = ?1)",
    )
    .bind(tenant.as_str())
    .execute(&mut **tx)
    .await
    .map_err(map_sqlx)?;
    let done = sqlx::query("DELETE FROM records WHERE tenant_id = ?1")
        .bind(tenant.as_str())
        .execute(&mut **tx)
        .await
        .map_err(map_sqlx)?;
    Ok(done.rows_affected())
}

impl SqliteStore {
    /// Every row of `tenant` in `tables`, in one read transaction (a
    /// consistent snapshot across them).
    async fn read_tables(
        &self,
        tenant: &TenantId,
        tables: impl Iterator<Item = &'static Table>,
    ) -> Result<Vec<DumpRow>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        let mut rows = Vec::new();
        for table in tables {
            let sql = format!(
                "SELECT * FROM {} WHERE {} = ?1 ORDER BY {}",
                table.name,
                table.tenant_column,
                table.order.join(", ")
            );
            let found = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(map_sqlx)?;
            for row in &found {
                rows.push((table.name.to_owned(), to_json(row)?));
            }
        }
        tx.commit().await.map_err(map_sqlx)?;
        Ok(rows)
    }
}

/// Writes checked dump rows of `tenant` (search index included) in `tx`.
async fn insert_rows(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    tenant: &TenantId,
    rows: &[DumpRow],
) -> Result<(), StoreError> {
    {
        // Column names come from the file: only the table's own columns
        // are accepted, so nothing from the file reaches SQL as text.
        let mut columns_of = std::collections::HashMap::new();
        for table in TABLES {
            let names: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT name FROM pragma_table_info('{}')",
                table.name
            )))
            .fetch_all(&mut **tx)
            .await
            .map_err(map_sqlx)?;
            columns_of.insert(table.name, names);
        }
        for (table, data) in rows {
            let (table, cells) = checked_row(tenant, table, data, &columns_of)?;
            let names: Vec<&str> = cells.iter().map(|(name, _)| name.as_str()).collect();
            let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
            let sql = format!(
                "INSERT INTO {} ({}) VALUES ({})",
                table.name,
                names.join(", "),
                placeholders.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (_, cell) in cells {
                query = match cell {
                    Cell::Null => query.bind(None::<String>),
                    Cell::Integer(n) => query.bind(n),
                    Cell::Real(x) => query.bind(x),
                    Cell::Text(s) => query.bind(s),
                    Cell::Bytes(b) => query.bind(b),
                };
            }
            let done = query.execute(&mut **tx).await.map_err(map_sqlx)?;
            if table.name == "records" {
                let record = record_of(data)?;
                crate::records::sqlite_support::index(
                    tx,
                    done.last_insert_rowid(),
                    tenant,
                    &record,
                )
                .await?;
            }
        }
    }
    Ok(())
}
