use super::*;
use std::io::Write;
use std::path::PathBuf;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn yaml(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write");
    file
}

#[test]
fn defaults_keep_a_single_tenant_deployment_unchanged() {
    let c = Config::load(None, vars(&[])).expect("defaults are valid");
    assert!(!c.tenant.enabled);
    assert_eq!(c.tenant.default_tenant.as_str(), "default");
    assert_eq!(c.tenant.tenant_header, "X-Tenant-ID");
    assert!(c.tenant.tenant_required);
    assert!(c.tenant.allowed_tenants.is_empty());
    assert_eq!(c.server.bind.to_string(), "127.0.0.1:8000");
    assert_eq!(c.server.max_body_bytes, 1 << 20);
    assert_eq!(c.storage.data_dir, PathBuf::from("./data"));
}

#[test]
fn env_applies_without_a_file() {
    let c = Config::load(
        None,
        vars(&[
            ("TENANTD_TENANT_ENABLED", "YES"),
            ("TENANTD_TENANT_DEFAULT", "my-tenant"),
            ("TENANTD_TENANT_HEADER", "X-Custom-Tenant"),
            ("TENANTD_TENANT_REQUIRED", "0"),
            ("TENANTD_TENANT_ALLOWED", " tenant-a, ,tenant-b ,my-tenant,"),
        ]),
    )
    .expect("valid");
    assert!(c.tenant.enabled);
    assert_eq!(c.tenant.default_tenant.as_str(), "my-tenant");
    assert_eq!(c.tenant.tenant_header, "X-Custom-Tenant");
    assert!(!c.tenant.tenant_required);
    let allowed: Vec<&str> = c
        .tenant
        .allowed_tenants
        .iter()
        .map(|t| t.as_str())
        .collect();
    assert_eq!(allowed, ["tenant-a", "tenant-b", "my-tenant"]);
}

#[test]
fn env_beats_file_beats_defaults() {
    let file = yaml(
        "tenant:\n  enabled: true\n  default_tenant: from-file\n  tenant_header: X-File\nserver:\n  max_body_bytes: 2048\n",
    );
    let c = Config::load(
        Some(file.path()),
        vars(&[
            ("TENANTD_TENANT_HEADER", "X-Env"),
            ("TENANTD_SERVER__BIND", "0.0.0.0:9000"),
        ]),
    )
    .expect("valid");
    assert!(c.tenant.enabled, "file over default");
    assert_eq!(c.tenant.default_tenant.as_str(), "from-file");
    assert_eq!(c.tenant.tenant_header, "X-Env", "env over file");
    assert_eq!(c.server.max_body_bytes, 2048);
    assert_eq!(
        c.server.bind.to_string(),
        "0.0.0.0:9000",
        "generic path override"
    );
    assert!(c.tenant.tenant_required, "default kept");
}

#[test]
fn booleans_accept_every_documented_spelling() {
    for (text, expected) in [
        ("true", true),
        ("TRUE", true),
        ("1", true),
        ("Yes", true),
        ("false", false),
        ("False", false),
        ("0", false),
        ("no", false),
        (" NO ", false),
    ] {
        let c = Config::load(None, vars(&[("TENANTD_TENANT_ENABLED", text)])).expect("valid");
        assert_eq!(c.tenant.enabled, expected, "{text}");
    }
}

#[test]
fn all_problems_are_reported_at_once_naming_their_keys() {
    let err = Config::load(
        None,
        vars(&[
            ("TENANTD_TENANT_ENABLED", "maybe"),
            ("TENANTD_TENANT_REQUIRED", "sometimes"),
        ]),
    )
    .expect_err("invalid");
    assert_eq!(err.0.len(), 2, "{err}");
    assert!(err.0[0].contains("TENANTD_TENANT_ENABLED") && err.0[0].contains("maybe"));
    assert!(err.0[1].contains("TENANTD_TENANT_REQUIRED"));

    let file = yaml("tenant:\n  default_tenant: \"a/b\"\n  bogus: 1\n");
    let err = Config::load(Some(file.path()), vars(&[])).expect_err("invalid");
    assert!(err.to_string().contains("tenant"), "{err}");
}

#[test]
fn semantic_errors_are_collected() {
    let file = yaml(
        "server:\n  max_body_bytes: 0\n  request_timeout_secs: 0\ntenant:\n  tenant_header: \"bad header\"\n",
    );
    let err = Config::load(Some(file.path()), vars(&[])).expect_err("invalid");
    assert_eq!(err.0.len(), 3, "{err}");
    assert!(err.0.iter().any(|p| p.starts_with("server.max_body_bytes")));
    assert!(err.0.iter().any(|p| p.starts_with("tenant.tenant_header")));
}

#[test]
fn unknown_keys_and_bad_values_are_rejected() {
    let file = yaml("tenant:\n  enabeld: true\n");
    let err = Config::load(Some(file.path()), vars(&[])).expect_err("typo");
    assert!(err.to_string().contains("enabeld"), "{err}");
    let err =
        Config::load(None, vars(&[("TENANTD_TENANT_DEFAULT", "../etc")])).expect_err("bad id");
    assert!(err.to_string().contains("default_tenant"), "{err}");
    let file = yaml(": : :\n  - [");
    assert!(Config::load(Some(file.path()), vars(&[])).is_err());
    let err =
        Config::load(Some(Path::new("/nonexistent/tenantd.yaml")), vars(&[])).expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/tenantd.yaml"));
}

