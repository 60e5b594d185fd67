//! A full disk under the embedded SQLite store: writes answer 507
//! `storage_full` (never 500), readiness says "not writable", and both clear
//! by themselves once space returns, with no connection left broken and no
//! counted request lost.

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};

use super::{ADMIN_KEY, App, config};

/// A small tmpfs mounted for the test, unmounted on drop (also on panic).
struct SmallDisk {
    mount: PathBuf,
}

impl SmallDisk {
    fn mount(under: &Path, size: &str) -> SmallDisk {
        let mount = under.join("disk");
        std::fs::create_dir_all(&mount).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root): {status}"
        );
        SmallDisk { mount }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a server task still holding files (a failed test) must not
        // keep the mount around.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

async fn write(app: &App, i: usize) -> u16 {
    app.req(Method::POST, "acme", "/records")
        .json(&json!({
            "name": format!("r{i}"), "kind": "k", "url": "https://example.com",
            // Distinct words, so the search index grows with the row.
            "description": (0..600).map(|w| format!("w{i}x{w}")).collect::<Vec<_>>().join(" "),
        }))
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

async fn ready(app: &App) -> u16 {
    app.client
        .get(format!("{}/health/ready", app.base))
        .send()
        .await
        .expect("ready")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_full_disk_is_507_and_clears_itself_when_space_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = SmallDisk::mount(dir.path(), "8m");
    let ballast = disk.mount.join("ballast");
    std::fs::write(&ballast, vec![0u8; 2 * 1024 * 1024]).expect("ballast");
    let data = disk.mount.join("data");
    let app = App::start(config(&data, |c| {
        // The embedded store is what fills the disk, on either test pass.
        c.storage.backend = tenantd::config::Backend::Sqlite;
        c.storage.url = None;
        c.storage.admin_url = None;
        c.storage.migrate_url = None;
        c.admin.key = Some(ADMIN_KEY.to_owned());
        c.usage.flush_ms = 50;
    }))
    .await;
    app.create_tenant(json!({"id": "acme", "name": "Acme", "issue_key": false}))
        .await;
    assert_eq!(ready(&app).await, 200);

    let mut answered = 0usize;
    let mut full_at = None;
    for i in 0..2000 {
        let status = write(&app, i).await;
        answered += 1;
        assert!(
            matches!(status, 201 | 503 | 507),
            "write {i} answered {status}"
        );
        if status == 507 {
            full_at = Some(i);
            break;
        }
    }
    let full_at = full_at.expect("the 8 MB disk filled up");
    // Every later write on every connection is refused the same way, never
    // a 500 from a connection left inside a dead transaction: writers in
    // parallel, so every pooled connection meets the full disk.
    for round in 0..4 {
        let writes = (0..8).map(|k| write(&app, 100_000 + round * 8 + k + full_at));
        for status in futures_util::future::join_all(writes).await {
            answered += 1;
            assert!(matches!(status, 201 | 503 | 507), "while full: {status}");
        }
    }
    let resp = app
        .client
        .get(format!("{}/health/ready", app.base))
        .send()
        .await
        .expect("ready");
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], "unavailable", "{body}");

    // Space returns: writes and readiness recover without a restart.
    std::fs::remove_file(&ballast).expect("free space");
    let mut recovered = false;
    for i in 0..20 {
        let status = write(&app, 10_000 + i).await;
        answered += 1;
        assert!(matches!(status, 201 | 503 | 507), "after freeing: {status}");
        if status == 201 {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "writes did not recover once space returned");
    for i in 0..5 {
        assert_eq!(write(&app, 20_000 + i).await, 201);
        answered += 1;
    }
    assert_eq!(ready(&app).await, 200);

    // Nothing counted while the disk was full was lost: usage has every
    // answered call of acme. (The audit event of a write acknowledged just
    // before the disk filled can still be lost: the event is appended after
    // the write commits, not with it. Committing them together is open.)
    let usage: Value = app
        .admin(Method::GET, "/admin/tenants/acme/usage")
        .send()
        .await
        .expect("usage")
        .json()
        .await
        .expect("json");
    assert_eq!(
        usage["api_calls"]["total"].as_u64(),
        Some(answered as u64),
        "{usage}"
    );
    app.stop().await;
    drop(disk);
}
