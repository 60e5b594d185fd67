//! Where a tenant's binding puts its records: the decision the storage
//! core leaves to the registry, which owns [`StorageBinding`]. The core
//! only opens the [`Target`] it is given.

use std::path::Path;

use tenancy::TenantId;

use super::model::StorageBinding;
use crate::config::is_postgres_url;
use crate::store::Target;

impl StorageBinding {
    /// Where a tenant bound by this binding keeps its records: `None` for
    /// the shared database. `isolation: dedicated` with a `postgres://`
    /// URL is a PostgreSQL database (`database` overrides the URL's);
    /// without a URL, or with one tenantd cannot use (a MongoDB
    /// `mongo_uri`), it is a SQLite file under `data_dir/tenants/`.
    pub fn target(&self, data_dir: &Path, tenant: &TenantId) -> Option<Target> {
        if self.isolation.as_deref() != Some("dedicated") {
            return None;
        }
        Some(match self.url.as_deref() {
            Some(url) if is_postgres_url(url) => Target::postgres(url, self.database.as_deref()),
            _ => Target::Sqlite(Target::sqlite_file(data_dir, tenant)),
        })
    }
}

/// [`StorageBinding::target`] of a tenant that may have no binding.
pub fn target(
    data_dir: &Path,
    tenant: &TenantId,
    binding: Option<&StorageBinding>,
) -> Option<Target> {
    binding?.target(data_dir, tenant)
}
