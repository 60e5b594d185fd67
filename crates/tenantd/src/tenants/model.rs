//! The tenant as an operator manages it, and the inputs that create and
//! change one. Validation collects *every* problem, each naming its field,
//! because static tenants from configuration must be reported all at once.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use tenancy::{IpNet, TenantId};
use utoipa::ToSchema;

use crate::config::parse_net;

/// Default OIDC scopes when a tenant's OIDC settings name none.
pub const DEFAULT_OIDC_SCOPES: &str = "openid profile email";
/// Default plan of a new tenant.
pub const DEFAULT_PLAN: &str = "free";

// The state and override shapes live in `config` (the configuration's
// plans and static tenants use them, and config imports no feature).
pub use crate::config::{Limits, Quotas, TenantState};

/// Network restrictions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// CIDR blocks (or single addresses) the tenant may be used from;
    /// empty = anywhere.
    #[serde(default)]
    #[schema(value_type = Vec<String>, example = json!(["203.0.113.0/24"]))]
    pub allowed_ips: Vec<String>,
    /// Let requests that only name the tenant (header, query, body) reach
    /// it although it holds credentials (API keys, OIDC). Off by default:
    /// anyone can write a header, so a tenant with credentials is reached
    /// only with one. For deployments behind a gateway that authenticates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub header_access: bool,
}

impl Security {
    /// The parsed allow-list (call after [`validate`]).
    pub fn networks(&self) -> Vec<IpNet> {
        self.allowed_ips
            .iter()
            .filter_map(|s| parse_net(s))
            .collect()
    }
}

/// Per-tenant OpenID Connect login. The client secret is
/// write-only: responses say whether one is set, never what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Oidc {
    /// Issuer URL; its discovery document gives the JWKS.
    pub issuer: String,
    /// Client id (also the expected `aud` of its tokens).
    pub client_id: String,
    /// Client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Callback URL.
    pub redirect_url: String,
    /// Space-separated scopes.
    #[serde(default = "default_scopes")]
    pub scopes: String,
}

fn default_scopes() -> String {
    DEFAULT_OIDC_SCOPES.to_owned()
}

/// Per-tenant storage fields: where the tenant's records live
/// (`isolation: dedicated` gives it a database of its own) and its Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageBinding {
    /// `shared` (default) or `dedicated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// Connection URL of a dedicated database (static tenants' `mongo_uri`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Database name (static tenants' `mongo_database`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Redis address of the tenant (static tenants' `redis_addr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_addr: Option<String>,
    /// Redis database number 0..=15 (static tenants' `redis_db`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_db: Option<u8>,
}

/// Everything about a tenant except identity and timestamps: stored as one
/// JSON document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantSpec {
    /// Rate limits.
    pub limits: Limits,
    /// Quotas.
    pub quotas: Quotas,
    /// Feature flags.
    pub features: Map<String, Value>,
    /// Network restrictions.
    pub security: Security,
    /// Frontend application URL.
    pub frontend_url: Option<String>,
    /// OIDC login.
    pub oidc: Option<Oidc>,
    /// Storage binding.
    pub storage: Option<StorageBinding>,
    /// While a move switches the tenant's data to other storage: until when
    /// (unix ms) writes are refused. Set and cleared only by the mover; a
    /// lease, so a mover that died stops blocking writes by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_until_ms: Option<i64>,
}

/// A tenant, as the admin API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    /// Id.
    #[schema(value_type = String)]
    pub id: TenantId,
    /// Display name.
    pub name: String,
    /// Contact address.
    pub email: Option<String>,
    /// Plan (selects default limits and prices).
    pub plan: String,
    /// `active` or `suspended`.
    pub status: TenantState,
    /// Rate-limit overrides.
    pub limits: Limits,
    /// Quota overrides.
    pub quotas: Quotas,
    /// Feature flags.
    #[schema(value_type = Object)]
    pub features: Map<String, Value>,
    /// Network restrictions.
    pub security: Security,
    /// Frontend URL.
    pub frontend_url: Option<String>,
    /// OIDC settings (`client_secret` never shown).
    pub oidc: Option<OidcView>,
    /// Storage binding.
    pub storage: Option<StorageBinding>,
    /// `api` (made through the admin API or CLI) or `config` (static).
    pub source: String,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// OIDC settings without the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OidcView {
    /// Issuer URL.
    pub issuer: String,
    /// Client id.
    pub client_id: String,
    /// Whether a client secret is stored.
    pub client_secret_set: bool,
    /// Callback URL.
    pub redirect_url: String,
    /// Scopes.
    pub scopes: String,
}

impl From<&Oidc> for OidcView {
    fn from(o: &Oidc) -> Self {
        Self {
            issuer: o.issuer.clone(),
            client_id: o.client_id.clone(),
            client_secret_set: o.client_secret.is_some(),
            redirect_url: o.redirect_url.clone(),
            scopes: o.scopes.clone(),
        }
    }
}

