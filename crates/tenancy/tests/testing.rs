//! The test-only constructors (feature `testing`): what a storage or
//! handler test gets when it needs a context without a request.

use tower_tenancy::{Principal, PrincipalKind, TenantContext, TenantId, TenantSource};

#[test]
fn a_test_context_carries_what_it_was_given() {
    let acme: TenantId = "acme".parse().expect("valid");
    let ctx = TenantContext::for_testing(acme.clone(), TenantSource::Header);
    assert_eq!(ctx.tenant_id(), &acme);
    assert_eq!(ctx.source(), TenantSource::Header);
    assert!(ctx.principal().is_none());
}

#[test]
fn a_test_context_can_act_as_a_principal_of_its_tenant() {
    let acme: TenantId = "acme".parse().expect("valid");
    let principal = Principal::new(
        acme.clone(),
        PrincipalKind::ApiKey {
            key_id: "key_1".into(),
        },
        vec!["records:read".to_owned()],
    );
    let ctx = TenantContext::for_testing_as(principal.clone());
    assert_eq!(ctx.tenant_id(), &acme);
    assert_eq!(ctx.source(), TenantSource::Credential);
    assert_eq!(ctx.principal(), Some(&principal));
}
