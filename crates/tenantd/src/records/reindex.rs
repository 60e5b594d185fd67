//! The "reindex search" data upgrade: rewrites every record's search entry
//! in the current token format (see [`super::fts`]), for SQLite databases
//! whose index was written before migration 6 (which leaves `records_fts`
//! empty). The store runs it once per database (`store::upgrade`); the
//! server composes it ([`reindex_search`]).
//!
//! Entries are written by [`search::write_entry`], the path every record
//! write takes, from the stored rows read back in batches of [`BATCH`] in
//! `seq` order, all inside the one transaction the runner commits with the
//! record of the step.

use std::sync::Arc;

use async_trait::async_trait;

use super::model::NewRecord;
use super::repo::{R_COLUMNS, decode};
use super::search;
use crate::store::{Conn, DataUpgrade, Sql, StoreError, sql};

/// Rows read and indexed per batch.
const BATCH: i64 = 1000;

/// Rows between two progress lines in the log.
const LOG_EVERY: u64 = 100_000;

/// The step of [`DataUpgrade`]: rewrite the search index with tenant
/// tokens.
pub fn reindex_search() -> Arc<dyn DataUpgrade> {
    Arc::new(ReindexSearch)
}

struct ReindexSearch;

#[async_trait]
impl DataUpgrade for ReindexSearch {
    fn name(&self) -> &'static str {
        "records: reindex search with tenant tokens"
    }

    async fn run(&self, conn: &mut Conn) -> Result<(), StoreError> {
        if !search::indexed_by_writes(conn.dialect()) {
            return Ok(());
        }
        // Entries a one-shot tool wrote after the migration (it runs no
        // upgrades) are rewritten with the rest: an FTS5 row may not be
        // written twice.
        conn.execute(sql(
            "INSERT INTO records_fts (records_fts) VALUES ('delete-all')",
        ))
        .await?;
        let mut after = 0_i64;
        let mut indexed = 0_u64;
        loop {
            let rows = conn
                .fetch_all(
                    Sql::owned(format!(
                        "SELECT {R_COLUMNS}, r.seq FROM records r \
                         WHERE r.seq > $1 ORDER BY r.seq LIMIT $2"
                    ))
                    .bind(after)
                    .bind(BATCH),
                )
                .await?;
            for row in &rows {
                let seq: i64 = row.get(10)?;
                let record = decode(row)?;
                let new = NewRecord {
                    kind: record.kind,
                    name: record.name,
                    url: record.url,
                    description: record.description,
                    tags: record.tags,
                    fields: record.fields,
                };
                search::write_entry(conn, seq, &record.tenant_id, &new).await?;
                after = seq;
                indexed += 1;
                if indexed.is_multiple_of(LOG_EVERY) {
                    tracing::info!(rows = indexed, "reindexing search: in progress");
                }
            }
            if rows.len() < usize::try_from(BATCH).unwrap_or(usize::MAX) {
                break;
            }
        }
        tracing::info!(rows = indexed, "reindexing search: done");
        Ok(())
    }
}
