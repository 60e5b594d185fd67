//! Configuration: defaults < YAML file < `TENANTD_*` environment,
//! validated once, with every problem reported together.
//!
//! Environment variables come in two forms:
//! - the documented aliases of the `tenant` keys (`TENANTD_TENANT_ENABLED`,
//!   ...) and of the static tenants (`TENANTD_TENANT_CONFIGS`), see
//!   [`env`];
//! - any key by its path, sections joined with `__`:
//!   `TENANTD_SERVER__BIND=0.0.0.0:8000`, `TENANTD_STORAGE__DATA_DIR=/var/lib/tenantd`.

mod accounting;
mod env;
mod overrides;
mod statics;
mod storage;
mod tenant;
mod yaml;

use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::Serialized;
use serde::{Deserialize, Serialize};
use tenancy::{IpNet, TenantId};

pub use accounting::{
    BillingConfig, LimitStoreKind, LimitsConfig, MetricsConfig, OnStoreError, PlanConfig, Plans,
    Prices, UsageConfig,
};
pub use env::ENV_PREFIX;
pub use overrides::{Limits, Quotas, TenantState};
pub use statics::StaticTenant;
pub use storage::{Backend, RlsCheck, StorageConfig, is_postgres_url};
pub use tenant::{DEFAULT_TENANT, TenantConfig};

/// The whole server configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP listener and request limits.
    pub server: ServerConfig,
    /// Where data lives.
    pub storage: StorageConfig,
    /// Multi-tenancy policy: on/off, default tenant, header, required, allow-list.
    pub tenant: TenantConfig,
    /// Detection job workers.
    pub jobs: JobsConfig,
    /// Logging.
    pub log: LogConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// Credentials: API keys and JWTs.
    pub auth: AuthConfig,
    /// Static tenants, re-applied at every start (also `TENANTD_TENANT_CONFIGS`).
    pub tenants: Vec<StaticTenant>,
    /// Rate limits: counter store and global default windows.
    pub limits: LimitsConfig,
    /// Global default quotas (overridden by the plan, then the tenant).
    pub quotas: Quotas,
    /// Plans: limits, quotas and prices per plan name.
    pub plans: Plans,
    /// Usage recording.
    pub usage: UsageConfig,
    /// Billing events.
    pub billing: BillingConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
}

/// The admin API (`/admin/*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The admin key (`TENANTD_ADMIN_KEY`), sent as `Authorization: Bearer`
    /// or `x-admin-key`. Unset: the admin API answers 401 to everyone.
    pub key: Option<String>,
    /// Failed admin authentications one client address may make per
    /// minute; past it every admin request from there is 429 until the
    /// minute ends. 0 turns the lockout off.
    pub max_auth_failures_per_minute: u32,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            key: None,
            max_auth_failures_per_minute: 10,
        }
    }
}

/// Credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A credential is mandatory on tenant routes (401 without one).
    /// `false` keeps header-only access for tenants without credentials
    /// (trusted networks).
    pub required: bool,
    /// Server secret for API key hashes (`TENANTD_KEY_PEPPER`, at least 32
    /// characters). Unset: generated into `data_dir/key_pepper` on first
    /// start. Changing it invalidates every key.
    pub key_pepper: Option<String>,
    /// Seconds between writes of API keys' `last_used_at`.
    pub last_used_flush_secs: u64,
    /// Milliseconds between checks for registry changes made elsewhere
    /// (the CLI, another node).
    pub registry_poll_ms: u64,
    /// JWT verification.
    pub jwt: JwtConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            required: false,
            key_pepper: None,
            last_used_flush_secs: 10,
            registry_poll_ms: 1000,
            jwt: JwtConfig::default(),
        }
    }
}

