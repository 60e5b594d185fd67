//! The real `tenantd` binary: CLI verbs, restarts on one data directory,
//! log output, startup failures.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_tenantd");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running `tenantd serve` child process.
struct Proc {
    child: Child,
    base: String,
}

impl Proc {
    async fn start(data_dir: &Path, env: &[(&str, &str)], extra: &[&str]) -> Proc {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn tenantd");
        let proc = Proc {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{}/health", proc.base)).send().await
                && r.status().is_success()
            {
                return proc;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tenantd did not become healthy");
    }

    /// SIGTERM, wait, and return (exit success, stderr).
    fn stop(mut self) -> (bool, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().expect("wait");
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status.success(), err)
    }
}

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

#[tokio::test]
async fn single_tenant_data_is_the_default_tenants_after_enabling() {
    let dir = tempfile::tempdir().expect("tempdir");
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

#[tokio::test]
async fn json_logs_carry_tenant_and_request_id() {
    let dir = tempfile::tempdir().expect("tempdir");
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
