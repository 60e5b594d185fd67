//! Issue 12 item 2: dumps are authenticated, and a retired id is never
//! reused. A deleted tenant's audit trail and usage are kept under its id;
//! no path (import, static configuration, move, create) may give that id
//! to a tenant again, and a dump is imported only if the operator's dump
//! key signed it, or the operator explicitly vouches for it (`--unsigned`,
//! audited in the operator's chain).

use crate::support::{TestApp, TestStorage};
use std::path::Path;
use std::process::Command;
use tenantd_testing::backends;

use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{App, admin_config, assert_error, support};

const PEPPER: &str = "pepper-shared-by-both-deployments-0123456789";

fn cfg(dir: &Path) -> tenantd::Config {
    admin_config(dir, |c| {
        c.auth.key_pepper = Some(PEPPER.to_owned());
        c.jobs.workers = Some(0);
    })
}

/// Runs `tenantd <args> --data-dir <dir>`; (success, stdout, stderr).
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

/// A dump key file of `text`, mode 0600.
fn key_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    path.to_str().expect("utf-8").to_owned()
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8")
}

/// Exports `tenant` of `dir` to `out` with extra flags (a key or
/// `--unsigned`); asserts success.
fn export(dir: &Path, tenant: &str, out: &Path, flags: &[&str]) {
    let mut args = vec!["tenants", "export", tenant, "--output", s(out)];
    args.extend_from_slice(flags);
    let (ok, _, err) = cli(dir, &args);
    assert!(ok, "export: {err}");
}

fn import(dir: &Path, dump: &Path, flags: &[&str]) -> (bool, String, String) {
    let mut args = vec!["tenants", "import", s(dump)];
    args.extend_from_slice(flags);
    cli(dir, &args)
}

