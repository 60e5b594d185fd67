//! The real `tenantd` binary: CLI verbs, restarts on one data directory,
//! log output, startup failures.

use crate::support::{self, TestStorage};
use tenantd_testing::backends;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::Proc;

const BIN: &str = env!("CARGO_BIN_EXE_tenantd");

#[test]
fn help_lists_the_verbs() {
    let out = Command::new(BIN).arg("--help").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for verb in ["serve", "config"] {
        assert!(text.contains(verb), "{text}");
    }
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--bind", "--data-dir", "--log-format"] {
        assert!(text.contains(flag), "{text}");
    }
}

#[test]
fn config_check_prints_the_effective_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tenantd.yaml");
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&example)
        .env("TENANTD_TENANT_ENABLED", "yes")
        .env("TENANTD_TENANT_ALLOWED", "a, b")
        .env("TENANTD_TENANT_REQUIRED", "true")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("enabled: true"), "env applied: {text}");
    assert!(text.contains("- a") && text.contains("- b"), "{text}");
}

#[test]
fn config_check_reports_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "server:\n  max_body_bytes: 0\ntenant:\n  tenant_header: \"no spaces allowed\"\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&file)
        .env("TENANTD_TENANT_REQUIRED", "perhaps")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "TENANTD_TENANT_REQUIRED",
        "server.max_body_bytes",
        "tenant.tenant_header",
    ] {
        assert!(err.contains(needle), "missing {needle}: {err}");
    }
}

#[test]
fn serve_refuses_an_unusable_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "x").expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&not_a_dir)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&not_a_dir.display().to_string()), "{err}");
}

#[backends]
async fn single_tenant_data_is_the_default_tenants_after_enabling() {
    let dir = TestStorage::new();
    let client = reqwest::Client::new();
    let before = Proc::start(dir.path(), &[("TENANTD_TENANT_ENABLED", "false")], &[]).await;
    let created: Value = client
        .post(format!("{}/records", before.base))
        .json(&json!({"name": "legacy", "kind": "service", "url": "https://legacy"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    assert_eq!(created["tenant_id"], "default");
    let id = created["id"].as_str().expect("id").to_owned();
    let (clean, _) = before.stop();
    assert!(clean, "graceful shutdown exits 0");

    let after = Proc::start(dir.path(), &[("TENANTD_TENANT_ENABLED", "true")], &[]).await;
    let got = client
        .get(format!("{}/records/{id}", after.base))
        .header("X-Tenant-ID", "default")
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), 200);
    let got: Value = got.json().await.expect("json");
    assert_eq!(got["name"], "legacy");
    let other = client
        .get(format!("{}/records/{id}", after.base))
        .header("X-Tenant-ID", "tenant-a")
        .send()
        .await
        .expect("get");
    assert_eq!(other.status(), 404);
    let found: Value = client
        .post(format!("{}/records/search", after.base))
        .header("X-Tenant-ID", "default")
        .json(&json!({"query": "legacy"}))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(found["total"], 1);
    after.stop();
}

#[backends]
async fn json_logs_carry_tenant_and_request_id() {
    let dir = TestStorage::new();
    let server = Proc::start(
        dir.path(),
        &[
            ("TENANTD_TENANT_ENABLED", "true"),
            ("TENANTD_LOG__LEVEL", "info"),
        ],
        &["--log-format", "json"],
    )
    .await;
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/records", server.base))
        .header("X-Tenant-ID", "acme-logs")
        .json(&json!({"name": "n", "kind": "k", "url": "u"}))
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), 201);
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id header")
        .to_owned();
    let (_, stderr) = server.stop();
    let lines: Vec<Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["span"]["request_id"] == request_id.as_str())
        .collect();
    assert!(lines.len() >= 2, "handler line and finish line: {stderr}");
    for line in &lines {
        assert_eq!(line["span"]["tenant_id"], "acme-logs", "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "record created")
    );
}

