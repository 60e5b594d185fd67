//! OIDC bindings and issuer fetches (issue 12, items 3 and 4).
//!
//! An (issuer, client id) pair belongs to one tenant: a second tenant
//! cannot take it over by create, update, static configuration or import,
//! and a token's tenant claim can only confirm the pair's tenant. An issuer
//! that hangs or fails delays only its own tokens, once per failure period.

use crate::support::{TestApp, TestStorage};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tenantd_testing::backends;

use jsonwebtoken::{EncodingKey, Header, encode};
use reqwest::Method;
use serde_json::{Value, json};
use tenantd::tenants::TenantRepo;

use super::{App, admin_config, assert_error};

/// A P-256 test key (PKCS#8 DER, base64) and its public point, as in the
/// admin suite. Test data only.
const EC_PRIVATE_PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOtUGuYgkqmlHiiaROCG4jOji8wSQO8qdD1UpL+8Tgw+hRANCAASDGUn+K53VduGXYlmSZ7BrUrtrg/oCW6RK/ohPKy8px8iq1FSoOmPurMXnnDnzRsJop3EkLCJP8hRVTiRnpdDk";
const EC_X: &str = "gxlJ_iud1Xbhl2JZkmewa1K7a4P6AlukSv6ITysvKcc";
const EC_Y: &str = "yKrUVKg6Y-6sxeecOfNGwmincSQsIk_yFFVOJGel0OQ";
/// The refusal's detail: names no tenant.
const TAKEN: &str = "OIDC issuer and client id (token audience) are already bound to another \
                     tenant; each issuer and client id pair can belong to one tenant only";

/// An issuer on a random port serving its discovery document and a JWKS
/// with the test key; its URL.
async fn issuer() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
                                "alg": "ES256", "x": EC_X, "y": EC_Y}]});
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || async move { axum::Json(jwks) }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    issuer
}

/// An "issuer" that accepts connections and never answers; its URL and
/// the number of connections it has accepted.
async fn black_hole() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (url, accepted)
}

fn oidc(issuer: &str, client: &str) -> Value {
    json!({"issuer": issuer, "client_id": client, "client_secret": "s3cret-value",
           "redirect_url": "https://api.test/cb"})
}

/// An ES256 token of the test key with the usual claims plus `extra`.
fn token(issuer: &str, aud: Value, extra: Value) -> String {
    use base64::Engine as _;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut claims = json!({"iss": issuer, "aud": aud, "sub": "alice", "exp": now + 300});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(EC_PRIVATE_PKCS8)
        .expect("base64");
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".to_owned());
    encode(&header, &claims, &EncodingKey::from_ec_der(&der)).expect("encode")
}

async fn post_tenant(app: &App, body: Value) -> reqwest::Response {
    app.admin(Method::POST, "/admin/tenants")
        .json(&body)
        .send()
        .await
        .expect("create")
}

async fn patch_tenant(app: &App, id: &str, body: Value) -> reqwest::Response {
    app.admin(Method::PATCH, &format!("/admin/tenants/{id}"))
        .json(&body)
        .send()
        .await
        .expect("patch")
}

/// Names of the records `key`'s tenant sees.
async fn names(app: &App, key: &str) -> Vec<String> {
    let resp = app
        .with_key(Method::GET, key, "/records")
        .send()
        .await
        .expect("list");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    body["results"]
        .as_array()
        .expect("a page of records")
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect()
}

