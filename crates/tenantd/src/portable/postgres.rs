//! [`PortableRepo`] for PostgreSQL: the tenant tables of [`TABLES`] read
//! and written column by column, with the columns taken from the database
//! catalog, so a new column travels without code here and a dump moves
//! between SQLite and PostgreSQL unchanged.
//!
//! Values go out as SQLite's export writes them: integers as numbers, text
//! as strings, `bytea` as `{"$hex": "…"}`, NULL as `null`. Left out of
//! dumps are generated columns (`records.search`, recomputed from its row)
//! and the counters of [`DERIVED`], which SQLite does not have and import
//! rebuilds. Assigned `seq` columns are exported and not carried back, as
//! on SQLite; `tenant_stats` follows the imported records through its
//! trigger.
//!
//! Dumps are administrative: both directions run on the admin role's pool.

use std::collections::HashMap;

use async_trait::async_trait;
use serde_json::Map;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, Row};
use tenancy::TenantId;

use super::{
    Cell, DATA_TABLES, Imported, PortableRepo, Row as DumpRow, SCHEMA, TABLES, Table, any_row_sql,
    checked_row, data_tables, invalid,
};
use crate::store::pg_support::map_pg;
use crate::store::{DataRows, PgStore, StoreError};
use crate::tenants::{pg_is_retired, pg_lock_registry};

// A dump's schema number means the same tables on both backends.
const _: () = assert!(crate::store::SCHEMA_VERSION == SCHEMA as i64);

/// Columns PostgreSQL stores that dumps do not carry: the job scheduler's
/// per-tenant counts of pending and running jobs, derived from
/// `detection_jobs` (SQLite counts them when it schedules; here the
/// `job_turns_count` trigger does), so they are rebuilt, not copied.
const DERIVED: &[(&str, &str)] = &[("job_turns", "pending"), ("job_turns", "running")];

/// Tables whose row an import may already have created through a trigger
/// by the time the dump's row comes, with the conflict key: the jobs
/// imported just before make `job_turns_count` insert the tenant's
/// `job_turns` row. The dump's row then sets its carried columns
/// (`last_turn`) on it instead of failing as a duplicate.
const MERGED: &[(&str, &str)] = &[("job_turns", "tenant_id")];

/// How a column's values are read and bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Text,
    Bytes,
}

impl Kind {
    /// The kind of a catalog type name; `None` for a type dumps cannot
    /// carry.
    fn of(type_name: &str) -> Option<Self> {
        Some(match type_name {
            "int2" => Kind::Int2,
            "int4" => Kind::Int4,
            "int8" => Kind::Int8,
            "float4" => Kind::Float4,
            "float8" => Kind::Float8,
            "text" | "varchar" | "bpchar" => Kind::Text,
            "bytea" => Kind::Bytes,
            _ => return None,
        })
    }
}

/// A column a dump carries, as the catalog names it.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    kind: Kind,
}

impl AsRef<str> for Column {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

/// Quotes an identifier from the catalog for dynamic SQL.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The columns of `table` a dump carries, in table order: every column of
/// the catalog but generated ones and [`DERIVED`] ones.
async fn columns(conn: &mut PgConnection, table: &str) -> Result<Vec<Column>, StoreError> {
    let found: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT a.attname::text, t.typname::text, a.attgenerated <> '' \
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
         WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_pg)?;
    if found.is_empty() {
        return Err(StoreError::Internal(
            format!("tenant table {table} not found in the PostgreSQL schema").into(),
        ));
    }
    let mut out = Vec::with_capacity(found.len());
    for (name, type_name, generated) in found {
        if generated || DERIVED.contains(&(table, name.as_str())) {
            continue;
        }
        let kind = Kind::of(&type_name).ok_or_else(|| {
            StoreError::Internal(
                format!("column {table}.{name} has type {type_name}, which dumps cannot carry")
                    .into(),
            )
        })?;
        out.push(Column { name, kind });
    }
    Ok(out)
}

/// [`columns`] of every table of [`TABLES`].
async fn catalog(
    conn: &mut PgConnection,
) -> Result<HashMap<&'static str, Vec<Column>>, StoreError> {
    let mut out = HashMap::new();
    for table in TABLES {
        out.insert(table.name, columns(conn, table.name).await?);
    }
    Ok(out)
}

/// `SELECT` of one tenant's rows of `table`, in the order SQLite reads
/// them (text compared byte by byte, as SQLite does).
fn select_sql(table: &Table, columns: &[Column]) -> Result<String, StoreError> {
    let mut order = Vec::with_capacity(table.order.len());
    for name in table.order {
        let column = columns.iter().find(|c| c.name == *name).ok_or_else(|| {
            StoreError::Internal(
                format!("{}.{name}: no such column to order by", table.name).into(),
            )
        })?;
        order.push(if column.kind == Kind::Text {
            format!("{} COLLATE \"C\"", quote(name))
        } else {
            quote(name)
        });
    }
    let list: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
    Ok(format!(
        "SELECT {} FROM {} WHERE {} = $1 ORDER BY {}",
        list.join(", "),
        table.name,
        table.tenant_column,
        order.join(", ")
    ))
}