/// A tenant row as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantRow {
    /// Id.
    pub id: TenantId,
    /// Display name.
    pub name: String,
    /// Contact address.
    pub email: Option<String>,
    /// Plan.
    pub plan: String,
    /// Status.
    pub status: TenantState,
    /// `api` or `config`.
    pub source: String,
    /// The JSON document.
    pub spec: TenantSpec,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

impl From<TenantRow> for Tenant {
    fn from(row: TenantRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            email: row.email,
            plan: row.plan,
            status: row.status,
            limits: row.spec.limits,
            quotas: row.spec.quotas,
            features: row.spec.features,
            security: row.spec.security,
            frontend_url: row.spec.frontend_url,
            oidc: row.spec.oidc.as_ref().map(OidcView::from),
            // A dedicated database's URL may carry a password: never shown.
            storage: row.spec.storage.map(|mut s| {
                s.url = s.url.as_deref().map(crate::redact::url);
                s
            }),
            source: row.source,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Body of `POST /admin/tenants`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Id (`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Contact address.
    #[serde(default)]
    pub email: Option<String>,
    /// Plan (default `free`).
    #[serde(default)]
    pub plan: Option<String>,
    /// Initial status (default `active`).
    #[serde(default)]
    pub status: Option<TenantState>,
    /// Rate-limit overrides.
    #[serde(default)]
    pub limits: Limits,
    /// Quota overrides.
    #[serde(default)]
    pub quotas: Quotas,
    /// Feature flags.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub features: Map<String, Value>,
    /// Network restrictions.
    #[serde(default)]
    pub security: Security,
    /// Frontend URL.
    #[serde(default)]
    pub frontend_url: Option<String>,
    /// OIDC login.
    #[serde(default)]
    pub oidc: Option<Oidc>,
    /// Storage binding: where the tenant's records live.
    #[serde(default)]
    pub storage: Option<StorageBinding>,
    /// Whether to issue a first API key (default true).
    #[serde(default = "yes")]
    pub issue_key: bool,
}

fn yes() -> bool {
    true
}

/// Body of `PATCH /admin/tenants/{id}`: only the fields sent change;
/// `"oidc": null` / `"frontend_url": null` / `"email": null` remove.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchTenant {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New email (`null` removes).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    /// New plan.
    #[serde(default)]
    pub plan: Option<String>,
    /// New status.
    #[serde(default)]
    pub status: Option<TenantState>,
    /// Replaces the limits.
    #[serde(default)]
    pub limits: Option<Limits>,
    /// Replaces the quotas.
    #[serde(default)]
    pub quotas: Option<Quotas>,
    /// Replaces the feature flags.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub features: Option<Map<String, Value>>,
    /// Replaces the security settings.
    #[serde(default)]
    pub security: Option<Security>,
    /// New frontend URL (`null` removes).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub frontend_url: Option<Option<String>>,
    /// New OIDC settings (`null` removes).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Oidc>)]
    pub oidc: Option<Option<Oidc>>,
    /// New storage binding (`null` removes).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<StorageBinding>)]
    pub storage: Option<Option<StorageBinding>>,
}

/// Absent → `None`; `null` → `Some(None)`; a value → `Some(Some(v))`.
fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl PatchTenant {
    /// Applies the patch to `row` (validate the result afterwards).
    pub fn apply(self, row: &mut TenantRow) {
        if let Some(v) = self.name {
            row.name = v;
        }
        if let Some(v) = self.email {
            row.email = v;
        }
        if let Some(v) = self.plan {
            row.plan = v;
        }
        if let Some(v) = self.status {
            row.status = v;
        }
        if let Some(v) = self.limits {
            row.spec.limits = v;
        }
        if let Some(v) = self.quotas {
            row.spec.quotas = v;
        }
        if let Some(v) = self.features {
            row.spec.features = v;
        }
        if let Some(v) = self.security {
            row.spec.security = v;
        }
        if let Some(v) = self.frontend_url {
            row.spec.frontend_url = v;
        }
        if let Some(v) = self.oidc {
            row.spec.oidc = v;
        }
        if let Some(v) = self.storage {
            row.spec.storage = v;
        }
    }
}

fn is_http_url(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://"))
        && s.len() <= 2048
        && s.len() > "http://".len()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// An issuer identifier as OpenID Connect Discovery defines it (a URL
/// with no query or fragment), also without user info: the issuer is
/// logged and compared, so it must not carry a credential.
fn is_issuer_url(s: &str) -> bool {
    let rest = s.split_once("://").map_or("", |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    is_http_url(s) && !s.contains(['?', '#']) && !authority.contains('@') && !authority.is_empty()
}

/// Every problem with a tenant's fields, each prefixed with `at` + the
/// field path (`tenants[2].name: ...`, or `name: ...` for the API).
pub fn validate(
    at: &str,
    name: &str,
    email: Option<&str>,
    plan: &str,
    spec: &TenantSpec,
) -> Vec<String> {
    let mut found = Vec::new();
    found.extend(identity_problems(name, email, plan));
    found.extend(limit_and_network_problems(spec));
    if let Some(oidc) = &spec.oidc {
        found.extend(oidc_problems(oidc));
    }
    if let Some(storage) = &spec.storage {
        found.extend(storage_problems(storage));
    }
    let mut problems = text_problems(at, name, email, plan, spec);
    problems.extend(
        found
            .into_iter()
            .map(|(field, why)| format!("{at}{field}: {why}")),
    );
    problems
}

/// A problem: the field path (below the tenant) and why.
type Problem = (String, String);

fn problem(field: &str, why: &str) -> Problem {
    (field.to_owned(), why.to_owned())
}

/// The name, the contact address and the plan's name.
fn identity_problems(name: &str, email: Option<&str>, plan: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        problems.push(problem("name", "required, 1 to 200 characters"));
    }
    if let Some(email) = email
        && (email.len() > 254 || !email.contains('@') || email.chars().any(char::is_whitespace))
    {
        problems.push(problem("email", "not an email address"));
    }
    let plan_ok = !plan.is_empty()
        && plan.len() <= 32
        && plan
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !plan_ok {
        problems.push(problem("plan", "1 to 32 of a-z, 0-9, '_' and '-'"));
    }
    problems
}

/// Rate-limit windows, the IP allow-list and the frontend URL.
fn limit_and_network_problems(spec: &TenantSpec) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (field, value) in [
        (
            "limits.requests_per_minute",
            spec.limits.requests_per_minute,
        ),
        ("limits.requests_per_hour", spec.limits.requests_per_hour),
        ("limits.requests_per_day", spec.limits.requests_per_day),
    ] {
        if value == Some(0) {
            problems.push(problem(field, "must be greater than 0"));
        }
    }
    for (i, cidr) in spec.security.allowed_ips.iter().enumerate() {
        if parse_net(cidr).is_none() {
            problems.push(problem(
                &format!("security.allowed_ips[{i}]"),
                "not a CIDR block or IP address",
            ));
        }
    }
    if spec.security.allowed_ips.len() > 256 {
        problems.push(problem("security.allowed_ips", "at most 256 entries"));
    }
    if let Some(url) = &spec.frontend_url
        && !is_http_url(url)
    {
        problems.push(problem("frontend_url", "must be an http(s) URL"));
    }
    problems
}

/// The OIDC settings: every field is required once an issuer is set.
fn oidc_problems(oidc: &Oidc) -> Vec<Problem> {
    let mut problems = Vec::new();
    if !is_issuer_url(&oidc.issuer) {
        problems.push(problem(
            "oidc.issuer",
            "must be an http(s) URL without user info, query or fragment",
        ));
    }
    if oidc.client_id.trim().is_empty() {
        problems.push(problem(
            "oidc.client_id",
            "required when oidc.issuer is set",
        ));
    }
    if oidc.client_secret.as_deref().is_none_or(|s| s.is_empty()) {
        problems.push(problem(
            "oidc.client_secret",
            "required when oidc.issuer is set",
        ));
    }
    if !is_http_url(&oidc.redirect_url) {
        problems.push(problem(
            "oidc.redirect_url",
            "required when oidc.issuer is set; an http(s) URL",
        ));
    }
    problems
}

/// The storage binding's isolation and Redis database.
fn storage_problems(storage: &StorageBinding) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Some(iso) = &storage.isolation
        && iso != "shared"
        && iso != "dedicated"
    {
        problems.push(problem("storage.isolation", "'shared' or 'dedicated'"));
    }
    if storage.redis_db.is_some_and(|db| db > 15) {
        problems.push(problem("storage.redis_db", "must be 0 to 15"));
    }
    problems
}

/// Every text field of a tenant (name, email, plan and every string and
/// key of its spec, features and storage binding included) checked for
/// what storage cannot keep ([`crate::input`]), each problem naming its
/// field under `at`.
pub fn text_problems(
    at: &str,
    name: &str,
    email: Option<&str>,
    plan: &str,
    spec: &TenantSpec,
) -> Vec<String> {
    use crate::input::{check_json, check_opt, check_text};
    let mut problems = Vec::new();
    let mut note = |checked: Result<(), crate::input::TextError>| {
        if let Err(e) = checked {
            problems.push(format!("{at}{e}"));
        }
    };
    note(check_text("name", name));
    note(check_opt("email", email));
    note(check_text("plan", plan));
    // The spec serialises under the API's field names.
    match serde_json::to_value(spec) {
        Ok(Value::Object(fields)) => {
            for (field, value) in &fields {
                note(check_json(field, value));
            }
        }
        _ => problems.push(format!("{at}spec: cannot be read")),
    }
    problems
}

/// Checks an id given as text, naming the field.
pub fn parse_tenant_id(at: &str, raw: &str) -> Result<TenantId, String> {
    TenantId::new(raw.trim()).map_err(|_| format!("{at}id: {}", tenancy::TENANT_ID_RULE))
}

#[cfg(test)]
mod tests;