/// JWT bearer tokens: HS256 with a shared secret, and RS256/ES256 from a
/// tenant's OIDC issuer (its JWKS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Shared secret for HS256 tokens (`TENANTD_JWT_SECRET`, at least 32
    /// characters). Unset: HS256 tokens are refused.
    pub hs256_secret: Option<String>,
    /// Required `iss` of HS256 tokens.
    pub issuer: Option<String>,
    /// Required `aud` of HS256 tokens.
    pub audience: Option<String>,
    /// The claim holding the tenant id.
    pub tenant_claim: String,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    pub leeway_secs: u64,
    /// How long a tenant issuer's fetched JWKS is trusted before it is
    /// fetched again.
    pub jwks_ttl_secs: u64,
    /// The most one fetch of an issuer's discovery document and JWKS may
    /// take, in milliseconds. Kept short: a request whose token names an
    /// issuer that is down waits at most this long (requests of other
    /// issuers never wait for it).
    pub jwks_timeout_ms: u64,
    /// How long a failed fetch is remembered, in seconds: meanwhile that
    /// issuer's tokens are refused (or checked against its last good keys)
    /// without a new fetch, so a flood of them costs no network calls.
    pub jwks_failure_ttl_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            issuer: None,
            audience: None,
            tenant_claim: "tenant_id".to_owned(),
            leeway_secs: 30,
            jwks_ttl_secs: 600,
            jwks_timeout_ms: 2500,
            jwks_failure_ttl_secs: 30,
        }
    }
}

/// Detection job workers and their limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Worker tasks; unset means one per CPU core, 0 means this node runs
    /// no jobs (it still accepts them).
    pub workers: Option<usize>,
    /// Jobs of one tenant that may run at once, so one tenant cannot
    /// occupy every worker.
    pub per_tenant_concurrency: u32,
    /// Attempts before a job fails for good.
    pub max_attempts: u32,
    /// A worker's claim on a job lasts this long unless renewed; a job
    /// whose worker died is retried after it expires.
    pub lease_secs: u64,
    /// Delay before the first retry; doubled on each further attempt.
    pub retry_backoff_secs: u64,
    /// On shutdown, running jobs get this long to finish before they are
    /// interrupted and put back in the queue.
    pub shutdown_grace_secs: u64,
    /// Idle workers look for new jobs at least this often (a submission on
    /// this node wakes them at once).
    pub poll_interval_ms: u64,
    /// One detection may take at most this long.
    pub timeout_secs: u64,
    /// Largest total size of files a detection reads.
    pub max_repo_bytes: u64,
    /// Most files a detection examines.
    pub max_files: u64,
    /// Accept local paths and `file://` URLs. Off by default: a path lets a
    /// tenant inspect any repository on the host, so turn it on only when
    /// every tenant is trusted (a single-team deployment, the README tour).
    pub allow_local_paths: bool,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            workers: None,
            per_tenant_concurrency: 2,
            max_attempts: 3,
            lease_secs: 30,
            retry_backoff_secs: 5,
            shutdown_grace_secs: 20,
            poll_interval_ms: 500,
            timeout_secs: 300,
            max_repo_bytes: 512 * 1024 * 1024,
            max_files: 200_000,
            allow_local_paths: false,
        }
    }
}

impl JobsConfig {
    /// The worker count in force.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
        })
    }
}

/// HTTP listener settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Largest accepted request body, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// A request still running after this many seconds is answered 503;
    /// the time spent receiving its body counts.
    pub request_timeout_secs: u64,
    /// A connection that has not sent a whole request head within this
    /// many seconds of opening, or of its previous response, is closed
    /// (silent, slow-header and idle keep-alive clients).
    pub header_read_timeout_secs: u64,
    /// Open connections one client address may hold; more are closed as
    /// they arrive. 0: no cap.
    pub max_connections_per_ip: u32,
    /// After a shutdown signal, requests in flight get this many seconds to
    /// finish; then the remaining connections are closed, and usage, audit
    /// and billing are still flushed before the process exits.
    pub shutdown_grace_secs: u64,
    /// Proxies (CIDR) whose `X-Forwarded-For` is believed for tenants' IP
    /// allow-lists. Empty: the TCP peer address always counts.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            max_body_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            header_read_timeout_secs: 10,
            max_connections_per_ip: 256,
            shutdown_grace_secs: 30,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the span's `tenant_id` and `request_id`.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// `tracing` filter directive (`RUST_LOG` wins when set).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// Every problem found while loading a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

