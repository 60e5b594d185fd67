//! What each tenant may do: rate-limit windows and quotas, resolved from
//! the global defaults, the tenant's plan and the tenant's own overrides
//! (each field independently: tenant > plan > global).
//!
//! Resolution happens when the registry loads a tenant, not per request:
//! the request path reads one `Arc<Settings>`. Tenants without overrides
//! share their plan's `Arc`, so 100,000 tenants on three plans hold three
//! settings objects.

pub mod http;
pub mod policy;

use std::collections::HashMap;
use std::sync::Arc;

use tenancy::ratelimit::Window;

use crate::config::{Config, Prices};
use crate::tenants::model::{DEFAULT_PLAN, Limits, Quotas};

pub use crate::store::quota::{QuotaExceeded, QuotaLimits, QuotaSource, Unlimited};

/// The quotas in force: each field from the tenant, else its plan, else
/// the global defaults.
fn layered(global: &Quotas, plan: &Quotas, tenant: &Quotas) -> QuotaLimits {
    let pick = |f: fn(&Quotas) -> Option<u64>| f(tenant).or(f(plan)).or(f(global));
    QuotaLimits {
        max_records: pick(|q| q.max_records),
        max_storage_mb: pick(|q| q.max_storage_mb),
        max_detections_per_month: pick(|q| q.max_detections_per_month),
        max_api_keys: pick(|q| q.max_api_keys),
    }
}

/// Everything the request path needs to enforce a tenant's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The plan name.
    pub plan: Arc<str>,
    /// The tenant's rate-limit windows (tightest first is not implied).
    pub windows: Vec<Window>,
    /// Its quotas.
    pub quotas: QuotaLimits,
}

fn windows(global: &Limits, plan: &Limits, tenant: &Limits) -> Vec<Window> {
    let pick = |f: fn(&Limits) -> Option<u64>| f(tenant).or(f(plan)).or(f(global));
    [
        pick(|l| l.requests_per_minute).map(Window::per_minute),
        pick(|l| l.requests_per_hour).map(Window::per_hour),
        pick(|l| l.requests_per_day).map(Window::per_day),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Turns a key's own limits into windows (no inheritance: a key's limits
/// are an extra budget inside its tenant's).
pub fn key_windows(limits: &Limits) -> Vec<Window> {
    windows(&Limits::default(), &Limits::default(), limits)
}

/// The configured plans, resolved once.
#[derive(Debug)]
pub struct PlanBook {
    global_limits: Limits,
    global_quotas: Quotas,
    plans: HashMap<String, (Limits, Quotas, Prices)>,
    shared: HashMap<String, Arc<Settings>>,
    default_settings: Arc<Settings>,
}

impl PlanBook {
    /// Resolves the configuration's defaults and plans.
    pub fn from_config(config: &Config) -> Self {
        let global_limits = config.limits.defaults();
        let global_quotas = config.quotas.clone();
        let plans: HashMap<String, (Limits, Quotas, Prices)> = config
            .plans
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    (p.limits.clone(), p.quotas.clone(), p.prices.clone()),
                )
            })
            .collect();
        let none_l = Limits::default();
        let none_q = Quotas::default();
        let shared = plans
            .iter()
            .map(|(name, (l, q, _))| {
                (
                    name.clone(),
                    Arc::new(Settings {
                        plan: Arc::from(name.as_str()),
                        windows: windows(&global_limits, l, &none_l),
                        quotas: layered(&global_quotas, q, &none_q),
                    }),
                )
            })
            .collect();
        let default_settings = Arc::new(Settings {
            plan: Arc::from(DEFAULT_PLAN),
            windows: windows(&global_limits, &none_l, &none_l),
            quotas: layered(&global_quotas, &none_q, &none_q),
        });
        Self {
            global_limits,
            global_quotas,
            plans,
            shared,
            default_settings,
        }
    }

    /// Whether `plan` is configured (any name is accepted when no plans
    /// are configured).
    pub fn knows(&self, plan: &str) -> bool {
        self.plans.is_empty() || self.plans.contains_key(plan)
    }

    /// Names of the configured plans.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.plans.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Prices of a plan (empty when it has none).
    pub fn prices(&self, plan: &str) -> Prices {
        self.plans
            .get(plan)
            .map(|(_, _, p)| p.clone())
            .unwrap_or_default()
    }

    /// Settings of a tenant not in the registry (header-only deployments).
    pub fn unregistered(&self) -> Arc<Settings> {
        self.shared
            .get(DEFAULT_PLAN)
            .cloned()
            .unwrap_or_else(|| self.default_settings.clone())
    }

    /// The settings of a tenant on `plan` with its own overrides. Tenants
    /// without overrides share their plan's settings.
    pub fn settings(&self, plan: &str, limits: &Limits, quotas: &Quotas) -> Arc<Settings> {
        let no_override = *limits == Limits::default() && *quotas == Quotas::default();
        if no_override && let Some(shared) = self.shared.get(plan) {
            return shared.clone();
        }
        let (plan_limits, plan_quotas) = self
            .plans
            .get(plan)
            .map(|(l, q, _)| (l.clone(), q.clone()))
            .unwrap_or_default();
        Arc::new(Settings {
            plan: Arc::from(plan),
            windows: windows(&self.global_limits, &plan_limits, limits),
            quotas: layered(&self.global_quotas, &plan_quotas, quotas),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).expect("write");
        Config::load(Some(&path), Vec::new()).expect("config")
    }

    #[test]
    fn tenant_beats_plan_beats_global_field_by_field() {
        let book = PlanBook::from_config(&config(
            "limits: {requests_per_minute: 10, requests_per_day: 1000}\n\
             quotas: {max_records: 5, max_api_keys: 2}\n\
             plans:\n  pro:\n    limits: {requests_per_minute: 100}\n    quotas: {max_records: 50}\n",
        ));
        let pro = book.settings("pro", &Limits::default(), &Quotas::default());
        assert_eq!(
            pro.windows,
            vec![Window::per_minute(100), Window::per_day(1000)]
        );
        assert_eq!(pro.quotas.max_records, Some(50));
        assert_eq!(pro.quotas.max_api_keys, Some(2));
        let own = book.settings(
            "pro",
            &Limits {
                requests_per_hour: Some(7),
                ..Limits::default()
            },
            &Quotas {
                max_api_keys: Some(9),
                ..Quotas::default()
            },
        );
        assert_eq!(
            own.windows,
            vec![
                Window::per_minute(100),
                Window::per_hour(7),
                Window::per_day(1000)
            ]
        );
        assert_eq!(own.quotas.max_api_keys, Some(9));
        assert_eq!(own.quotas.max_records, Some(50));
        // Unknown plan: globals only.
        let other = book.settings("gold", &Limits::default(), &Quotas::default());
        assert_eq!(other.quotas.max_records, Some(5));
        assert!(!book.knows("gold"));
        assert!(book.knows("pro"));
    }

    #[test]
    fn tenants_without_overrides_share_one_settings_object() {
        let book =
            PlanBook::from_config(&config("plans:\n  free:\n    quotas: {max_records: 1}\n"));
        let a = book.settings("free", &Limits::default(), &Quotas::default());
        let b = book.settings("free", &Limits::default(), &Quotas::default());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a, &book.unregistered()));
    }
}