/// Column `i` of `row` as a dump value.
fn read_cell(row: &PgRow, i: usize, kind: Kind) -> Result<Cell, StoreError> {
    let cell = match kind {
        Kind::Int2 => row
            .try_get::<Option<i16>, _>(i)
            .map_err(map_pg)?
            .map(|n| Cell::Integer(n.into())),
        Kind::Int4 => row
            .try_get::<Option<i32>, _>(i)
            .map_err(map_pg)?
            .map(|n| Cell::Integer(n.into())),
        Kind::Int8 => row
            .try_get::<Option<i64>, _>(i)
            .map_err(map_pg)?
            .map(Cell::Integer),
        Kind::Float4 => row
            .try_get::<Option<f32>, _>(i)
            .map_err(map_pg)?
            .map(|x| Cell::Real(x.into())),
        Kind::Float8 => row
            .try_get::<Option<f64>, _>(i)
            .map_err(map_pg)?
            .map(Cell::Real),
        Kind::Text => row
            .try_get::<Option<String>, _>(i)
            .map_err(map_pg)?
            .map(Cell::Text),
        Kind::Bytes => row
            .try_get::<Option<Vec<u8>>, _>(i)
            .map_err(map_pg)?
            .map(Cell::Bytes),
    };
    Ok(cell.unwrap_or(Cell::Null))
}

type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

/// Binds a dump value to a column of `table`, typed as the column is
/// (PostgreSQL does not convert text to numbers on insert); a value of
/// another kind is refused.
fn bind<'q>(
    query: PgQuery<'q>,
    table: &str,
    column: &Column,
    cell: Cell,
) -> Result<PgQuery<'q>, StoreError> {
    let wrong = |what: &str| invalid(format!("{table}.{}: not {what}", column.name));
    Ok(match column.kind {
        Kind::Int2 | Kind::Int4 | Kind::Int8 => match cell {
            Cell::Null => query.bind(None::<i64>),
            Cell::Integer(n) => query.bind(n),
            _ => return Err(wrong("an integer")),
        },
        Kind::Float4 | Kind::Float8 => match cell {
            Cell::Null => query.bind(None::<f64>),
            Cell::Real(x) => query.bind(x),
            // A whole number in a float column (exact up to 2^53).
            Cell::Integer(n) => query.bind(n as f64),
            _ => return Err(wrong("a number")),
        },
        Kind::Text => match cell {
            Cell::Null => query.bind(None::<String>),
            Cell::Text(s) => query.bind(s),
            _ => return Err(wrong("text")),
        },
        Kind::Bytes => match cell {
            Cell::Null => query.bind(None::<Vec<u8>>),
            Cell::Bytes(b) => query.bind(b),
            _ => return Err(wrong("{\"$hex\": …}")),
        },
    })
}

/// `ON CONFLICT` clause of a [`MERGED`] table's insert: the row there gets
/// the dump's values of every column but `key`.
fn merge_clause(key: &str, cells: &[(&Column, Cell)]) -> String {
    let sets: Vec<String> = cells
        .iter()
        .map(|(c, _)| quote(&c.name))
        .filter(|name| *name != quote(key))
        .map(|name| format!("{name} = excluded.{name}"))
        .collect();
    if sets.is_empty() {
        format!(" ON CONFLICT ({}) DO NOTHING", quote(key))
    } else {
        format!(
            " ON CONFLICT ({}) DO UPDATE SET {}",
            quote(key),
            sets.join(", ")
        )
    }
}

#[async_trait]
impl PortableRepo for PgStore {
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
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        // The tenant and its keys are registry rows: the registry lock
        // first (see tenants), which also makes the checks below final
        // against a concurrent create, delete or import of the same id.
        pg_lock_registry(&mut tx).await?;
        if pg_is_retired(&mut tx, tenant).await? {
            return Ok(Imported::Retired);
        }
        for table in TABLES {
            let found: Option<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(any_row_sql(table)))
                .bind(tenant.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_pg)?;
            if found.is_some() {
                return Ok(match table.name {
                    "tenants" => Imported::Exists,
                    name => Imported::Occupied(name),
                });
            }
        }
        let oidc = crate::tenants::oidc::in_dump(rows);
        crate::tenants::pg_refuse_taken_oidc(&mut tx, tenant, oidc.as_ref(), false).await?;
        insert_rows(&mut tx, tenant, rows).await?;
        // The scheduler's counts for the imported jobs (DERIVED): a tenant
        // with jobs has its job_turns row, as if it had queued them here.
        // The job_turns_count trigger has kept them already; counting
        // again keeps the import exact without relying on it.
        sqlx::query(
            "INSERT INTO job_turns (tenant_id, pending, running) \
             SELECT $1, count(*) FILTER (WHERE status = 'pending'), \
                    count(*) FILTER (WHERE status = 'running') \
             FROM detection_jobs WHERE tenant_id = $1 HAVING count(*) > 0 \
             ON CONFLICT (tenant_id) DO UPDATE SET pending = excluded.pending, \
                running = excluded.running",
        )
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?;
        self.commit(tx, None).await?;
        Ok(Imported::Written)
    }
}