/// Creates a record with `token`; its status.
async fn write_with(app: &App, token: &str, name: &str) -> u16 {
    app.client
        .post(format!("{}/records", app.base))
        .bearer_auth(token)
        .json(&json!({"name": name, "kind": "service", "url": "https://example.com"}))
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

#[backends]
async fn an_issuer_and_client_id_pair_cannot_be_taken_by_another_tenant() {
    let issuer = issuer().await;
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let (_, acme_key) = app
        .create_tenant(json!({"id": "acme", "name": "Acme", "oidc": oidc(&issuer, "shared-app")}))
        .await;

    // Create: the same pair, in any spelling of the issuer, is refused,
    // and the refusal names no tenant.
    for spelling in [issuer.clone(), format!("{issuer}/")] {
        let resp = post_tenant(
            &app,
            json!({"id": "initech", "name": "Initech", "oidc": oidc(&spelling, "shared-app")}),
        )
        .await;
        let detail = assert_error(resp, 409, "conflict").await;
        assert_eq!(detail, TAKEN);
        assert!(!detail.contains("acme"));
    }
    // Another client id of the same issuer is another pair: allowed.
    let (_, initech_key) = app
        .create_tenant(
            json!({"id": "initech", "name": "Initech", "oidc": oidc(&issuer, "initech-app")}),
        )
        .await;

    // Update: taking acme's pair is refused; other edits still work.
    let resp = patch_tenant(
        &app,
        "initech",
        json!({"oidc": oidc(&issuer, "shared-app")}),
    )
    .await;
    assert_eq!(assert_error(resp, 409, "conflict").await, TAKEN);
    let resp = patch_tenant(&app, "initech", json!({"name": "Initech Inc"})).await;
    assert_eq!(resp.status(), 200);
    let (_, globex_key) = app
        .create_tenant(json!({"id": "globex", "name": "Globex"}))
        .await;
    let resp = patch_tenant(&app, "globex", json!({"oidc": oidc(&issuer, "shared-app")})).await;
    assert_eq!(assert_error(resp, 409, "conflict").await, TAKEN);

    // Each tenant's users land in their own tenant, whatever was tried.
    let acme_token = token(&issuer, json!("shared-app"), json!({}));
    let initech_token = token(&issuer, json!("initech-app"), json!({}));
    assert_eq!(write_with(&app, &acme_token, "acme-by-token").await, 201);
    assert_eq!(
        write_with(&app, &initech_token, "initech-by-token").await,
        201
    );
    assert_eq!(names(&app, &acme_key).await, vec!["acme-by-token"]);
    assert_eq!(names(&app, &initech_key).await, vec!["initech-by-token"]);
    assert!(names(&app, &globex_key).await.is_empty());
    app.finish().await;
}

#[backends]
async fn a_tenant_claim_can_only_confirm_the_bound_tenant() {
    let issuer = issuer().await;
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let (_, acme_key) = app
        .create_tenant(json!({"id": "acme", "name": "Acme", "oidc": oidc(&issuer, "acme-app")}))
        .await;
    let (_, initech_key) = app
        .create_tenant(
            json!({"id": "initech", "name": "Initech", "oidc": oidc(&issuer, "initech-app")}),
        )
        .await;
    let refused = |token: String, why: &'static str| {
        let app = &app;
        async move {
            let resp = app
                .client
                .get(format!("{}/records", app.base))
                .bearer_auth(token)
                .send()
                .await
                .expect("get");
            assert_eq!(
                assert_error(resp, 401, "unauthorized").await,
                format!("Invalid token: {why}")
            );
        }
    };
    // acme's token naming initech (or a tenant that does not exist).
    for other in ["initech", "ghost"] {
        let t = token(&issuer, json!("acme-app"), json!({"tenant_id": other}));
        refused(t, "tenant claim does not match issuer").await;
    }
    // A token for both applications needs a claim to choose one.
    let both = json!(["acme-app", "initech-app"]);
    refused(
        token(&issuer, both.clone(), json!({})),
        "audiences of more than one tenant",
    )
    .await;
    // An audience no tenant binds, with or without a claim.
    refused(
        token(&issuer, json!("other-app"), json!({})),
        "wrong audience",
    )
    .await;
    let t = token(&issuer, json!("other-app"), json!({"tenant_id": "acme"}));
    refused(t, "wrong audience").await;

    // A claim that agrees is accepted, and picks among the audiences.
    let t = token(&issuer, json!("acme-app"), json!({"tenant_id": "acme"}));
    assert_eq!(write_with(&app, &t, "acme-claimed").await, 201);
    let t = token(&issuer, both, json!({"tenant_id": "initech"}));
    assert_eq!(write_with(&app, &t, "initech-chosen").await, 201);
    assert_eq!(names(&app, &acme_key).await, vec!["acme-claimed"]);
    assert_eq!(names(&app, &initech_key).await, vec!["initech-chosen"]);
    app.finish().await;
}

