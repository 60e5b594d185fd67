//! `tenantd tenants …` and `tenantd keys …`: the admin API's operations on
//! a data directory, for operators with shell access. Output is JSON on
//! stdout; errors go to stderr with exit status 1 (2 for usage/config).
//!
//! A running server on the same data directory notices these changes
//! within `auth.registry_poll_ms`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;
use tenancy::{KeyHasher, TenantId};

use super::model::{CreateTenant, PatchTenant};
use super::registry::Registry;
use super::service::TenantAdmin;
use super::{TenantFilter, TenantState, TenantsError};
use crate::clock::Clock;
use crate::config::Config;
use crate::keys::{IssueKey, pepper};
use crate::limits::PlanBook;
use crate::portable::{DumpKey, Trust};
use crate::store::{DataUpgrades, Store};

/// `tenantd tenants …`.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant and print it with its first API key.
    Create {
        /// Tenant id.
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Contact email.
        #[arg(long)]
        email: Option<String>,
        /// Plan.
        #[arg(long)]
        plan: Option<String>,
        /// Do not issue a first API key.
        #[arg(long)]
        no_key: bool,
    },
    /// List tenants.
    List {
        /// `active` or `suspended`.
        #[arg(long)]
        status: Option<String>,
        /// Only this plan.
        #[arg(long)]
        plan: Option<String>,
        /// Page size.
        #[arg(long, default_value_t = 1000)]
        limit: u64,
        /// Ids after this one.
        #[arg(long)]
        after: Option<String>,
    },
    /// Move a tenant's records to the shared database or to a database of
    /// its own: copy, verify (count and checksum), switch, delete the
    /// source. Writes pause (503 tenant_moving) only during the switch.
    /// Re-running a move that crashed finishes it.
    Move {
        /// Tenant id.
        id: String,
        /// `dedicated` or `shared`.
        #[arg(long, value_parser = ["dedicated", "shared"])]
        to: String,
        /// With `--to dedicated`: a postgres:// URL of the tenant's
        /// database (default: a SQLite file under data_dir/tenants/).
        #[arg(long)]
        url: Option<String>,
    },
    /// Show one tenant.
    Show {
        /// Tenant id.
        id: String,
    },
    /// Change a tenant with a JSON patch (same fields as the admin API's PATCH).
    Update {
        /// Tenant id.
        id: String,
        /// The patch, e.g. '{"plan": "pro", "security": {"allowed_ips": ["10.0.0.0/8"]}}'.
        #[arg(long, value_name = "JSON")]
        set: String,
    },
    /// Suspend a tenant (its requests get 403 `tenant_suspended`).
    Suspend {
        /// Tenant id.
        id: String,
    },
    /// Resume a suspended tenant.
    Resume {
        /// Tenant id.
        id: String,
    },
    /// Write a portable dump of one tenant (NDJSON, versioned, with a
    /// checksum): records, jobs, keys as hashes, usage, audit chain. Signed
    /// with the dump key (HMAC-SHA256), or explicitly `--unsigned`.
    #[command(group(clap::ArgGroup::new("signing").required(true).args(["dump_key_file", "unsigned"])))]
    Export {
        /// Tenant id.
        id: String,
        /// Write here instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
        /// The dump key to sign with: a file of at least 32 bytes (its
        /// text used as is, e.g. `openssl rand -hex 32`), not readable by
        /// other users.
        #[arg(long, value_name = "FILE")]
        dump_key_file: Option<std::path::PathBuf>,
        /// Write an unsigned dump (importing it then needs --unsigned).
        #[arg(long)]
        unsigned: bool,
    },
    /// Load a dump made by `export` (`-` reads stdin). The id must be new
    /// here (not a tenant, not a deleted tenant's retired id); the file is
    /// checked entirely, its signature first, before anything is written.
    #[command(group(clap::ArgGroup::new("trust").required(true).args(["dump_key_file", "unsigned"])))]
    Import {
        /// The dump.
        file: std::path::PathBuf,
        /// The dump key the dump was signed with; a dump without a valid
        /// HMAC under it is refused.
        #[arg(long, value_name = "FILE")]
        dump_key_file: Option<std::path::PathBuf>,
        /// Import without checking where the dump came from (recorded in
        /// the operator's audit chain as tenants.import_unsigned).
        #[arg(long)]
        unsigned: bool,
    },
    /// Delete a tenant and all its data.
    Delete {
        /// Tenant id.
        id: String,
        /// Confirm: the tenant's records, jobs and keys are removed.
        #[arg(long)]
        yes: bool,
    },
}

