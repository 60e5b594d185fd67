//! Many rows in one statement: a `VALUES ($1, $2), ($3, $4), …` list
//! both engines accept, cut into chunks under their parameter limits.
//!
//! Why: the batched writers (usage flush, audit group commit, month
//! close) write hundreds of rows per transaction; one statement per row
//! would be one round trip per row on PostgreSQL. Rows go in in the order
//! given, so a caller that sorts them takes row locks in one order.

use super::StoreError;
use super::sql::{Conn, Sql};

/// Parameters one statement binds at most: well under SQLite's limit
/// (32,766) and PostgreSQL's (65,535).
const MAX_PARAMS: usize = 8_192;

/// How many rows of `width` parameters one statement carries.
pub fn rows_per_statement(width: usize) -> usize {
    (MAX_PARAMS / width.max(1)).max(1)
}

/// `rows` tuples of `width` numbered placeholders, the first `$first`:
/// `values_list(3, 2, 2)` is `($3, $4), ($5, $6)`.
pub fn values_list(first: usize, rows: usize, width: usize) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|row| {
            let start = first + row * width;
            let params: Vec<String> = (start..start + width).map(|i| format!("${i}")).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    tuples.join(", ")
}

/// Runs one statement per chunk of `rows`, in order: `statement` gets the
/// chunk's `VALUES` list (placeholders from `$lead + 1`) and returns the
/// statement with its `lead` leading parameters bound; `bind` binds one
/// row's `width` values. Returns the rows changed.
pub async fn execute_rows<T: Sync>(
    conn: &mut Conn,
    lead: usize,
    rows: &[T],
    width: usize,
    statement: impl Fn(&str) -> Sql + Send,
    bind: impl Fn(Sql, &T) -> Sql + Send,
) -> Result<u64, StoreError> {
    let mut changed = 0;
    for chunk in rows.chunks(rows_per_statement(width)) {
        let mut sql = statement(&values_list(lead + 1, chunk.len(), width));
        for row in chunk {
            sql = bind(sql, row);
        }
        changed += conn.execute(sql).await?;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::{MAX_PARAMS, rows_per_statement, values_list};

    #[test]
    fn placeholders_number_on_from_the_first() {
        assert_eq!(values_list(3, 2, 2), "($3, $4), ($5, $6)");
        assert_eq!(values_list(1, 1, 3), "($1, $2, $3)");
        assert_eq!(values_list(1, 0, 3), "");
        assert_eq!(rows_per_statement(16), 512);
        assert_eq!(rows_per_statement(0), MAX_PARAMS);
    }
}
