//! Tenant tables read and written column by column, on either engine, with
//! the columns taken from the database's own catalog: a new column travels
//! without code here, and a dump moves between SQLite and PostgreSQL
//! unchanged.
//!
//! Values go out as SQLite stores them: integers as numbers, text as
//! strings, blobs (`bytea`) as `{"$hex": "…"}`, NULL as `null`. Left out of
//! dumps are generated columns (PostgreSQL's `records.search`, recomputed
//! from its row) and the counters of [`DERIVED`], which SQLite does not
//! have and import rebuilds. Assigned `seq` columns are exported and not
//! carried back; `tenant_stats` follows the imported records through its
//! trigger, and SQLite's search index is written row by row.
//!
//! The engines differ only in how a column is known: PostgreSQL's catalog
//! gives each column a type, to read and bind its values as (PostgreSQL
//! does not convert text to numbers on insert); SQLite's columns take any
//! value, read and bound as each value is stored ([`Kind::Any`]).

use std::collections::HashMap;

use serde_json::{Map, Value};
use tenancy::TenantId;

use super::{Cell, Row as DumpRow, TABLES, Table, checked_row, invalid};
use crate::records::NewRecord;
use crate::records::search;
use crate::store::{Arg, Conn, Dialect, Row, Sql, StoreError, StoredType, sql};

/// Columns PostgreSQL stores that dumps do not carry: the job scheduler's
/// per-tenant counts of pending and running jobs, derived from
/// `detection_jobs` (SQLite counts them when it schedules; PostgreSQL's
/// `job_turns_count` trigger does), so they are rebuilt, not copied.
const DERIVED: &[(&str, &str)] = &[("job_turns", "pending"), ("job_turns", "running")];

/// Tables whose row an import may already have created through a trigger
/// by the time the dump's row comes, with the conflict key: on PostgreSQL
/// the jobs imported just before make `job_turns_count` insert the
/// tenant's `job_turns` row. The dump's row then sets its carried columns
/// (`last_turn`) on it instead of failing as a duplicate.
const MERGED: &[(&str, &str)] = &[("job_turns", "tenant_id")];

/// How a column's values are read and bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A SQLite column: any value, as stored.
    Any,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Text,
    Bytes,
}