/// `tenantd keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Issue a key (printed once).
    Issue {
        /// Tenant id.
        tenant: String,
        /// Label.
        #[arg(long)]
        name: Option<String>,
        /// RFC 3339 expiry.
        #[arg(long)]
        expires_at: Option<String>,
        /// Scope (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// List a tenant's keys (no secrets).
    List {
        /// Tenant id.
        tenant: String,
    },
    /// Revoke a key.
    Revoke {
        /// Tenant id.
        tenant: String,
        /// Key id.
        key_id: String,
    },
    /// Replace a key; the old one works for `--grace-seconds`.
    Rotate {
        /// Tenant id.
        tenant: String,
        /// Key id.
        key_id: String,
        /// Seconds the old key keeps working.
        #[arg(long, default_value_t = 0)]
        grace_seconds: u64,
    },
}

async fn admin(config: &Config) -> anyhow::Result<(TenantAdmin, Store)> {
    // A one-shot verb leaves pending data upgrades to the server.
    let store = Store::open(
        &config.storage,
        2,
        crate::clock::Clock::system(),
        DataUpgrades::none(),
    )
    .await?;
    let pepper =
        pepper::load_or_create(&config.storage.data_dir, config.auth.key_pepper.as_deref())?;
    // The CLI is its own process: the system clock.
    let clock = Clock::system();
    let registry = Arc::new(Registry::new(
        config.tenant.registry,
        Arc::new(PlanBook::from_config(config)),
        clock.clone(),
    ));
    Ok((
        TenantAdmin::new(store.admin(), registry, KeyHasher::new(&pepper), clock),
        store,
    ))
}

