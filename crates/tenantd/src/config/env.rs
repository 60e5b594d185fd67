//! `TENANTD_*` environment overrides as a figment provider.
//!
//! Variables are read from an iterator rather than the process environment
//! so that tests can layer configurations without mutating global state.

use std::str::FromStr;

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

/// Prefix of every tenantd variable.
pub const ENV_PREFIX: &str = "TENANTD_";

/// How an alias's text becomes a value.
#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Text,
    List,
    Json,
}

/// The documented variable names of the `tenant` keys and static tenants.
const ALIASES: &[(&str, &[&str], Kind)] = &[
    ("TENANTD_TENANT_ENABLED", &["tenant", "enabled"], Kind::Bool),
    (
        "TENANTD_TENANT_DEFAULT",
        &["tenant", "default_tenant"],
        Kind::Text,
    ),
    (
        "TENANTD_TENANT_HEADER",
        &["tenant", "tenant_header"],
        Kind::Text,
    ),
    (
        "TENANTD_TENANT_REQUIRED",
        &["tenant", "tenant_required"],
        Kind::Bool,
    ),
    (
        "TENANTD_TENANT_ALLOWED",
        &["tenant", "allowed_tenants"],
        Kind::List,
    ),
    (
        "TENANTD_TENANT_REGISTRY",
        &["tenant", "registry"],
        Kind::Bool,
    ),
    // Static tenants and the default tenant's id.
    ("TENANTD_TENANT_CONFIGS", &["tenants"], Kind::Json),
    (
        "TENANTD_DEFAULT_TENANT_ID",
        &["tenant", "default_tenant"],
        Kind::Text,
    ),
    ("TENANTD_ADMIN_KEY", &["admin", "key"], Kind::Text),
    ("TENANTD_KEY_PEPPER", &["auth", "key_pepper"], Kind::Text),
    ("TENANTD_AUTH_REQUIRED", &["auth", "required"], Kind::Bool),
    (
        "TENANTD_JWT_SECRET",
        &["auth", "jwt", "hs256_secret"],
        Kind::Text,
    ),
    ("TENANTD_REDIS_URL", &["limits", "redis_url"], Kind::Text),
    (
        "TENANTD_BILLING_WEBHOOK_URL",
        &["billing", "webhook_url"],
        Kind::Text,
    ),
    (
        "TENANTD_BILLING_WEBHOOK_SECRET",
        &["billing", "webhook_secret"],
        Kind::Text,
    ),
    ("TENANTD_BIND", &["server", "bind"], Kind::Text),
    (
        "TENANTD_JOBS_ALLOW_LOCAL_PATHS",
        &["jobs", "allow_local_paths"],
        Kind::Bool,
    ),
    ("TENANTD_DATA_DIR", &["storage", "data_dir"], Kind::Text),
    (
        "TENANTD_STORAGE_BACKEND",
        &["storage", "backend"],
        Kind::Text,
    ),
    ("TENANTD_STORAGE_URL", &["storage", "url"], Kind::Text),
    (
        "TENANTD_STORAGE_ADMIN_URL",
        &["storage", "admin_url"],
        Kind::Text,
    ),
    ("TENANTD_STORAGE_EAGER", &["storage", "eager"], Kind::Bool),
    (
        "TENANTD_STORAGE_MIGRATE_URL",
        &["storage", "migrate_url"],
        Kind::Text,
    ),
    ("TENANTD_LOG_FORMAT", &["log", "format"], Kind::Text),
];

/// The overrides found in an environment, and the variables that could not
/// be read (reported with the rest of the configuration's problems).
pub(super) struct EnvOverrides {
    dict: Dict,
    pub(super) problems: Vec<String>,
}

/// Parses the documented booleans: true/false/1/0/yes/no in any case.
pub(super) fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// Splits a comma-separated list, trimming items and dropping empty ones.
pub(super) fn parse_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl EnvOverrides {
    /// Picks the `TENANTD_*` variables out of `vars`.
    pub(super) fn collect<I>(vars: I) -> Self
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut out = Self {
            dict: Dict::new(),
            problems: Vec::new(),
        };
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        // Deterministic: aliases and paths applied in name order.
        vars.sort();
        for (name, text) in vars {
            if let Some((_, path, kind)) = ALIASES.iter().find(|(n, _, _)| *n == name) {
                let value = match kind {
                    Kind::Bool => match parse_bool(&text) {
                        Some(b) => Value::from(b),
                        None => {
                            out.problems.push(format!(
                                "{name}: expected a boolean (true/false/1/0/yes/no), got '{}'",
                                text.trim()
                            ));
                            continue;
                        }
                    },
                    Kind::Text => Value::from(text.trim().to_owned()),
                    Kind::List => Value::from(parse_list(&text)),
                    Kind::Json => {
                        let parsed = serde_json::from_str::<serde_json::Value>(&text)
                            .map_err(|e| format!("{name}: invalid JSON: {e}"))
                            .and_then(|json| {
                                Value::serialize(json)
                                    .map_err(|e| format!("{name}: unusable value: {e}"))
                            });
                        match parsed {
                            Ok(value) => value,
                            Err(problem) => {
                                out.problems.push(problem);
                                continue;
                            }
                        }
                    }
                };
                out.insert(path, value);
            } else if let Some(rest) = name.strip_prefix(ENV_PREFIX)
                && rest.contains("__")
            {
                let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
                if path.iter().any(String::is_empty) {
                    out.problems.push(format!("{name}: empty key segment"));
                    continue;
                }
                let value = Value::from_str(&text).unwrap_or_else(|_| Value::from(text.clone()));
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                out.insert(&path, value);
            }
        }
        out
    }

    fn insert(&mut self, path: &[&str], value: Value) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut dict = &mut self.dict;
        for key in parents {
            let entry = dict
                .entry((*key).to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            let Value::Dict(_, inner) = entry else {
                return;
            };
            dict = inner;
        }
        dict.insert((*last).to_owned(), value);
    }
}

impl Provider for EnvOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable(s) TENANTD_*")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}