#[async_trait]
impl DataRows for PgStore {
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
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        delete_data(&mut tx, tenant).await?;
        insert_rows(&mut tx, tenant, rows).await?;
        self.commit(tx, None).await
    }

    async fn delete_data_rows(&self, tenant: &TenantId) -> Result<u64, StoreError> {
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        let n = delete_data(&mut tx, tenant).await?;
        self.commit(tx, None).await?;
        Ok(n)
    }
}

/// Deletes `tenant`'s data rows (the search vector goes with its row).
async fn delete_data(conn: &mut PgConnection, tenant: &TenantId) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM records WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .execute(&mut *conn)
        .await
        .map_err(map_pg)?;
    Ok(done.rows_affected())
}

/// Writes checked dump rows of `tenant`; column names come from the
/// catalog, so a name in the file that is not one of the table's carried
/// columns is refused.
async fn insert_rows(
    conn: &mut PgConnection,
    tenant: &TenantId,
    rows: &[DumpRow],
) -> Result<(), StoreError> {
    let columns_of = catalog(&mut *conn).await?;
    for (table, data) in rows {
        let (table, cells) = checked_row(tenant, table, data, &columns_of)?;
        let names: Vec<String> = cells.iter().map(|(c, _)| quote(&c.name)).collect();
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            table.name,
            names.join(", "),
            placeholders.join(", ")
        );
        if let Some((_, key)) = MERGED.iter().find(|(t, _)| *t == table.name) {
            sql.push_str(&merge_clause(key, &cells));
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (column, cell) in cells {
            query = bind(query, table.name, column, cell)?;
        }
        query.execute(&mut *conn).await.map_err(map_pg)?;
    }
    Ok(())
}

impl PgStore {
    /// Every row of `tenant` in `tables`, in one snapshot across them.
    async fn read_tables(
        &self,
        tenant: &TenantId,
        tables: impl Iterator<Item = &'static Table> + Send,
    ) -> Result<Vec<DumpRow>, StoreError> {
        let mut tx = self
            .admin_pool()
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(map_pg)?;
        let columns_of = catalog(&mut tx).await?;
        let mut rows = Vec::new();
        for table in tables {
            let columns = columns_of.get(table.name).ok_or_else(|| {
                StoreError::Internal(format!("no columns read for {}", table.name).into())
            })?;
            let sql = select_sql(table, columns)?;
            let found = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(map_pg)?;
            for row in &found {
                let mut data = Map::new();
                for (i, column) in columns.iter().enumerate() {
                    data.insert(
                        column.name.clone(),
                        read_cell(row, i, column.kind)?.into_json(),
                    );
                }
                rows.push((table.name.to_owned(), data));
            }
        }
        tx.commit().await.map_err(map_pg)?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, kind: Kind) -> Column {
        Column {
            name: name.to_owned(),
            kind,
        }
    }

    #[test]
    fn text_order_columns_compare_bytes() {
        let records = TABLES
            .iter()
            .find(|t| t.name == "usage_counters")
            .expect("usage_counters is a dump table");
        let columns = [
            column("tenant_id", Kind::Text),
            column("month", Kind::Text),
            column("metric", Kind::Text),
            column("value", Kind::Int8),
        ];
        let sql = select_sql(records, &columns).expect("sql");
        assert_eq!(
            sql,
            "SELECT \"tenant_id\", \"month\", \"metric\", \"value\" FROM usage_counters \
             WHERE tenant_id = $1 ORDER BY \"month\" COLLATE \"C\", \"metric\" COLLATE \"C\""
        );
    }

    #[test]
    fn a_merged_row_updates_what_the_dump_carries() {
        let (tenant, turn) = (
            column("tenant_id", Kind::Text),
            column("last_turn", Kind::Int8),
        );
        let cells = [(&tenant, Cell::Text("a".into())), (&turn, Cell::Integer(3))];
        assert_eq!(
            merge_clause("tenant_id", &cells),
            " ON CONFLICT (\"tenant_id\") DO UPDATE SET \"last_turn\" = excluded.\"last_turn\""
        );
        assert_eq!(
            merge_clause("tenant_id", &cells[..1]),
            " ON CONFLICT (\"tenant_id\") DO NOTHING"
        );
    }

    #[test]
    fn catalog_types_map_to_dump_kinds() {
        assert_eq!(Kind::of("int8"), Some(Kind::Int8));
        assert_eq!(Kind::of("bytea"), Some(Kind::Bytes));
        assert_eq!(Kind::of("tsvector"), None);
    }

    #[test]
    fn a_value_of_the_wrong_kind_is_refused() {
        let query = sqlx::query("SELECT $1");
        let err = bind(
            query,
            "records",
            &column("size_bytes", Kind::Int8),
            Cell::Text("12".into()),
        )
        .err()
        .expect("refused");
        assert!(err.to_string().contains("records.size_bytes"), "{err}");
    }
}