/// Runs `tenantd <args>` on `data_dir`; (exit code, stdout JSON, stderr).
fn admin_cli(data_dir: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("RUST_LOG")
        .envs(support::backend_env(data_dir))
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[backends]
async fn tenants_and_keys_verbs_work_on_the_data_directory() {
    let dir = TestStorage::new();
    let d = dir.path();
    let (code, out, err) = admin_cli(
        d,
        &[
            "tenants", "create", "acme", "--name", "Acme", "--plan", "pro",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out["tenant"]["plan"], "pro");
    let first = out["api_key"]["key"].as_str().expect("key").to_owned();
    let (code, _, err) = admin_cli(d, &["tenants", "create", "acme", "--name", "Again"]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");
    admin_cli(
        d,
        &[
            "tenants", "create", "globex", "--name", "Globex", "--no-key",
        ],
    );

    let (_, out, _) = admin_cli(d, &["tenants", "list", "--plan", "pro"]);
    assert_eq!(out["tenants"].as_array().map(Vec::len), Some(1));
    let (_, out, _) = admin_cli(d, &["tenants", "show", "globex"]);
    assert_eq!(out["name"], "Globex");
    let (code, out, err) = admin_cli(
        d,
        &[
            "tenants",
            "update",
            "globex",
            "--set",
            r#"{"security": {"allowed_ips": ["10.0.0.0/8"]}}"#,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out["security"]["allowed_ips"], json!(["10.0.0.0/8"]));
    let (code, _, err) = admin_cli(
        d,
        &[
            "tenants",
            "update",
            "globex",
            "--set",
            r#"{"security": {"allowed_ips": ["nope"]}}"#,
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("security.allowed_ips[0]"), "{err}");
    let (_, out, _) = admin_cli(d, &["tenants", "suspend", "globex"]);
    assert_eq!(out["status"], "suspended");
    let (_, out, _) = admin_cli(d, &["tenants", "resume", "globex"]);
    assert_eq!(out["status"], "active");

    let (code, issued, _) = admin_cli(
        d,
        &[
            "keys",
            "issue",
            "acme",
            "--name",
            "ci",
            "--scope",
            "records:read",
        ],
    );
    assert_eq!(code, 0);
    let second = issued["key"].as_str().expect("key").to_owned();
    let (_, listed, _) = admin_cli(d, &["keys", "list", "acme"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    assert!(!listed.to_string().contains(&second[8..]));

    // A server on the same directory accepts the CLI's keys; a revoke made
    // by the CLI while it runs takes effect within the poll interval.
    let server = Proc::start(d, &[("TENANTD_TENANT_ENABLED", "true")], &[]).await;
    let client = reqwest::Client::new();
    let get = |key: String| {
        client
            .get(format!("{}/records", server.base))
            .header("x-api-key", key)
            .send()
    };
    assert_eq!(get(second.clone()).await.expect("get").status(), 200);
    let key_id = issued["id"].as_str().expect("id").to_owned();
    let (code, _, _) = admin_cli(d, &["keys", "revoke", "acme", &key_id]);
    assert_eq!(code, 0);
    let mut refused = false;
    for _ in 0..60 {
        if get(second.clone()).await.expect("get").status() == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the server picked up the CLI's revoke");
    let (_, stderr) = server.stop();
    assert!(!stderr.contains(&first[8..]) && !stderr.contains(&second[8..]));

    let first_id = admin_cli(d, &["keys", "list", "acme"]).1[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (code, rotated, _) = admin_cli(
        d,
        &["keys", "rotate", "acme", &first_id, "--grace-seconds", "60"],
    );
    assert_eq!(code, 0);
    assert!(
        rotated["key"]
            .as_str()
            .expect("key")
            .starts_with("acme_sk_")
    );

    let (code, _, err) = admin_cli(d, &["tenants", "delete", "acme"]);
    assert_eq!(code, 1);
    assert!(err.contains("--yes"), "{err}");
    let (code, out, _) = admin_cli(d, &["tenants", "delete", "acme", "--yes"]);
    assert_eq!(code, 0);
    assert_eq!(
        out["removed"]["api_keys"], 3,
        "first, revoked second, rotated"
    );
    let (code, _, err) = admin_cli(d, &["tenants", "show", "acme"]);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
}

#[backends]
async fn static_tenants_from_tenant_configs_are_initialised_and_enforced() {
    let dir = TestStorage::new();
    let configs = r#"[
      {"tenant_id": "acme_corp", "name": "Acme Corporation", "mongo_uri": "mongodb://acme-mongo:27017",
       "mongo_database": "acme_corp_db", "redis_addr": "acme-redis:6379", "redis_db": 0,
       "frontend_url": "https://app.acme.com"},
      {"tenant_id": "globex_inc", "name": "Globex Inc", "redis_db": 1}
    ]"#;
    let server = Proc::start(
        dir.path(),
        &[
            ("TENANTD_TENANT_ENABLED", "true"),
            ("TENANTD_TENANT_REQUIRED", "false"),
            ("TENANTD_TENANT_CONFIGS", configs),
        ],
        &[],
    )
    .await;
    let client = reqwest::Client::new();
    // No tenant named: the first static tenant is the default.
    let resp = client
        .post(format!("{}/records", server.base))
        .json(&json!({"name": "n", "kind": "k", "url": "https://x"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 201);
    let rec: Value = resp.json().await.expect("json");
    assert_eq!(rec["tenant_id"], "acme_corp");
    let resp = client
        .get(format!("{}/records", server.base))
        .header("X-Tenant-ID", "unknown_co")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 404);
    let (_, stderr) = server.stop();
    assert!(
        stderr.contains("Initializing tenant: acme_corp"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Initializing tenant: globex_inc"),
        "{stderr}"
    );

    // TENANTD_DEFAULT_TENANT_ID picks another default.
    let server = Proc::start(
        dir.path(),
        &[
            ("TENANTD_TENANT_ENABLED", "true"),
            ("TENANTD_TENANT_REQUIRED", "false"),
            ("TENANTD_TENANT_CONFIGS", configs),
            ("TENANTD_DEFAULT_TENANT_ID", "globex_inc"),
        ],
        &[],
    )
    .await;
    let page: Value = client
        .get(format!("{}/records", server.base))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(page["total"], 0, "globex_inc has no records");
    server.stop();
}

#[test]
fn invalid_tenant_configs_are_all_reported_and_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("TENANTD_TENANT_CONFIGS", "[{\"tenant_id\": \"a\"")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("TENANTD_TENANT_CONFIGS: invalid JSON"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env(
            "TENANTD_TENANT_CONFIGS",
            r#"[{"tenant_id": "a", "name": "A", "oidc_issuer": "https://i.test"},
                {"tenant_id": "a", "name": "Dup"}, {"name": "no id"}]"#,
        )
        .env("TENANTD_SERVER__TRUSTED_PROXIES", "[\"10.0.0.0/99\"]")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "tenants[0].oidc_client_id: required",
        "tenants[0].oidc_client_secret: required",
        "tenants[0].oidc_redirect_url: required",
        "tenants[1].tenant_id: 'a' is listed more than once",
        "tenants[2].tenant_id: required",
        "server.trusted_proxies[0]",
    ] {
        assert!(err.contains(expected), "{expected} missing from {err}");
    }
}

#[backends]
async fn no_credential_text_reaches_the_logs() {
    let dir = TestStorage::new();
    let admin_key = "log-test-admin-key-0123456789";
    let server = Proc::start(
        dir.path(),
        &[
            ("TENANTD_TENANT_ENABLED", "true"),
            ("TENANTD_ADMIN_KEY", admin_key),
            ("TENANTD_LOG__LEVEL", "trace"),
        ],
        &["--log-format", "json"],
    )
    .await;
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{}/admin/tenants", server.base))
        .bearer_auth(admin_key)
        .json(&json!({"id": "acme", "name": "Acme"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let key = created["api_key"]["key"].as_str().expect("key").to_owned();
    let resp = client
        .get(format!("{}/records", server.base))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    let wrong = format!("acme_sk_{}", "Z".repeat(40));
    let resp = client
        .get(format!("{}/records", server.base))
        .header("x-api-key", &wrong)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 401);
    let (_, stderr) = server.stop();
    assert!(
        stderr.contains("tenant created"),
        "logs were captured: {stderr}"
    );
    let secret = &key["acme_sk_".len()..];
    for needle in [secret, &wrong["acme_sk_".len()..], admin_key] {
        assert!(!stderr.contains(needle), "a credential was logged");
    }
}