fn print(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn tenant_id(raw: &str) -> anyhow::Result<TenantId> {
    TenantId::new(raw).map_err(|_| anyhow::anyhow!("'{raw}': {}", tenancy::TENANT_ID_RULE))
}

fn explain(e: TenantsError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Runs a `tenants` verb.
pub async fn run_tenants(config: &Config, command: TenantsCommand) -> anyhow::Result<()> {
    let (admin, store) = admin(config).await?;
    match command {
        TenantsCommand::Move { id, to, url } => {
            move_tenant(config, &admin, &store, &id, to, url).await
        }
        TenantsCommand::Export {
            id,
            output,
            dump_key_file,
            unsigned: _,
        } => export_tenant(&admin, &id, output, dump_key_file).await,
        TenantsCommand::Import {
            file,
            dump_key_file,
            unsigned: _,
        } => import_tenant(&admin, &store, &file, dump_key_file).await,
        TenantsCommand::Create {
            id,
            name,
            email,
            plan,
            no_key,
        } => create_tenant(&admin, id, name, email, plan, no_key).await,
        TenantsCommand::List {
            status,
            plan,
            limit,
            after,
        } => list_tenants(&admin, status, plan, limit, after).await,
        TenantsCommand::Show { id } => print(&admin.get(&tenant_id(&id)?).await.map_err(explain)?),
        TenantsCommand::Update { id, set } => {
            let patch: PatchTenant = serde_json::from_str(&set).context("--set: invalid patch")?;
            print(
                &admin
                    .update(&tenant_id(&id)?, patch)
                    .await
                    .map_err(explain)?,
            )
        }
        TenantsCommand::Suspend { id } => print(
            &admin
                .set_status(&tenant_id(&id)?, TenantState::Suspended)
                .await
                .map_err(explain)?,
        ),
        TenantsCommand::Resume { id } => print(
            &admin
                .set_status(&tenant_id(&id)?, TenantState::Active)
                .await
                .map_err(explain)?,
        ),
        TenantsCommand::Delete { id, yes } => {
            anyhow::ensure!(
                yes,
                "deleting '{id}' removes all its records, jobs and keys: repeat with --yes"
            );
            let removed = admin.delete(&tenant_id(&id)?).await.map_err(explain)?;
            print(&serde_json::json!({ "deleted": id, "removed": removed }))
        }
    }
}

/// `tenants move`: moves a tenant between the shared and a dedicated
/// database. Storage is closed before the report is printed, whether the
/// move worked or not.
async fn move_tenant(
    config: &Config,
    admin: &TenantAdmin,
    store: &Store,
    id: &str,
    to: String,
    url: Option<String>,
) -> anyhow::Result<()> {
    let id = tenant_id(id)?;
    let request = super::moves::MoveTenant {
        to: if to == "shared" {
            super::moves::Tier::Shared
        } else {
            super::moves::Tier::Dedicated
        },
        url,
    };
    let mover = super::moves::Mover {
        admin: admin.store(),
        store,
        registry: admin.registry(),
        // A running server sees the freeze at its next registry poll.
        settle: std::time::Duration::from_millis(config.auth.registry_poll_ms + 250),
        clock: admin.clock().clone(),
    };
    let report = mover.run(&id, &request).await.map_err(explain);
    store.close().await;
    print(&report?)
}

/// `tenants export`: writes a tenant's dump to `output` (or stdout),
/// signed when a dump key is given.
async fn export_tenant(
    admin: &TenantAdmin,
    id: &str,
    output: Option<PathBuf>,
    dump_key_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let id = tenant_id(id)?;
    // The key is checked before the file is created.
    let key = dump_key_file.as_deref().map(DumpKey::load).transpose()?;
    let counts = match output {
        Some(path) => {
            let file = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut out = std::io::BufWriter::new(file);
            crate::portable::export(admin.store(), &id, key.as_ref(), &mut out, admin.clock())
                .await?
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            crate::portable::export(admin.store(), &id, key.as_ref(), &mut out, admin.clock())
                .await?
        }
    };
    match &key {
        Some(key) => eprintln!(
            "exported tenant {id}, signed with dump key {}: {counts:?}",
            key.id()
        ),
        None => eprintln!("exported tenant {id}, unsigned: {counts:?}"),
    }
    Ok(())
}

/// `tenants import`: reads a dump from `file` (`-` is stdin), checked
/// against the dump key when one is given, and imports it. Storage is
/// closed before the result is printed.
async fn import_tenant(
    admin: &TenantAdmin,
    store: &Store,
    file: &Path,
    dump_key_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let key = dump_key_file.as_deref().map(DumpKey::load).transpose()?;
    let trust = key.as_ref().map_or(Trust::Unsigned, Trust::Key);
    let schema = crate::portable::PortableRepo::schema_version(admin.store().db());
    let dump = if file.as_os_str() == "-" {
        crate::portable::read(std::io::stdin().lock(), schema, trust)?
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        crate::portable::read(std::io::BufReader::new(f), schema, trust)?
    };
    let imported = crate::portable::import(admin.store(), &dump, admin.clock()).await;
    store.close().await;
    imported?;
    print(&serde_json::json!({
        "imported": dump.tenant.as_str(),
        "rows": dump.counts,
        "signed_by": dump.signed_by,
    }))
}

/// `tenants create`: a tenant with default settings, and its first API key
/// unless `--no-key`.
async fn create_tenant(
    admin: &TenantAdmin,
    id: String,
    name: String,
    email: Option<String>,
    plan: Option<String>,
    no_key: bool,
) -> anyhow::Result<()> {
    let input = CreateTenant {
        id,
        name,
        email,
        plan,
        status: None,
        limits: Default::default(),
        quotas: Default::default(),
        features: Default::default(),
        security: Default::default(),
        frontend_url: None,
        oidc: None,
        storage: None,
        issue_key: !no_key,
    };
    let (tenant, api_key) = admin.create(input).await.map_err(explain)?;
    print(&serde_json::json!({ "tenant": tenant, "api_key": api_key }))
}

/// `tenants list`: one page of tenants, filtered by status and plan.
async fn list_tenants(
    admin: &TenantAdmin,
    status: Option<String>,
    plan: Option<String>,
    limit: u64,
    after: Option<String>,
) -> anyhow::Result<()> {
    let status = match status.as_deref() {
        None => None,
        Some(s) => Some(
            TenantState::parse(s)
                .ok_or_else(|| anyhow::anyhow!("--status: 'active' or 'suspended'"))?,
        ),
    };
    let after = after.as_deref().map(tenant_id).transpose()?;
    let page = admin
        .list(TenantFilter {
            status,
            plan,
            after,
            limit: limit.clamp(1, 100_000),
        })
        .await
        .map_err(explain)?;
    print(&page)
}

/// Runs a `keys` verb.
pub async fn run_keys(config: &Config, command: KeysCommand) -> anyhow::Result<()> {
    let (admin, _store) = admin(config).await?;
    match command {
        KeysCommand::Issue {
            tenant,
            name,
            expires_at,
            scopes,
        } => {
            let input = IssueKey {
                name,
                expires_at,
                scopes,
                // Per-key rate limits are set through the admin API.
                limits: crate::tenants::model::Limits::default(),
            };
            print(
                &admin
                    .issue_key(&tenant_id(&tenant)?, input)
                    .await
                    .map_err(explain)?,
            )
        }
        KeysCommand::List { tenant } => print(
            &admin
                .list_keys(&tenant_id(&tenant)?)
                .await
                .map_err(explain)?,
        ),
        KeysCommand::Revoke { tenant, key_id } => {
            admin
                .revoke_key(&tenant_id(&tenant)?, &key_id)
                .await
                .map_err(explain)?;
            print(&serde_json::json!({ "revoked": key_id }))
        }
        KeysCommand::Rotate {
            tenant,
            key_id,
            grace_seconds,
        } => print(
            &admin
                .rotate_key(&tenant_id(&tenant)?, &key_id, grace_seconds)
                .await
                .map_err(explain)?,
        ),
    }
}
