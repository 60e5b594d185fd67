//! Static tenants: the config file's `tenants:` list and
//! `TENANTD_TENANT_CONFIGS` (a JSON array of flat tenant objects:
//! `tenant_id`, `name`, `mongo_uri`, `oidc_issuer`, ...; the mapping to the
//! product this shape comes from is in `docs/compatibility.md`).
//!
//! Every violation is reported at once: required fields, unique ids, the
//! OIDC fields required once `oidc_issuer` is set (scopes default to
//! `openid profile email`), and the id format. `mongo_uri`,
//! `mongo_database` and `redis_addr` are accepted and kept for the storage
//! binding but not required: tenantd's embedded store needs no per-tenant
//! database.

use std::collections::HashSet;
use std::path::Path;

use super::model::{
    DEFAULT_OIDC_SCOPES, DEFAULT_PLAN, Oidc, Security, StorageBinding, TenantRow, TenantSpec,
    parse_tenant_id, validate,
};
use crate::clock::Clock;
use crate::config::{Config, ConfigErrors};

pub use crate::config::StaticTenant;

fn present(s: Option<&String>) -> Option<String> {
    s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl StaticTenant {
    fn spec(&self) -> TenantSpec {
        let oidc = present(self.oidc_issuer.as_ref()).map(|issuer| Oidc {
            issuer,
            client_id: present(self.oidc_client_id.as_ref()).unwrap_or_default(),
            client_secret: present(self.oidc_client_secret.as_ref()),
            redirect_url: present(self.oidc_redirect_url.as_ref()).unwrap_or_default(),
            scopes: present(self.oidc_scopes.as_ref())
                .unwrap_or_else(|| DEFAULT_OIDC_SCOPES.to_owned()),
        });
        let has_storage = self.mongo_uri.is_some()
            || self.mongo_database.is_some()
            || self.redis_addr.is_some()
            || self.redis_db.is_some();
        let storage = has_storage.then(|| StorageBinding {
            isolation: self.mongo_uri.as_ref().map(|_| "dedicated".to_owned()),
            url: self.mongo_uri.clone(),
            database: self.mongo_database.clone(),
            redis_addr: self.redis_addr.clone(),
            redis_db: self.redis_db,
        });
        TenantSpec {
            limits: self.limits.clone(),
            quotas: self.quotas.clone(),
            features: self.features.clone(),
            security: Security {
                allowed_ips: self.allowed_ips.clone(),
                ..Security::default()
            },
            frontend_url: present(self.frontend_url.as_ref()),
            oidc,
            storage,
            moving_until_ms: None,
        }
    }
}

/// Loads the configuration ([`Config::load`]) with the static tenant list
/// checked too ([`validate_all`]), every problem reported together: how
/// the server, `config check` and the admin verbs load it.
pub fn load_config<I>(file: Option<&Path>, vars: I) -> Result<Config, ConfigErrors>
where
    I: IntoIterator<Item = (String, String)>,
{
    Config::load_with(file, vars, |config| validate_all(&config.tenants))
}

/// [`load_config`] from the process environment.
pub fn config_from_env(file: Option<&Path>) -> Result<Config, ConfigErrors> {
    load_config(file, std::env::vars())
}

/// Every problem of the static tenant list, each naming `tenants[i].field`.
pub fn validate_all(tenants: &[StaticTenant]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for (i, t) in tenants.iter().enumerate() {
        let at = format!("tenants[{i}].");
        match present(t.tenant_id.as_ref()) {
            None => problems.push(format!("{at}tenant_id: required")),
            Some(id) => {
                if let Err(p) = parse_tenant_id(&at, &id) {
                    problems.push(p.replace(&format!("{at}id"), &format!("{at}tenant_id")));
                } else if !seen.insert(id.clone()) {
                    problems.push(format!("{at}tenant_id: '{id}' is listed more than once"));
                }
            }
        }
        let name = present(t.name.as_ref());
        if name.is_none() {
            problems.push(format!("{at}name: required"));
        }
        let plan = t.plan.clone().unwrap_or_else(|| DEFAULT_PLAN.to_owned());
        let mut found = validate(
            &at,
            name.as_deref().unwrap_or("x"),
            t.email.as_deref(),
            &plan,
            &t.spec(),
        );
        // Report fields by the flat names the operator wrote, not by the
        // nested names of the admin API.
        for p in &mut found {
            for (ours, flat) in [
                ("oidc.client_id", "oidc_client_id"),
                ("oidc.client_secret", "oidc_client_secret"),
                ("oidc.redirect_url", "oidc_redirect_url"),
                ("oidc.issuer", "oidc_issuer"),
                ("security.allowed_ips", "allowed_ips"),
                ("storage.redis_db", "redis_db"),
            ] {
                *p = p.replace(ours, flat);
            }
        }
        problems.extend(found);
    }
    // One tenant per OIDC issuer and client id (tenants::oidc).
    problems.extend(super::oidc::duplicates(
        tenants.iter().enumerate().filter_map(|(i, t)| {
            let oidc = t.spec().oidc?;
            let id = t.tenant_id.as_deref().unwrap_or_default();
            Some((format!("tenants[{i}] ({id})"), oidc.issuer, oidc.client_id))
        }),
    ));
    problems
}

/// The rows to upsert at startup (call after [`validate_all`] passed),
/// stamped with `clock`'s now.
pub fn rows(tenants: &[StaticTenant], clock: &Clock) -> Vec<TenantRow> {
    let now = clock.now_rfc3339();
    tenants
        .iter()
        .filter_map(|t| {
            let id = parse_tenant_id("", t.tenant_id.as_deref()?).ok()?;
            Some(TenantRow {
                id,
                name: present(t.name.as_ref())?,
                email: t.email.clone(),
                plan: t.plan.clone().unwrap_or_else(|| DEFAULT_PLAN.to_owned()),
                status: t.status.unwrap_or_default(),
                source: "config".to_owned(),
                spec: t.spec(),
                created_at: now.clone(),
                updated_at: now.clone(),
            })
        })
        .collect()
}

/// Why startup refuses static tenants whose ids are retired: a deleted
/// tenant's audit trail and usage are kept under its id, so a tenant
/// configured under that id would inherit them (see
/// `TenantsError::Retired`). The repositories check this in the
/// transaction that upserts the static tenants.
pub(crate) fn retired(ids: &[String]) -> String {
    let ids: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
    format!(
        "static tenants: tenant_id {} belonged to a deleted tenant whose audit trail and usage \
         are kept; a retired id is never reused: remove it from `tenants:` / \
         TENANTD_TENANT_CONFIGS or choose another id",
        ids.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Vec<StaticTenant> {
        serde_json::from_str(json).expect("json")
    }

    #[test]
    fn documented_example_is_valid_and_keeps_its_storage_fields() {
        let tenants = parse(
            r#"[{"tenant_id": "acme_corp", "name": "Acme Corporation",
                 "mongo_uri": "mongodb://acme-mongo:27017", "mongo_database": "acme_corp_db",
                 "redis_addr": "acme-redis:6379", "redis_db": 0,
                 "frontend_url": "https://app.acme.com"}]"#,
        );
        assert!(validate_all(&tenants).is_empty());
        let row = &rows(&tenants, &Clock::system())[0];
        let storage = row.spec.storage.as_ref().expect("storage");
        assert_eq!(storage.database.as_deref(), Some("acme_corp_db"));
        assert_eq!(storage.redis_db, Some(0));
        assert_eq!(row.source, "config");
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let tenants = parse(
            r#"[{"tenant_id": "a", "name": "A", "oidc_issuer": "https://login.example.com"},
                {"tenant_id": "a", "name": "A again"},
                {"name": "no id"},
                {"tenant_id": "bad id!", "redis_db": 16},
                {"tenant_id": "c", "name": "C", "allowed_ips": ["10.0.0.0/33"]}]"#,
        );
        let problems = validate_all(&tenants).join("\n");
        for expected in [
            "tenants[0].oidc_client_id: required",
            "tenants[0].oidc_client_secret: required",
            "tenants[0].oidc_redirect_url: required",
            "tenants[1].tenant_id: 'a' is listed more than once",
            "tenants[2].tenant_id: required",
            "tenants[3].tenant_id:",
            "tenants[3].name: required",
            "tenants[3].redis_db: must be 0 to 15",
            "tenants[4].allowed_ips[0]",
        ] {
            assert!(
                problems.contains(expected),
                "{expected} missing in\n{problems}"
            );
        }
    }

    #[test]
    fn oidc_scopes_default() {
        let tenants = parse(
            r#"[{"tenant_id": "a", "name": "A", "oidc_issuer": "https://i.example.com",
                 "oidc_client_id": "c", "oidc_client_secret": "s",
                 "oidc_redirect_url": "https://api.example.com/cb"}]"#,
        );
        assert!(validate_all(&tenants).is_empty());
        let oidc = rows(&tenants, &Clock::system())[0]
            .spec
            .oidc
            .clone()
            .expect("oidc");
        assert_eq!(oidc.scopes, "openid profile email");
    }
}
