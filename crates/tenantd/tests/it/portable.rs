//! `tenantd tenants export` / `import`: a tenant's dump restores it
//! elsewhere whole (records searchable, keys working, audit chain intact),
//! and a damaged or duplicate import writes nothing.

use crate::support;
use crate::support::{TestApp, TestStorage};
use tenantd_testing::backends;

use std::path::Path;
use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};
use support::{ADMIN_KEY, App, config};

const PEPPER: &str = "pepper-shared-by-both-deployments-0123456789";

fn cfg(dir: &Path) -> tenantd::Config {
    config(dir, |c| {
        c.admin.key = Some(ADMIN_KEY.to_owned());
        c.auth.key_pepper = Some(PEPPER.to_owned());
        c.jobs.workers = Some(0);
    })
}

fn cli(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("TENANTD_KEY_PEPPER", PEPPER)
        .env_remove("TENANTD_CONFIG")
        .envs(support::backend_env(dir))
        .output()
        .expect("run tenantd");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A dump key file (mode 0600) in `dir`, for `--dump-key-file`.
fn key_file(dir: &Path) -> String {
    let path = dir.join("dump.key");
    std::fs::write(&path, "0123456789abcdef0123456789abcdef0123456789abcdef\n").expect("key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    path.to_str().expect("utf-8").to_owned()
}

async fn create(app: &App, id: &str) -> String {
    app.create_tenant(json!({"id": id, "name": id, "quotas": {"max_records": 50}}))
        .await
        .1
}

#[backends]
async fn a_dump_restores_the_tenant_whole_in_another_deployment() {
    let source = TestStorage::new();
    let app = TestApp::start(&source, cfg(source.path())).await;
    let key = create(&app, "acme").await;
    create(&app, "beta").await;
    for name in ["payments-api", "billing-worker", "search-gateway"] {
        let resp = app
            .with_key(Method::POST, &key, "/records")
            .json(
                &json!({"name": name, "kind": "service", "url": "https://example.com",
                          "tags": ["prod"], "fields": {"team": "core"}}),
            )
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 201);
    }
    let resp = app
        .with_key(Method::POST, &key, "/detect/submit")
        .json(&json!({"repository_url": "https://example.com/r.git"}))
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status(), 202);
    let resp = app
        .req(Method::POST, "beta", "/records")
        .json(&json!({"name": "beta-only", "kind": "service", "url": "https://example.com"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    app.finish().await;

    let work = tempfile::tempdir().expect("tempdir");
    let dump = work.path().join("acme.ndjson");
    let dump_key = key_file(work.path());
    let (ok, _, err) = cli(
        source.path(),
        &[
            "tenants",
            "export",
            "acme",
            "--output",
            dump.to_str().expect("utf-8"),
            "--dump-key-file",
            &dump_key,
        ],
    );
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&dump).expect("dump");
    let first: Value = serde_json::from_str(text.lines().next().expect("header")).expect("json");
    assert_eq!(first["type"], "header");
    assert_eq!(first["format"], "tenantd.tenant-export");
    assert_eq!(first["tenant_id"], "acme");
    assert!(
        !text.contains("beta-only"),
        "another tenant's row in the dump"
    );
    assert!(!text.contains(&key), "a plain API key in the dump");

    let target = TestStorage::new();
    let (ok, out, err) = cli(
        target.path(),
        &[
            "tenants",
            "import",
            dump.to_str().expect("utf-8"),
            "--dump-key-file",
            &dump_key,
        ],
    );
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["imported"], "acme");
    assert_eq!(report["rows"]["records"], 3);
    let (ok, out, _) = cli(target.path(), &["audit", "verify"]);
    assert!(ok, "the imported audit chain verifies: {out}");

    let app = TestApp::start(&target, cfg(target.path())).await;
    // The key works (same pepper), records are there and searchable.
    let resp = app
        .with_key(Method::POST, &key, "/records/search")
        .json(&json!({"query": "billing"}))
        .send()
        .await
        .expect("search");
    assert_eq!(resp.status(), 200);
    let page: Value = resp.json().await.expect("json");
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["results"][0]["name"], "billing-worker");
    let resp = app
        .with_key(Method::GET, &key, "/tenant")
        .send()
        .await
        .expect("me");
    let me: Value = resp.json().await.expect("json");
    assert_eq!(
        me["quotas"]["max_records"],
        json!({"limit": 50, "used": 3}),
        "{me}"
    );
    assert_eq!(me["quotas"]["max_detections_per_month"]["used"], 1, "{me}");
    let resp = app
        .with_key(Method::GET, &key, "/detect")
        .send()
        .await
        .expect("jobs");
    let jobs: Value = resp.json().await.expect("json");
    assert_eq!(jobs["total"], 1);
    // Only acme came over.
    let resp = app
        .admin(Method::GET, "/admin/tenants/beta")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 404);
    app.finish().await;

    // A second import of the same tenant is refused and changes nothing.
    let (ok, _, err) = cli(
        target.path(),
        &[
            "tenants",
            "import",
            dump.to_str().expect("utf-8"),
            "--dump-key-file",
            &dump_key,
        ],
    );
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");
}

#[backends]
async fn a_damaged_dump_is_refused_before_anything_is_written() {
    let source = TestStorage::new();
    let app = TestApp::start(&source, cfg(source.path())).await;
    create(&app, "acme").await;
    app.finish().await;
    let work = tempfile::tempdir().expect("tempdir");
    let dump = work.path().join("acme.ndjson");
    let key = key_file(work.path());
    let (ok, _, err) = cli(
        source.path(),
        &[
            "tenants",
            "export",
            "acme",
            "--output",
            dump.to_str().expect("utf-8"),
            "--dump-key-file",
            &key,
        ],
    );
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&dump).expect("dump");

    let cases = [
        (
            "edited",
            text.replacen("\"name\":\"acme\"", "\"name\":\"evil\"", 1),
        ),
        (
            "truncated",
            text.lines().take(3).map(|l| format!("{l}\n")).collect(),
        ),
        (
            "other tenant",
            text.replace("\"tenant_id\":\"acme\"", "\"tenant_id\":\"beta\""),
        ),
    ];
    for (name, damaged) in cases {
        assert_ne!(damaged, text, "{name}: the case changes nothing");
        let path = work.path().join(format!("{name}.ndjson"));
        std::fs::write(&path, damaged).expect("write");
        let target = TestStorage::new();
        let (ok, _, err) = cli(
            target.path(),
            &[
                "tenants",
                "import",
                path.to_str().expect("utf-8"),
                "--dump-key-file",
                &key,
            ],
        );
        assert!(!ok, "{name}: accepted");
        assert!(err.contains("invalid export file"), "{name}: {err}");
        let (_, out, _) = cli(target.path(), &["tenants", "list"]);
        assert!(
            !out.contains("acme"),
            "{name}: something was written: {out}"
        );
    }
    let (ok, _, err) = cli(
        source.path(),
        &["tenants", "export", "ghost", "--dump-key-file", &key],
    );
    assert!(!ok);
    assert!(err.contains("not found"), "{err}");
}