/// The tenant ids the CLI lists on `dir`.
fn tenant_ids(dir: &Path) -> Vec<String> {
    let (ok, out, err) = cli(dir, &["tenants", "list"]);
    assert!(ok, "{err}");
    let page: Value = serde_json::from_str(&out).expect("json");
    page["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect()
}

/// What an outsider who can write a file makes: a header, a `tenants` row
/// and an end line whose SHA-256 they computed themselves.
fn forged_dump(tenant: &str) -> String {
    let now = "2024-01-01T00:00:00Z";
    let lines = [
        json!({"type": "header", "format": "tenantd.tenant-export", "version": 1, "schema": 4,
               "tenant_id": tenant, "exported_at": now}),
        json!({"type": "row", "table": "tenants", "data": {
            "id": tenant, "name": "Revived", "email": null, "plan": "free", "status": "active",
            "source": "api", "spec": "{}", "created_at": now, "updated_at": now}}),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let end = json!({"type": "end", "counts": {"tenants": 1},
                     "sha256": hex::encode(Sha256::digest(body.as_bytes()))});
    format!("{body}{end}\n")
}

/// Changes one byte of a signed dump's rows and recomputes its SHA-256,
/// keeping its HMAC: what someone who cannot sign would try.
fn tampered(text: &str, from: &str, to: &str) -> String {
    assert_eq!(from.len(), to.len(), "one byte for one byte");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let end_line = lines.pop().expect("end line");
    let body: String = lines
        .iter()
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replacen(from, to, 1);
    let mut end: Value = serde_json::from_str(&end_line).expect("end");
    assert!(end["hmac"].is_string(), "the dump was signed: {end}");
    end["sha256"] = json!(hex::encode(Sha256::digest(body.as_bytes())));
    format!("{body}{end}\n")
}

fn end_line(text: &str) -> Value {
    serde_json::from_str(text.lines().last().expect("end")).expect("json")
}

/// acme (with a record and so an audit trail) and beta, so the registry
/// is enforced.
async fn seed(app: &App) -> String {
    let (_, key) = app
        .create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    app.create_tenant(json!({"id": "beta", "name": "Beta"}))
        .await;
    let resp = app
        .with_key(Method::POST, &key, "/records")
        .header("user-agent", "acme-secret-agent")
        .json(&json!({"name": "payroll", "kind": "service", "url": "https://acme.example"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 201);
    key
}

async fn delete(app: &App, tenant: &str) {
    let resp = app
        .admin(Method::DELETE, &format!("/admin/tenants/{tenant}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
}

/// The attack: delete acme, import a hand-made dump of acme (its
/// SHA-256 recomputed), issue a key, read acme's old audit trail. Refused
/// whatever the dump's signature: unsigned, forged under `--unsigned`, or
/// a genuine signed backup of the deleted tenant.
#[backends]
async fn a_dump_cannot_revive_a_deleted_tenants_id() {
    let dir = TestStorage::new();
    let work = tempfile::tempdir().expect("tempdir");
    let key = key_file(work.path(), "dump.key", &"k".repeat(40));
    let app = TestApp::start(&dir, cfg(dir.path())).await;
    seed(&app).await;
    app.finish().await;
    let backup = work.path().join("acme-backup.ndjson");
    export(dir.path(), "acme", &backup, &["--dump-key-file", &key]);
    let app = TestApp::start(&dir, cfg(dir.path())).await;
    delete(&app, "acme").await;
    app.finish().await;

    let forged = work.path().join("forged.ndjson");
    std::fs::write(&forged, forged_dump("acme")).expect("write");
    // Without the operator's key the forgery is not authenticated.
    let (ok, _, err) = import(dir.path(), &forged, &["--dump-key-file", &key]);
    assert!(!ok, "a forged dump was imported");
    assert!(err.contains("not authenticated"), "{err}");
    // Even when the operator vouches for it, or signed it, the id stays
    // retired.
    for (dump, flags) in [
        (&forged, vec!["--unsigned"]),
        (&backup, vec!["--dump-key-file", key.as_str()]),
    ] {
        let (ok, _, err) = import(dir.path(), dump, &flags);
        assert!(!ok, "{flags:?}: a retired id was revived");
        assert!(
            err.contains("acme") && err.contains("deleted tenant"),
            "{flags:?}: {err}"
        );
    }
    assert_eq!(tenant_ids(dir.path()), ["beta"]);
    let (ok, _, err) = cli(dir.path(), &["keys", "issue", "acme"]);
    assert!(!ok, "a key was issued for the retired id");
    assert!(err.contains("not found"), "{err}");

    // The old trail stays unreachable: acme is no tenant.
    let app = TestApp::start(&dir, cfg(dir.path())).await;
    let resp = app
        .req(Method::GET, "acme", "/audit")
        .send()
        .await
        .expect("audit");
    assert_error(resp, 404, "tenant_not_found").await;
    // The trail is still kept, under the admin's eyes only.
    let resp = app
        .admin(
            Method::GET,
            "/admin/audit?tenant=acme&action=records.create",
        )
        .send()
        .await
        .expect("admin audit");
    let page: Value = resp.json().await.expect("json");
    assert_eq!(page["events"].as_array().map(Vec::len), Some(1), "{page}");
    app.finish().await;
}

/// A signed export carries an HMAC and its key id and imports whole under
/// the same key.
#[backends]
async fn a_signed_dump_round_trips() {
    let from = TestStorage::new();
    let to = TestStorage::new();
    let work = tempfile::tempdir().expect("tempdir");
    let key = key_file(work.path(), "dump.key", &format!("{}\n", "0f".repeat(32)));
    let app = TestApp::start(&from, cfg(from.path())).await;
    let api_key = seed(&app).await;
    app.finish().await;
    let dump = work.path().join("acme.ndjson");
    export(from.path(), "acme", &dump, &["--dump-key-file", &key]);
    let end = end_line(&std::fs::read_to_string(&dump).expect("dump"));
    assert_eq!(end["hmac"].as_str().map(str::len), Some(64), "{end}");
    assert!(end["key_id"].is_string(), "{end}");

    let (ok, out, err) = import(to.path(), &dump, &["--dump-key-file", &key]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["imported"], "acme");
    assert_eq!(report["signed_by"], end["key_id"]);
    let app = TestApp::start(&to, cfg(to.path())).await;
    let resp = app
        .with_key(Method::GET, &api_key, "/records")
        .send()
        .await
        .expect("records");
    let page: Value = resp.json().await.expect("json");
    assert_eq!(page["total"], 1, "{page}");
    // The import is in the operator's chain, with the key that signed it.
    let page: Value = app
        .admin(Method::GET, "/admin/audit?action=tenants.import")
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let events = page["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(events[0]["status"], 201);
    assert_eq!(events[0]["params"]["signed_by"], end["key_id"]);
    app.finish().await;
}

/// One byte changed in a signed dump, its SHA-256 recomputed: refused
/// before anything is written; so is the dump under another key, and a key
/// file that is short or that others can read.
#[backends]
async fn a_tampered_or_foreign_dump_is_refused_and_nothing_is_imported() {
    let from = TestStorage::new();
    let work = tempfile::tempdir().expect("tempdir");
    let key = key_file(work.path(), "dump.key", &"a".repeat(48));
    let other = key_file(work.path(), "other.key", &"b".repeat(48));
    let app = TestApp::start(&from, cfg(from.path())).await;
    seed(&app).await;
    app.finish().await;
    let dump = work.path().join("acme.ndjson");
    export(from.path(), "acme", &dump, &["--dump-key-file", &key]);
    let text = std::fs::read_to_string(&dump).expect("dump");
    let forged = work.path().join("tampered.ndjson");
    std::fs::write(
        &forged,
        tampered(&text, "\"plan\":\"free\"", "\"plan\":\"pro_\""),
    )
    .expect("w");

    for (name, file, key, needle) in [
        ("tampered", &forged, &key, "does not verify"),
        ("another key", &dump, &other, "another key"),
    ] {
        let to = TestStorage::new();
        let (ok, _, err) = import(to.path(), file, &["--dump-key-file", key]);
        assert!(!ok, "{name}: imported");
        assert!(err.contains("not authenticated"), "{name}: {err}");
        assert!(err.contains(needle), "{name}: {err}");
        assert!(tenant_ids(to.path()).is_empty(), "{name}: rows written");
    }

    let to = TestStorage::new();
    let short = key_file(work.path(), "short.key", "too-short\n");
    let (ok, _, err) = import(to.path(), &dump, &["--dump-key-file", &short]);
    assert!(!ok && err.contains("at least 32"), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let (ok, _, err) = import(to.path(), &dump, &["--dump-key-file", &key]);
        assert!(!ok && err.contains("chmod 600"), "{err}");
    }
    assert!(tenant_ids(to.path()).is_empty());
}

/// An unsigned dump is refused unless the operator passes `--unsigned`;
/// that import is recorded in the operator's chain before anything is
/// written, never in the tenant's.
#[backends]
async fn an_unsigned_dump_needs_unsigned_and_is_audited() {
    let from = TestStorage::new();
    let to = TestStorage::new();
    let work = tempfile::tempdir().expect("tempdir");
    let key = key_file(work.path(), "dump.key", &"c".repeat(32));
    let app = TestApp::start(&from, cfg(from.path())).await;
    seed(&app).await;
    app.finish().await;
    let dump = work.path().join("acme.ndjson");
    // Neither a key nor --unsigned: a usage error, nothing written.
    let (ok, _, err) = cli(
        from.path(),
        &["tenants", "export", "acme", "--output", s(&dump)],
    );
    assert!(!ok && err.contains("--unsigned"), "{err}");
    export(from.path(), "acme", &dump, &["--unsigned"]);
    let end = end_line(&std::fs::read_to_string(&dump).expect("dump"));
    assert!(end.get("hmac").is_none(), "{end}");

    let (ok, _, err) = import(to.path(), &dump, &[]);
    assert!(!ok && err.contains("--unsigned"), "{err}");
    let (ok, _, err) = import(to.path(), &dump, &["--dump-key-file", &key]);
    assert!(!ok, "an unsigned dump passed as signed");
    assert!(
        err.contains("not authenticated") && err.contains("unsigned"),
        "{err}"
    );
    assert!(tenant_ids(to.path()).is_empty());

    let (ok, out, err) = import(to.path(), &dump, &["--unsigned"]);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["signed_by"], Value::Null);
    assert_eq!(tenant_ids(to.path()), ["acme"]);

    let app = TestApp::start(&to, cfg(to.path())).await;
    let page: Value = app
        .admin(Method::GET, "/admin/audit?action=tenants.import_unsigned")
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let events = page["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{page}");
    let event = &events[0];
    assert_eq!(event["tenant_id"], Value::Null, "the operator's chain");
    assert_eq!(event["target"], "acme");
    assert_eq!(event["actor"], "cli");
    assert_eq!(event["params"]["tenant_id"], "acme");
    let page: Value = app
        .admin(
            Method::GET,
            "/admin/audit?tenant=acme&action=tenants.import_unsigned",
        )
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    assert_eq!(page["events"], json!([]), "not in the tenant's own chain");
    app.finish().await;
    let (ok, out, _) = cli(to.path(), &["audit", "verify"]);
    assert!(ok, "chains intact: {out}");
}

/// Header-only use leaves rows under an id no tenant holds; an import
/// never merges a dump into them.
#[backends]
async fn an_import_never_merges_into_rows_already_under_the_id() {
    let from = TestStorage::new();
    let to = TestStorage::new();
    let work = tempfile::tempdir().expect("tempdir");
    let key = key_file(work.path(), "dump.key", &"d".repeat(32));
    let app = TestApp::start(&from, cfg(from.path())).await;
    seed(&app).await;
    app.finish().await;
    let dump = work.path().join("acme.ndjson");
    export(from.path(), "acme", &dump, &["--dump-key-file", &key]);

    let app = TestApp::start(
        &to,
        admin_config(to.path(), |c| c.tenant.registry = Some(false)),
    )
    .await;
    let resp = app
        .req(Method::POST, "acme", "/records")
        .json(&json!({"name": "local", "kind": "service", "url": "https://x"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 201);
    app.finish().await;
    let (ok, _, err) = import(to.path(), &dump, &["--dump-key-file", &key]);
    assert!(!ok, "merged into existing rows");
    assert!(
        err.contains("already has") && err.contains("never merges"),
        "{err}"
    );
    assert!(tenant_ids(to.path()).is_empty());
}

/// Static configuration naming a retired id: startup fails, naming it.
#[backends]
async fn static_config_with_a_retired_id_refuses_to_start() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, cfg(dir.path())).await;
    seed(&app).await;
    delete(&app, "acme").await;
    app.finish().await;
    let statics: Vec<tenantd::tenants::statics::StaticTenant> = serde_json::from_value(json!([
        {"tenant_id": "fresh", "name": "Fresh"},
        {"tenant_id": "acme", "name": "Acme again"}
    ]))
    .expect("statics");
    let config = admin_config(dir.path(), |c| c.tenants = statics);
    let err = match tenantd::Server::build(config, None).await {
        Ok(_) => panic!("a server started with a retired static tenant id"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("'acme'") && err.contains("deleted tenant"),
        "{err}"
    );
    assert!(!err.contains("'fresh'"), "{err}");
    // Nothing of the list was stored.
    assert!(tenant_ids(dir.path()).iter().all(|id| id != "fresh"));
}

/// A deleted tenant can neither be moved nor created again.
#[backends]
async fn a_deleted_tenant_is_neither_moved_nor_created_again() {
    // Moves are one at a time per process (see `support::one_move_at_a_time`).
    let _moves = crate::support::one_move_at_a_time().await;
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, cfg(dir.path())).await;
    seed(&app).await;
    delete(&app, "acme").await;
    let resp = app
        .admin(Method::POST, "/admin/tenants/acme/move")
        .json(&json!({"to": "dedicated"}))
        .send()
        .await
        .expect("move");
    assert_error(resp, 404, "not_found").await;
    let resp = app
        .admin(Method::POST, "/admin/tenants")
        .json(&json!({"id": "acme", "name": "Acme again"}))
        .send()
        .await
        .expect("create");
    let detail = assert_error(resp, 409, "conflict").await;
    assert!(detail.contains("deleted tenant"), "{detail}");
    app.finish().await;
    let (ok, _, err) = cli(dir.path(), &["tenants", "create", "acme", "--name", "A"]);
    assert!(!ok && err.contains("deleted tenant"), "{err}");
}
