//! Unit tests of the model: validation and conversions.

use super::*;

#[test]
fn every_problem_is_reported_with_its_field() {
    let spec = TenantSpec {
        security: Security {
            allowed_ips: vec!["10.0.0.0/8".into(), "10.0.0.0/99".into(), "1.2.3.4".into()],
            ..Security::default()
        },
        oidc: Some(Oidc {
            issuer: "https://login.example.com".into(),
            client_id: String::new(),
            client_secret: None,
            redirect_url: "nope".into(),
            scopes: default_scopes(),
        }),
        ..TenantSpec::default()
    };
    let problems = validate("tenants[1].", "", Some("x"), "Gold!", &spec);
    let text = problems.join("\n");
    for field in [
        "tenants[1].name",
        "tenants[1].email",
        "tenants[1].plan",
        "tenants[1].security.allowed_ips[1]",
        "tenants[1].oidc.client_id",
        "tenants[1].oidc.client_secret",
        "tenants[1].oidc.redirect_url",
    ] {
        assert!(text.contains(field), "{field} missing from\n{text}");
    }
    assert_eq!(problems.len(), 7, "{text}");
}

#[test]
fn an_issuer_is_a_plain_http_url() {
    for ok in [
        "https://login.example.com",
        "http://127.0.0.1:8080/realms/acme/",
    ] {
        assert!(is_issuer_url(ok), "{ok}");
    }
    for bad in [
        "https://user:pw@login.example.com",
        "https://login.example.com/?tenant=a",
        "https://login.example.com/#x",
        "https:///path",
        "ftp://login.example.com",
    ] {
        assert!(!is_issuer_url(bad), "{bad}");
    }
}

#[test]
fn a_nul_in_any_text_is_reported_with_its_field() {
    let mut spec = TenantSpec {
        storage: Some(StorageBinding {
            url: Some("postgres://h/\0".into()),
            ..StorageBinding::default()
        }),
        ..TenantSpec::default()
    };
    spec.features
        .insert("beta".into(), Value::String("\0".into()));
    let problems = validate("tenants[0].", "n", Some("a\0@b"), "free", &spec).join("\n");
    for field in [
        "tenants[0].email",
        "tenants[0].features.beta",
        "tenants[0].storage.url",
    ] {
        assert!(
            problems.contains(&format!("{field}: must not contain")),
            "{field} missing from\n{problems}"
        );
    }
}

#[test]
fn single_addresses_are_host_networks() {
    assert_eq!(
        parse_net("192.0.2.7"),
        Some("192.0.2.7/32".parse().expect("net"))
    );
    assert!(parse_net("::1").is_some());
    assert!(parse_net("300.0.0.1").is_none());
}

#[test]
fn patch_distinguishes_absent_from_null() {
    let p: PatchTenant = serde_json::from_str(r#"{"email": null}"#).expect("json");
    assert_eq!(p.email, Some(None));
    let p: PatchTenant = serde_json::from_str(r#"{}"#).expect("json");
    assert_eq!(p.email, None);
    assert!(serde_json::from_str::<PatchTenant>(r#"{"colour": 1}"#).is_err());
}