#[test]
fn masking_hides_secrets() {
    let mut v = serde_json::json!({
        "admin_key": "hunter2", "url": "postgres://user:pw@db/x", "plain": "ok",
        "nested": {"client_secret": "s", "enabled": true}
    });
    crate::redact::json(&mut v);
    assert_eq!(v["admin_key"], "***");
    assert_eq!(v["url"], "postgres://***@db/x");
    assert_eq!(v["plain"], "ok");
    assert_eq!(v["nested"]["client_secret"], "***");
    assert_eq!(v["nested"]["enabled"], true);
}

#[test]
fn example_file_is_valid_and_complete() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tenantd.yaml");
    let c = Config::load(Some(&path), vars(&[])).expect("example config is valid");
    // Every key of the effective config appears in the example.
    let text = std::fs::read_to_string(&path).expect("example exists");
    let value = serde_json::to_value(&c).expect("serialize");
    fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
        if let serde_json::Value::Object(m) = v {
            for (k, v) in m {
                out.push(k.clone());
                keys(v, out);
            }
        }
    }
    let mut all = Vec::new();
    keys(&value, &mut all);
    for key in all {
        assert!(
            text.contains(&format!("{key}:")),
            "examples/tenantd.yaml does not document '{key}'"
        );
    }
}

#[test]
fn auth_and_registry_variables() {
    let c = Config::load(
        None,
        vars(&[
            ("TENANTD_TENANT_ENABLED", "true"),
            ("TENANTD_ADMIN_KEY", "admin-key-0123456789"),
            (
                "TENANTD_KEY_PEPPER",
                "pepper-0123456789-0123456789-0123456789",
            ),
            ("TENANTD_AUTH_REQUIRED", "yes"),
            ("TENANTD_JWT_SECRET", "jwt-secret-0123456789-0123456789-01"),
            ("TENANTD_TENANT_REGISTRY", "off"),
        ]),
    );
    // "off" is not a boolean of ours: reported, naming the variable.
    let errors = c.expect_err("invalid bool").0.join("\n");
    assert!(errors.contains("TENANTD_TENANT_REGISTRY"), "{errors}");

    let c = Config::load(
        None,
        vars(&[
            ("TENANTD_TENANT_ENABLED", "true"),
            ("TENANTD_ADMIN_KEY", "admin-key-0123456789"),
            ("TENANTD_AUTH_REQUIRED", "yes"),
            ("TENANTD_JWT_SECRET", "jwt-secret-0123456789-0123456789-01"),
            ("TENANTD_TENANT_REGISTRY", "0"),
        ]),
    )
    .expect("valid");
    assert_eq!(c.admin.key.as_deref(), Some("admin-key-0123456789"));
    assert!(c.auth.required);
    assert_eq!(c.tenant.registry, Some(false));
    let masked = c.to_masked_yaml();
    assert!(!masked.contains("admin-key-0123456789") && !masked.contains("jwt-secret"));
}

#[test]
fn weak_secrets_and_unauthenticated_required_auth_are_refused() {
    let errors = Config::load(
        None,
        vars(&[
            ("TENANTD_ADMIN_KEY", "short"),
            ("TENANTD_KEY_PEPPER", "short"),
            ("TENANTD_JWT_SECRET", "short"),
            ("TENANTD_AUTH_REQUIRED", "true"),
        ]),
    )
    .expect_err("invalid")
    .0
    .join("\n");
    for key in [
        "admin.key",
        "auth.key_pepper",
        "auth.jwt.hs256_secret",
        "auth.required: needs tenant.enabled",
    ] {
        assert!(errors.contains(key), "{key} missing from {errors}");
    }
}

#[test]
fn static_tenants_from_env_name_the_default() {
    let configs =
        r#"[{"tenant_id": "acme_corp", "name": "Acme"}, {"tenant_id": "globex", "name": "G"}]"#;
    let c = Config::load(None, vars(&[("TENANTD_TENANT_CONFIGS", configs)])).expect("valid");
    assert_eq!(c.tenants.len(), 2);
    assert_eq!(
        c.tenant.default_tenant.as_str(),
        "acme_corp",
        "first listed"
    );
    let c = Config::load(
        None,
        vars(&[
            ("TENANTD_TENANT_CONFIGS", configs),
            ("TENANTD_DEFAULT_TENANT_ID", "globex"),
        ]),
    )
    .expect("valid");
    assert_eq!(c.tenant.default_tenant.as_str(), "globex");
    let errors = Config::load(None, vars(&[("TENANTD_TENANT_CONFIGS", "{not json")]))
        .expect_err("invalid")
        .0
        .join("\n");
    assert!(
        errors.contains("TENANTD_TENANT_CONFIGS: invalid JSON"),
        "{errors}"
    );
}
