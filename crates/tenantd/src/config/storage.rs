//! `storage:`: which backend holds the data, how tenantd connects to it,
//! and the dedicated tier's pools.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Storage backend selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Embedded SQLite under `data_dir` (the default: no server needed).
    #[default]
    Sqlite,
    /// PostgreSQL, shared schema with row-level security (`storage.url`).
    Postgres,
}

/// What tenantd does when its PostgreSQL isolation check finds a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RlsCheck {
    /// Refuse to start (the default: isolation is not optional).
    #[default]
    Refuse,
    /// Start, logging each problem as a warning.
    Warn,
}

/// Storage settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Which backend holds the data.
    pub backend: Backend,
    /// Directory of the SQLite database (created if missing).
    pub data_dir: PathBuf,
    /// Connections in the pool. SQLite serialises writers, so more than a
    /// few helps only concurrent readers.
    pub max_connections: u32,
    /// PostgreSQL: the application role's URL (`TENANTD_STORAGE_URL`).
    /// The role must not own the tables nor bypass row-level security;
    /// every tenant request runs through it.
    pub url: Option<String>,
    /// PostgreSQL: the administrative role's URL
    /// (`TENANTD_STORAGE_ADMIN_URL`), used only by the explicitly
    /// cross-tenant paths (registry, admin API, job scheduler, usage
    /// writer, billing). It needs `BYPASSRLS`, not ownership.
    pub admin_url: Option<String>,
    /// PostgreSQL: the owner role's URL (`TENANTD_STORAGE_MIGRATE_URL`).
    /// When set, tenantd migrates the schema with it at startup and grants
    /// the app and admin roles what they need; when unset, the schema must
    /// already be migrated.
    pub migrate_url: Option<String>,
    /// PostgreSQL: the startup isolation check's verdict on a problem.
    pub rls_check: RlsCheck,
    /// Dedicated tenants: at most this many of their pools open at once
    /// (least recently used closed first).
    pub max_open_tenant_pools: usize,
    /// Dedicated tenants: a pool unused this long is closed.
    pub tenant_pool_idle_secs: u64,
    /// Dedicated tenants: open every pool at startup (one log line per
    /// tenant) instead of on first use.
    pub eager: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            data_dir: PathBuf::from("./data"),
            max_connections: 8,
            url: None,
            admin_url: None,
            migrate_url: None,
            rls_check: RlsCheck::Refuse,
            max_open_tenant_pools: 64,
            tenant_pool_idle_secs: 300,
            eager: false,
        }
    }
}

impl StorageConfig {
    /// The backend-specific problems of this section (each naming its key).
    pub(super) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.backend == Backend::Postgres {
            for (key, url) in [
                ("storage.url", &self.url),
                ("storage.admin_url", &self.admin_url),
            ] {
                match url.as_deref() {
                    None | Some("") => {
                        problems.push(format!("{key}: required with storage.backend postgres"));
                    }
                    Some(u) if !is_postgres_url(u) => {
                        problems.push(format!("{key}: must be a postgres:// URL"));
                    }
                    Some(_) => {}
                }
            }
        }
        if self.max_open_tenant_pools == 0 {
            problems.push("storage.max_open_tenant_pools: must be greater than 0".to_owned());
        }
        problems
    }
}

/// Whether `url` names a PostgreSQL server. Config decides the backend from
/// the URL's scheme, so the rule lives here and `store` reads it (config
/// imports no store or feature: `docs/architecture.md`, "Crates").
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}
