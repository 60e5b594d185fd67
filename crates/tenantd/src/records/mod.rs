//! Tenant-scoped records: create, replace, get, delete, list and
//! full-text search. Every operation runs inside one tenant's
//! [`TenantStore`](crate::store::TenantStore).

mod fts;
pub mod http;
mod model;
mod reindex;
mod repo;
mod rows;
pub(crate) mod search;

use async_trait::async_trait;

use crate::store::{StoreError, TenantScope, TenantStore};

pub(crate) use model::page_cursor;
pub use model::{
    DEFAULT_LIMIT, MAX_LIMIT, NewRecord, Record, RecordId, RecordInput, SearchHit, SearchPage,
    SearchQuery, SearchRequest, check_limit, decode_cursor, encode_cursor,
};
pub use reindex::reindex_search;
/// For a completed job's record, in the job's transaction.
pub(crate) use repo::upsert_in;
pub use rows::DataRows;
/// A record's search entry as SQLite stores it, for bulk loaders (the
/// benchmark's) that must write exactly what the server writes.
pub use search::{INDEX_SQL as SEARCH_INDEX_SQL, fts_columns as search_columns};

/// Why a records operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// No such record *in this tenant* (another tenant's id looks the same).
    #[error("Record {0} not found or access denied")]
    NotFound(String),
    /// `(kind, name)` is taken inside this tenant.
    #[error("A record of kind '{kind}' named '{name}' already exists")]
    Conflict {
        /// The kind of the clashing record.
        kind: String,
        /// Its name.
        name: String,
    },
    /// A field of the request is not acceptable.
    #[error("{field}: {reason}")]
    Invalid {
        /// The offending field. (a path for nested values: `fields.lang`).
        field: String,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RecordsError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A NUL in a text field ([`crate::input`]) names its field like any
/// other invalid value.
impl From<crate::input::TextError> for RecordsError {
    fn from(e: crate::input::TextError) -> Self {
        Self::invalid(e.field, "must not contain the NUL character (U+0000)")
    }
}

/// Record storage, implemented once on [`crate::store::Db`]. Every method
/// takes the [`TenantScope`] it is confined to.
#[async_trait]
pub trait RecordRepo: Send + Sync {
    /// Inserts a record; `(kind, name)` must be free in the tenant.
    async fn create_record(
        &self,
        scope: &TenantScope,
        new: NewRecord,
    ) -> Result<Record, StoreError>;
    /// The record `id` of the tenant, if any.
    async fn get_record(
        &self,
        scope: &TenantScope,
        id: &RecordId,
    ) -> Result<Option<Record>, StoreError>;
    /// Replaces the content of record `id`; `None` when it does not exist.
    async fn replace_record(
        &self,
        scope: &TenantScope,
        id: &RecordId,
        new: NewRecord,
    ) -> Result<Option<Record>, StoreError>;
    /// Inserts or replaces the record `(kind, name)` (used by jobs).
    async fn upsert_record(
        &self,
        scope: &TenantScope,
        new: NewRecord,
    ) -> Result<Record, StoreError>;
    /// Deletes record `id`; false when it did not exist.
    async fn delete_record(&self, scope: &TenantScope, id: &RecordId) -> Result<bool, StoreError>;
    /// Full-text search (or a filtered listing when the query has no terms).
    async fn search_records(
        &self,
        scope: &TenantScope,
        query: &SearchQuery,
    ) -> Result<SearchPage, StoreError>;
}

/// The records operations of one tenant, on the database holding its
/// records (shared or dedicated). Writes are refused while a move switches
/// that database.
impl TenantStore {
    /// Creates a record; 409-style conflict when `(kind, name)` is taken.
    pub async fn create_record(&self, new: NewRecord) -> Result<Record, RecordsError> {
        let (kind, name) = (new.kind.clone(), new.name.clone());
        self.check_writable()?;
        let (scope, db) = self.records_db().await?;
        db.create_record(scope, new)
            .await
            .map_err(|e| conflict_or(e, kind, name))
    }

    /// Reads a record of this tenant.
    pub async fn get_record(&self, id: &RecordId) -> Result<Record, RecordsError> {
        let (scope, db) = self.records_db().await?;
        db.get_record(scope, id)
            .await?
            .ok_or_else(|| RecordsError::NotFound(id.to_string()))
    }

    /// Replaces a record of this tenant.
    pub async fn replace_record(
        &self,
        id: &RecordId,
        new: NewRecord,
    ) -> Result<Record, RecordsError> {
        let (kind, name) = (new.kind.clone(), new.name.clone());
        self.check_writable()?;
        let (scope, db) = self.records_db().await?;
        db.replace_record(scope, id, new)
            .await
            .map_err(|e| conflict_or(e, kind, name))?
            .ok_or_else(|| RecordsError::NotFound(id.to_string()))
    }

    /// Creates or replaces the record `(kind, name)`.
    pub async fn upsert_record(&self, new: NewRecord) -> Result<Record, RecordsError> {
        self.check_writable()?;
        let (scope, db) = self.records_db().await?;
        Ok(db.upsert_record(scope, new).await?)
    }

    /// Deletes a record of this tenant.
    pub async fn delete_record(&self, id: &RecordId) -> Result<(), RecordsError> {
        self.check_writable()?;
        let (scope, db) = self.records_db().await?;
        if db.delete_record(scope, id).await? {
            Ok(())
        } else {
            Err(RecordsError::NotFound(id.to_string()))
        }
    }

    /// Searches this tenant's records.
    pub async fn search_records(&self, query: &SearchQuery) -> Result<SearchPage, RecordsError> {
        let (scope, db) = self.records_db().await?;
        Ok(db.search_records(scope, query).await?)
    }
}

fn conflict_or(error: StoreError, kind: String, name: String) -> RecordsError {
    match error {
        StoreError::Conflict(_) => RecordsError::Conflict { kind, name },
        other => RecordsError::Store(other),
    }
}