#[backends]
async fn concurrent_creates_bind_a_pair_once() {
    let issuer = "https://login.example.com";
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let creates: Vec<_> = (0..8)
        .map(|i| {
            let body =
                json!({"id": format!("t{i}"), "name": "T", "oidc": oidc(issuer, "shared-app")});
            post_tenant(&app, body)
        })
        .collect();
    let mut created = 0;
    for resp in futures_util::future::join_all(creates).await {
        if resp.status() == 201 {
            created += 1;
        } else {
            assert_eq!(assert_error(resp, 409, "conflict").await, TAKEN);
        }
    }
    assert_eq!(created, 1);
    app.finish().await;
}

fn static_tenant(id: &str, issuer: &str, client: &str) -> tenantd::tenants::statics::StaticTenant {
    tenantd::tenants::statics::StaticTenant {
        tenant_id: Some(id.to_owned()),
        name: Some(id.to_owned()),
        oidc_issuer: Some(issuer.to_owned()),
        oidc_client_id: Some(client.to_owned()),
        oidc_client_secret: Some("s3cret-value".to_owned()),
        oidc_redirect_url: Some("https://api.test/cb".to_owned()),
        ..Default::default()
    }
}

#[backends]
async fn static_tenants_and_api_tenants_share_one_rule() {
    let issuer = "https://login.example.com";
    // Two static tenants on one pair: the configuration is refused,
    // naming both.
    let configs = json!([
        {"tenant_id": "acme", "name": "Acme", "oidc_issuer": issuer,
         "oidc_client_id": "shared-app", "oidc_client_secret": "s",
         "oidc_redirect_url": "https://api.test/cb"},
        {"tenant_id": "initech", "name": "Initech", "oidc_issuer": format!("{issuer}/"),
         "oidc_client_id": "shared-app", "oidc_client_secret": "s",
         "oidc_redirect_url": "https://api.test/cb"}
    ]);
    let err = tenantd::tenants::statics::load_config(
        None,
        [("TENANTD_TENANT_CONFIGS".to_owned(), configs.to_string())],
    )
    .expect_err("duplicate pair");
    let text = err.to_string();
    assert!(
        text.contains("tenants[1] (initech)") && text.contains("tenants[0] (acme)"),
        "{text}"
    );

    // A static tenant's pair cannot be taken through the API ...
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        admin_config(dir.path(), |c| {
            c.tenants = vec![static_tenant("acme", issuer, "shared-app")];
        }),
    )
    .await;
    let resp = post_tenant(
        &app,
        json!({"id": "initech", "name": "Initech", "oidc": oidc(issuer, "shared-app")}),
    )
    .await;
    assert_eq!(assert_error(resp, 409, "conflict").await, TAKEN);
    app.create_tenant(
        json!({"id": "globex", "name": "Globex", "oidc": oidc(issuer, "globex-app")}),
    )
    .await;
    app.finish().await;
    // ... nor an API tenant's by the configuration: the server does not
    // start, and says which tenants clash.
    let config = admin_config(dir.path(), |c| {
        c.tenants = vec![
            static_tenant("acme", issuer, "shared-app"),
            static_tenant("hooli", issuer, "globex-app"),
        ];
    });
    let err = match tenantd::Server::build(config, None).await {
        Ok(_) => panic!("a static tenant took an API tenant's OIDC pair"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("hooli") && err.contains("globex"), "{err}");
}