impl Config {
    /// Loads defaults, then `file` (if any), then the `TENANTD_*` variables of
    /// `vars`, and validates the result. The static tenants are only read:
    /// the tenants feature checks them
    /// (its `statics::load_config` loads and checks both).
    pub fn load<I>(file: Option<&Path>, vars: I) -> Result<Self, ConfigErrors>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        Self::load_with(file, vars, |_| Vec::new())
    }

    /// [`Config::load`] with a feature's own checks: `more`'s problems are
    /// reported with the configuration's, before its semantic ones, so an
    /// operator still sees every problem at once.
    pub fn load_with<I>(
        file: Option<&Path>,
        vars: I,
        more: impl FnOnce(&Self) -> Vec<String>,
    ) -> Result<Self, ConfigErrors>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut problems = Vec::new();
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            match yaml::YamlFile::read(path) {
                Ok(provider) => figment = figment.merge(provider),
                Err(e) => problems.push(e),
            }
        }
        let env = env::EnvOverrides::collect(vars);
        problems.extend(env.problems.iter().cloned());
        figment = figment.merge(env);
        let config = match figment.extract::<Config>() {
            Ok(config) => Some(config),
            Err(errors) => {
                problems.extend(errors.into_iter().map(describe_figment_error));
                None
            }
        };
        let config = config.map(Self::default_from_static_tenants);
        if let Some(config) = &config {
            problems.extend(more(config));
            problems.extend(config.validate());
        }
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ConfigErrors(problems)),
        }
    }

    /// Loads from the process environment (static tenants unchecked, as
    /// with [`Config::load`]).
    pub fn from_env(file: Option<&Path>) -> Result<Self, ConfigErrors> {
        Self::load(file, std::env::vars())
    }

    /// Without an explicit default, the first static tenant is the default
    /// tenant, so a list of static tenants needs no second setting.
    fn default_from_static_tenants(mut self) -> Self {
        let builtin = self.tenant.default_tenant.as_str() == DEFAULT_TENANT;
        let named = |id: &str| {
            self.tenants
                .iter()
                .any(|t| t.tenant_id.as_deref().map(str::trim) == Some(id))
        };
        if builtin && !named(DEFAULT_TENANT) {
            let first = self
                .tenants
                .first()
                .and_then(|t| t.tenant_id.as_deref())
                .and_then(|id| TenantId::new(id.trim()).ok());
            if let Some(first) = first {
                self.tenant.default_tenant = first;
            }
        }
        self
    }

    /// The parsed `server.trusted_proxies` (call after validation).
    pub fn trusted_proxies(&self) -> Vec<IpNet> {
        self.server
            .trusted_proxies
            .iter()
            .filter_map(|s| parse_net(s))
            .collect()
    }

    /// Semantic checks that types alone cannot express.
    ///
    /// Every problem is reported, in a fixed order (section by section),
    /// so an operator fixes a file in one pass.
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        problems.extend(self.trusted_proxy_problems());
        problems.extend(self.auth_problems());
        problems.extend(self.tenant.problem());
        problems.extend(self.server_problems());
        problems.extend(self.jobs_problems());
        problems.extend(self.limits_and_billing_problems());
        problems.extend(self.storage.problems());
        problems.extend(self.storage_pool_problems());
        problems
    }

    /// Each `server.trusted_proxies` entry must parse.
    fn trusted_proxy_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, cidr) in self.server.trusted_proxies.iter().enumerate() {
            if parse_net(cidr).is_none() {
                problems.push(format!(
                    "server.trusted_proxies[{i}]: not a CIDR block or IP address"
                ));
            }
        }
        problems
    }

    /// Secret lengths, the admin key, and the `auth.*` settings.
    fn auth_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, secret) in [
            ("auth.key_pepper", &self.auth.key_pepper),
            ("auth.jwt.hs256_secret", &self.auth.jwt.hs256_secret),
        ] {
            if secret.as_ref().is_some_and(|s| s.len() < 32) {
                problems.push(format!("{key}: must be at least 32 characters"));
            }
        }
        if self.admin.key.as_ref().is_some_and(|k| k.len() < 16) {
            problems.push("admin.key: must be at least 16 characters".to_owned());
        }
        if self.auth.required && !self.tenant.enabled {
            // With multi-tenancy off every request runs in the default
            // tenant and credentials are not looked at: refusing the
            // combination beats silently serving without authentication.
            problems.push(
                "auth.required: needs tenant.enabled (credentials select the tenant)".to_owned(),
            );
        }
        if self.auth.jwt.tenant_claim.trim().is_empty() {
            problems.push("auth.jwt.tenant_claim: must not be empty".to_owned());
        }
        problems.extend(zero_problems([
            ("auth.last_used_flush_secs", self.auth.last_used_flush_secs),
            ("auth.registry_poll_ms", self.auth.registry_poll_ms),
            ("auth.jwt.jwks_ttl_secs", self.auth.jwt.jwks_ttl_secs),
            ("auth.jwt.jwks_timeout_ms", self.auth.jwt.jwks_timeout_ms),
            (
                "auth.jwt.jwks_failure_ttl_secs",
                self.auth.jwt.jwks_failure_ttl_secs,
            ),
        ]));
        problems
    }

    /// Body size and timeouts of `server.*`.
    fn server_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.server.max_body_bytes == 0 {
            problems.push("server.max_body_bytes: must be greater than 0".to_owned());
        }
        if self.server.header_read_timeout_secs == 0 {
            problems.push("server.header_read_timeout_secs: must be greater than 0".to_owned());
        }
        if self.server.request_timeout_secs == 0 {
            problems.push("server.request_timeout_secs: must be greater than 0".to_owned());
        }
        problems
    }

    /// `jobs.*` counts and durations.
    fn jobs_problems(&self) -> Vec<String> {
        zero_problems([
            (
                "jobs.per_tenant_concurrency",
                u64::from(self.jobs.per_tenant_concurrency),
            ),
            ("jobs.max_attempts", u64::from(self.jobs.max_attempts)),
            ("jobs.lease_secs", self.jobs.lease_secs),
            ("jobs.poll_interval_ms", self.jobs.poll_interval_ms),
            ("jobs.timeout_secs", self.jobs.timeout_secs),
        ])
    }

    /// The Redis limit store, the billing webhook, and the intervals of
    /// limits, usage and billing.
    fn limits_and_billing_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.limits.enabled
            && self.limits.store == LimitStoreKind::Redis
            && self
                .limits
                .redis_url
                .as_deref()
                .is_none_or(|u| u.trim().is_empty())
        {
            problems.push("limits.redis_url: required when limits.store is redis".to_owned());
        }
        if self.billing.webhook_url.is_some() && self.billing.webhook_secret.is_none() {
            problems.push(
                "billing.webhook_secret: required when billing.webhook_url is set (deliveries are signed)"
                    .to_owned(),
            );
        }
        if let Some(url) = &self.billing.webhook_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push("billing.webhook_url: must be an http(s) URL".to_owned());
        }
        if self
            .billing
            .webhook_secret
            .as_ref()
            .is_some_and(|s| s.len() < 32)
        {
            problems.push("billing.webhook_secret: must be at least 32 characters".to_owned());
        }
        problems.extend(zero_problems([
            ("limits.redis_timeout_ms", self.limits.redis_timeout_ms),
            ("usage.flush_ms", self.usage.flush_ms),
            ("billing.retry_base_ms", self.billing.retry_base_ms),
            ("billing.retry_max_ms", self.billing.retry_max_ms),
            ("billing.timeout_ms", self.billing.timeout_ms),
            ("billing.poll_ms", self.billing.poll_ms),
            ("billing.max_attempts", u64::from(self.billing.max_attempts)),
        ]));
        problems
    }

    /// The pool size and data directory of `storage.*`.
    fn storage_pool_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.storage.max_connections == 0 {
            problems.push("storage.max_connections: must be greater than 0".to_owned());
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            problems.push("storage.data_dir: must not be empty".to_owned());
        }
        problems
    }

    /// The effective configuration as YAML, with every secret-looking value
    /// masked, for `tenantd config check`.
    pub fn to_masked_yaml(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        crate::redact::json(&mut value);
        serde_norway::to_string(&value).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Turns a figment error into one line naming the key and the source.
fn describe_figment_error(error: figment::Error) -> String {
    let key = if error.path.is_empty() {
        "config".to_owned()
    } else {
        error.path.join(".")
    };
    let origin = error
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(source) => format!(" (from {source})"),
            None => format!(" (from {})", m.name),
        })
        .unwrap_or_default();
    format!("{key}: {}{origin}", error.kind)
}

/// "must be greater than 0" for each setting whose value is 0, in order.
fn zero_problems<const N: usize>(settings: [(&str, u64); N]) -> Vec<String> {
    settings
        .into_iter()
        .filter(|(_, value)| *value == 0)
        .map(|(key, _)| format!("{key}: must be greater than 0"))
        .collect()
}

/// A CIDR block, or a single address as its /32 or /128: how every address
/// list of the configuration is read (trusted proxies, a tenant's
/// `allowed_ips`), so tenants and config share one rule.
pub fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests;