impl Kind {
    /// The kind of a PostgreSQL catalog type name; `None` for a type dumps
    /// cannot carry.
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
pub(crate) struct Column {
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

/// The columns of `table` as the engine's catalog lists them: name, kind,
/// whether generated.
async fn catalog_columns(
    conn: &mut Conn,
    table: &str,
) -> Result<Vec<(String, Option<Kind>, bool)>, StoreError> {
    match conn.dialect() {
        Dialect::Sqlite => {
            // `table` is one of TABLES' constant names.
            let text = format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid");
            let rows = conn.fetch_all(Sql::owned(text)).await?;
            rows.iter()
                .map(|row| Ok((row.get(0)?, Some(Kind::Any), false)))
                .collect()
        }
        Dialect::Postgres => {
            let rows = conn
                .fetch_all(
                    sql(
                        "SELECT a.attname::text, t.typname::text, a.attgenerated <> '' \
                         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                         WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 \
                         AND NOT a.attisdropped ORDER BY a.attnum",
                    )
                    .bind(table),
                )
                .await?;
            rows.iter()
                .map(|row| {
                    let type_name: String = row.get(1)?;
                    Ok((row.get(0)?, Kind::of(&type_name), row.get(2)?))
                })
                .collect()
        }
    }
}

/// The columns of `table` a dump carries, in table order: every column of
/// the catalog but generated ones and [`DERIVED`] ones.
async fn columns(conn: &mut Conn, table: &str) -> Result<Vec<Column>, StoreError> {
    let found = catalog_columns(conn, table).await?;
    if found.is_empty() {
        return Err(StoreError::Internal(
            format!("tenant table {table} not found in the schema").into(),
        ));
    }
    let mut out = Vec::with_capacity(found.len());
    for (name, kind, generated) in found {
        if generated || DERIVED.contains(&(table, name.as_str())) {
            continue;
        }
        let kind = kind.ok_or_else(|| {
            StoreError::Internal(
                format!("column {table}.{name} has a type dumps cannot carry").into(),
            )
        })?;
        out.push(Column { name, kind });
    }
    Ok(out)
}

/// [`columns`] of every table of [`TABLES`].
async fn catalog(conn: &mut Conn) -> Result<HashMap<&'static str, Vec<Column>>, StoreError> {
    let mut out = HashMap::new();
    for table in TABLES {
        out.insert(table.name, columns(conn, table.name).await?);
    }
    Ok(out)
}

/// `SELECT` of one tenant's rows of `table`, in the order SQLite reads
/// them (text compared byte by byte, as SQLite does by default).
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
fn read_cell(row: &Row, i: usize, kind: Kind) -> Result<Cell, StoreError> {
    let cell = match kind {
        Kind::Any => return read_stored(row, i),
        Kind::Int2 => row.get::<Option<i16>>(i)?.map(|n| Cell::Integer(n.into())),
        Kind::Int4 => row.get::<Option<i32>>(i)?.map(|n| Cell::Integer(n.into())),
        Kind::Int8 => row.get::<Option<i64>>(i)?.map(Cell::Integer),
        Kind::Float4 => row.get::<Option<f32>>(i)?.map(|x| Cell::Real(x.into())),
        Kind::Float8 => row.get::<Option<f64>>(i)?.map(Cell::Real),
        Kind::Text => row.get::<Option<String>>(i)?.map(Cell::Text),
        Kind::Bytes => row.get::<Option<Vec<u8>>>(i)?.map(Cell::Bytes),
    };
    Ok(cell.unwrap_or(Cell::Null))
}

/// Column `i` of a SQLite row, read as the value is stored (a column's
/// declared type does not bind its values there).
fn read_stored(row: &Row, i: usize) -> Result<Cell, StoreError> {
    Ok(match row.stored_type(i)? {
        None => Cell::Null,
        Some(StoredType::Integer) => Cell::Integer(row.get(i)?),
        Some(StoredType::Real) => Cell::Real(row.get(i)?),
        Some(StoredType::Blob) => Cell::Bytes(row.get(i)?),
        Some(StoredType::Text) => Cell::Text(row.get(i)?),
    })
}

/// A dump value as the argument for a column of `table`, typed as the
/// column is; a value of another kind is refused (a SQLite column takes
/// any).
fn cell_arg(table: &str, column: &Column, cell: Cell) -> Result<Arg, StoreError> {
    let wrong = |what: &str| invalid(format!("{table}.{}: not {what}", column.name));
    Ok(match (column.kind, cell) {
        (Kind::Any, Cell::Null) => Arg::Text(None),
        (Kind::Any, Cell::Integer(n)) => Arg::Int(Some(n)),
        (Kind::Any, Cell::Real(x)) => Arg::Real(Some(x)),
        (Kind::Any | Kind::Text, Cell::Text(s)) => Arg::Text(Some(s)),
        (Kind::Any | Kind::Bytes, Cell::Bytes(b)) => Arg::Bytes(Some(b)),
        (Kind::Int2 | Kind::Int4 | Kind::Int8, Cell::Null) => Arg::Int(None),
        (Kind::Int2 | Kind::Int4 | Kind::Int8, Cell::Integer(n)) => Arg::Int(Some(n)),
        (Kind::Int2 | Kind::Int4 | Kind::Int8, _) => return Err(wrong("an integer")),
        (Kind::Float4 | Kind::Float8, Cell::Null) => Arg::Real(None),
        (Kind::Float4 | Kind::Float8, Cell::Real(x)) => Arg::Real(Some(x)),
        // A whole number in a float column (exact up to 2^53).
        (Kind::Float4 | Kind::Float8, Cell::Integer(n)) => Arg::Real(Some(n as f64)),
        (Kind::Float4 | Kind::Float8, _) => return Err(wrong("a number")),
        (Kind::Text, Cell::Null) => Arg::Text(None),
        (Kind::Text, _) => return Err(wrong("text")),
        (Kind::Bytes, Cell::Null) => Arg::Bytes(None),
        (Kind::Bytes, _) => return Err(wrong("{\"$hex\": …}")),
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

/// Every row of `tenant` in `tables`, read on `conn` (a snapshot, for a
/// consistent read across them).
pub(crate) async fn read_tables(
    conn: &mut Conn,
    tenant: &TenantId,
    tables: impl Iterator<Item = &'static Table> + Send,
) -> Result<Vec<DumpRow>, StoreError> {
    let columns_of = catalog(conn).await?;
    let mut rows = Vec::new();
    for table in tables {
        let columns = columns_of.get(table.name).ok_or_else(|| {
            StoreError::Internal(format!("no columns read for {}", table.name).into())
        })?;
        let text = select_sql(table, columns)?;
        let found = conn.fetch_all(Sql::owned(text).bind(tenant)).await?;
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
    Ok(rows)
}

/// Writes checked dump rows of `tenant` in `conn` (search entries
/// included). Column names come from the catalog, so a name in the file
/// that is not one of the table's carried columns is refused and nothing
/// from the file reaches SQL as text.
pub(crate) async fn insert_rows(
    conn: &mut Conn,
    tenant: &TenantId,
    rows: &[DumpRow],
) -> Result<(), StoreError> {
    let columns_of = catalog(conn).await?;
    let index = search::indexed_by_writes(conn.dialect());
    for (table, data) in rows {
        let (table, cells) = checked_row(tenant, table, data, &columns_of)?;
        let names: Vec<String> = cells.iter().map(|(c, _)| quote(&c.name)).collect();
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let mut text = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            table.name,
            names.join(", "),
            placeholders.join(", ")
        );
        if let Some((_, key)) = MERGED.iter().find(|(t, _)| *t == table.name) {
            text.push_str(&merge_clause(key, &cells));
        }
        let indexed = index && table.name == "records";
        if indexed {
            text.push_str(" RETURNING seq");
        }
        let mut statement = Sql::owned(text);
        for (column, cell) in cells {
            statement = statement.bind(cell_arg(table.name, column, cell)?);
        }
        if indexed {
            let seq: i64 = conn.scalar(statement).await?;
            search::index(conn, seq, tenant, &record_of(data)?).await?;
        } else {
            conn.execute(statement).await?;
        }
    }
    Ok(())
}

/// A dump's record row as the search indexer wants it.
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
        let err = cell_arg(
            "records",
            &column("size_bytes", Kind::Int8),
            Cell::Text("12".into()),
        )
        .expect_err("refused");
        assert!(err.to_string().contains("records.size_bytes"), "{err}");
        let any = column("size_bytes", Kind::Any);
        assert_eq!(
            cell_arg("records", &any, Cell::Text("12".into())).expect("any"),
            Arg::Text(Some("12".into()))
        );
    }
}
