//! tenantd: a multi-tenant records and jobs server built on [`tenancy`].
//!
//! Layout follows features: [`records`] (model, storage trait, SQL, HTTP),
//! [`jobs`] (detection jobs: queue, workers, git inspection, HTTP),
//! [`tenants`] (the registry, admin API, static tenants), [`keys`] (API
//! keys and JWT verification), [`store`] (the tenant-scoped storage handle
//! and backends), [`limits`] (rate-limit policy and quotas), [`usage`]
//! (metering and reports), [`portable`] (one tenant's export/import), [`billing`] (month-close events and their
//! webhook), [`audit`] (the hash-chained log), [`metrics`], [`config`],
//! and the glue in [`app`], [`error`], [`extract`] and [`server`].

pub mod app;
pub mod audit;
pub mod billing;
pub mod clock;
pub mod config;
pub mod error;
pub mod extract;
pub mod health;
pub mod input;
pub mod jobs;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod portable;
pub mod records;
pub mod redact;
pub mod routes;
pub mod server;
pub mod store;
pub mod task;
pub mod telemetry;
pub mod tenants;
pub mod usage;

pub use app::{AppParts, AppState};
pub use config::Config;
pub use server::Server;