#[backends]
async fn an_import_cannot_bring_a_taken_pair() {
    let issuer = "https://login.example.com";
    let source = TestStorage::new();
    let target = TestStorage::new();
    let app = TestApp::start(&source, admin_config(source.path(), |_| {})).await;
    app.create_tenant(json!({"id": "acme", "name": "Acme", "oidc": oidc(issuer, "shared-app")}))
        .await;
    app.finish().await;
    let app = TestApp::start(&target, admin_config(target.path(), |_| {})).await;
    app.create_tenant(
        json!({"id": "initech", "name": "Initech", "oidc": oidc(&format!("{issuer}/"), "shared-app")}),
    )
    .await;
    app.finish().await;

    let open = |dir: &std::path::Path| {
        let config = admin_config(dir, |_| {});
        async move {
            tenantd::store::Store::open(
                &config.storage,
                2,
                tenantd::clock::Clock::system(),
                tenantd::store::DataUpgrades::none(),
            )
            .await
            .expect("store")
            .admin()
        }
    };
    let acme = tenancy::TenantId::new("acme").expect("id");
    let mut dump = Vec::new();
    let clock = tenantd::clock::Clock::system();
    tenantd::portable::export(&open(source.path()).await, &acme, None, &mut dump, &clock)
        .await
        .expect("export");
    let store = open(target.path()).await;
    let schema = tenantd::portable::PortableRepo::schema_version(store.db());
    let dump = tenantd::portable::read(dump.as_slice(), schema, tenantd::portable::Trust::Unsigned)
        .expect("read");
    let err = tenantd::portable::import(&store, &dump, &clock)
        .await
        .expect_err("taken pair");
    assert!(err.to_string().contains(TAKEN), "{err}");
    assert!(
        store.db().get_tenant(&acme).await.expect("get").is_none(),
        "nothing imported"
    );
}

#[backends]
async fn an_unreachable_issuer_delays_no_other_tenant() {
    let good = issuer().await;
    let (hung, accepted) = black_hole().await;
    let (unknown, unknown_accepted) = black_hole().await;
    let dir = TestStorage::new();
    // The hang outlasts the deadline below: only not waiting meets it.
    let app = TestApp::start(
        &dir,
        admin_config(dir.path(), |c| {
            // Far above the deadlines below, so a request that waited for the
            // hung fetch cannot pass for one that did not (a loaded machine
            // gets generous margins).
            c.auth.jwt.jwks_timeout_ms = 8000;
            c.auth.jwt.jwks_failure_ttl_secs = 60;
        }),
    )
    .await;
    app.create_tenant(json!({"id": "acme", "name": "Acme", "oidc": oidc(&good, "acme-app")}))
        .await;
    app.create_tenant(json!({"id": "globex", "name": "Globex", "oidc": oidc(&hung, "globex-app")}))
        .await;
    let get = |token: String| {
        let client = app.client.clone();
        let url = format!("{}/records", app.base);
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("get")
        }
    };

    // Tokens no tenant could accept cost no fetch: an unknown issuer, or
    // globex's issuer with an audience it does not bind.
    let resp = get(token(&unknown, json!("x"), json!({}))).await;
    assert_eq!(resp.status(), 401);
    let resp = get(token(&hung, json!("not-globex"), json!({}))).await;
    assert_eq!(
        assert_error(resp, 401, "unauthorized").await,
        "Invalid token: wrong audience"
    );
    assert_eq!(unknown_accepted.load(Ordering::SeqCst), 0);
    assert_eq!(accepted.load(Ordering::SeqCst), 0);

    // Several requests hang on globex's issuer ...
    let hanging: Vec<_> = (0..4)
        .map(|_| tokio::spawn(get(token(&hung, json!("globex-app"), json!({})))))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... while acme's first token (its keys not yet fetched) goes through.
    let started = Instant::now();
    let resp = get(token(&good, json!("acme-app"), json!({}))).await;
    assert_eq!(resp.status(), 200);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(4000), "acme waited {took:?}");
    for h in hanging {
        let resp = h.await.expect("join");
        assert_eq!(
            assert_error(resp, 401, "unauthorized").await,
            "Invalid token: issuer keys unavailable"
        );
    }
    // One fetch was shared by all four, and its failure is remembered.
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "single flight");
    let started = Instant::now();
    let resp = get(token(&hung, json!("globex-app"), json!({}))).await;
    assert_eq!(resp.status(), 401);
    assert!(started.elapsed() < Duration::from_millis(4000));
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "no new fetch");
    app.finish().await;
}
