//! Submission, facts, errors, isolation and cancellation.

use crate::support::{TestApp, TestStorage};
use serde_json::{Value, json};
use tenantd_testing::backends;

use super::fixture::{polyglot, tiny};
use super::{assert_error, config};

#[backends]
async fn detection_computes_every_fact_into_a_record_of_the_jobs_tenant() {
    let data = TestStorage::new();
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = polyglot(repos.path(), "polyglot-demo");
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    let url = repo.display().to_string();
    let resp = app
        .submit(
            "acme",
            json!({"repository_url": url, "priority": 5, "metadata": {"source": "api"}}),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let submitted: Value = resp.json().await.expect("json");
    for key in [
        "detection_id",
        "status",
        "tenant_id",
        "repository_url",
        "created_at",
        "updated_at",
    ] {
        assert!(!submitted[key].is_null(), "{key} missing in {submitted}");
    }
    let id = submitted["detection_id"].as_str().expect("id");
    let job = app.wait_final("acme", id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["attempts"], 1);
    assert!(job["error"].is_null());
    let record_id = job["record_id"].as_str().expect("record id");

    let (status, record) = app.get_json("acme", &format!("/records/{record_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(record["tenant_id"], "acme");
    assert_eq!(record["kind"], "repository");
    assert_eq!(record["name"], "polyglot-demo");
    assert_eq!(record["url"], url.as_str());
    let f = &record["fields"];
    assert_eq!(
        f["languages"],
        json!({"Rust": 300, "Python": 120, "TypeScript": 50}),
        "{f}"
    );
    assert_eq!(f["primary_language"], "Rust");
    assert_eq!(f["manifests"], json!(["Cargo.toml", "web/package.json"]));
    assert_eq!(f["package_managers"], json!(["cargo", "npm"]));
    assert_eq!(f["license"], "MIT");
    assert_eq!(f["license_file"], "LICENSE");
    assert_eq!(f["has_readme"], true);
    assert_eq!(f["default_branch"], "trunk");
    assert_eq!(f["commit_count"], 3);
    assert_eq!(f["commit_count_truncated"], false);
    assert_eq!(f["last_commit_at"], "2024-05-06T07:08:09.000000Z");
    assert_eq!(f["head_commit"].as_str().map(str::len), Some(40));
    assert_eq!(f["detection_id"], id);
    assert_eq!(f["metadata"], json!({"source": "api"}));
    assert!(
        record["tags"]
            .as_array()
            .expect("tags")
            .contains(&json!("rust"))
    );

    // Searchable like any record, and invisible to another tenant.
    let found: Value = app
        .client
        .post(format!("{}/records/search", app.base))
        .header("X-Tenant-ID", "acme")
        .json(&json!({"query": "polyglot"}))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(found["total"], 1);
    let (status, _) = app
        .get_json("globex", &format!("/records/{record_id}"))
        .await;
    assert_eq!(status, 404);

    // A second detection of the same repository updates the same record.
    let again = app.submit_ok("acme", &format!("file://{url}")).await;
    let job2 = app.wait_final("acme", &again).await;
    assert_eq!(job2["record_id"], record_id);
    app.finish().await;
}

#[backends]
async fn bad_submissions_are_refused_with_the_documented_texts() {
    let data = TestStorage::new();
    let app = TestApp::start(&data, config(data.path(), |c| c.jobs.workers = Some(0))).await;
    for body in [
        json!({}),
        json!({"repository_url": ""}),
        json!({"repository_url": "   "}),
    ] {
        let detail = assert_error(app.submit("acme", body).await, 400, "bad_request").await;
        assert_eq!(detail, "Repository URL is required");
    }
    for url in [
        "not a url",
        "ftp://host/x",
        "/no/such/path/anywhere",
        "https://",
        "git@:x",
        "javascript:alert(1)",
    ] {
        let detail = assert_error(
            app.submit("acme", json!({"repository_url": url})).await,
            400,
            "bad_request",
        )
        .await;
        assert_eq!(detail, "Invalid repository URL", "{url}");
    }
    let resp = app
        .submit(
            "acme",
            json!({"repository_url": "https://example.com/a/b", "priority": 1_000_000}),
        )
        .await;
    assert_error(resp, 422, "validation_failed").await;
    let resp = app
        .submit(
            "acme",
            json!({"repository_url": "https://example.com/a/b", "priority": "high"}),
        )
        .await;
    assert_error(resp, 422, "validation_failed").await;
    let resp = app
        .submit(
            "acme",
            json!({"repository_url": "https://example.com/a/b", "bogus": 1}),
        )
        .await;
    assert_error(resp, 422, "validation_failed").await;
    let (status, page) = app.get_json("acme", "/detect").await;
    assert_eq!(
        (status, page["total"].clone()),
        (200, json!(0)),
        "nothing was stored"
    );
    // Bad ids and bad list filters.
    assert_error(app.status("acme", "det_nope").await, 404, "not_found").await;
    let resp = app
        .client
        .get(format!("{}/detect?status=bogus", app.base))
        .header("X-Tenant-ID", "acme")
        .send()
        .await
        .expect("list");
    assert_error(resp, 422, "validation_failed").await;
    app.finish().await;
}

#[backends]
async fn local_paths_can_be_disabled() {
    let data = TestStorage::new();
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = tiny(repos.path(), "t");
    let app = TestApp::start(
        &data,
        config(data.path(), |c| {
            c.jobs.workers = Some(0);
            c.jobs.allow_local_paths = false;
        }),
    )
    .await;
    let resp = app
        .submit(
            "acme",
            json!({"repository_url": repo.display().to_string()}),
        )
        .await;
    assert_eq!(
        assert_error(resp, 400, "bad_request").await,
        "Invalid repository URL"
    );
    app.finish().await;
}

#[backends]
async fn another_tenant_cannot_see_list_or_cancel_a_job() {
    let data = TestStorage::new();
    let app = TestApp::start(&data, config(data.path(), |c| c.jobs.workers = Some(0))).await;
    let id = app
        .submit_ok("acme", "https://example.com/acme/secret")
        .await;
    let detail = assert_error(app.status("globex", &id).await, 404, "not_found").await;
    assert_eq!(
        detail,
        format!("Detection job {id} not found or access denied")
    );
    let (_, page) = app.get_json("globex", "/detect").await;
    assert_eq!(page["total"], 0);
    assert_eq!(page["results"], json!([]));
    let resp = app
        .client
        .post(format!("{}/detect/{id}/cancel", app.base))
        .header("X-Tenant-ID", "globex")
        .send()
        .await
        .expect("cancel");
    let detail_cancel = assert_error(resp, 404, "not_found").await;
    assert_eq!(detail_cancel, detail, "same answer as for an absent job");
    let job: Value = app.status("acme", &id).await.json().await.expect("json");
    assert_eq!(job["status"], "pending", "untouched by the other tenant");
    let (_, page) = app.get_json("acme", "/detect").await;
    assert_eq!(page["total"], 1);
    app.finish().await;
}

#[backends]
async fn cancelled_jobs_never_produce_a_record() {
    let data = TestStorage::new();
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = tiny(repos.path(), "never-detected");
    let app = TestApp::start(&data, config(data.path(), |c| c.jobs.workers = Some(0))).await;
    let id = app.submit_ok("acme", &repo.display().to_string()).await;
    let resp = app
        .client
        .post(format!("{}/detect/{id}/cancel", app.base))
        .header("X-Tenant-ID", "acme")
        .send()
        .await
        .expect("cancel");
    assert_eq!(resp.status(), 200);
    let job: Value = resp.json().await.expect("json");
    assert_eq!(job["status"], "cancelled");
    let resp = app
        .client
        .post(format!("{}/detect/{id}/cancel", app.base))
        .header("X-Tenant-ID", "acme")
        .send()
        .await
        .expect("cancel again");
    assert_eq!(
        assert_error(resp, 409, "conflict").await,
        format!("Detection job {id} is already cancelled")
    );
    app.finish().await;

    // Workers on the same data: the cancelled job is never run.
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    let other = app.submit_ok("acme", &repo.display().to_string()).await;
    app.wait_final("acme", &other).await;
    let job: Value = app.status("acme", &id).await.json().await.expect("json");
    assert_eq!(job["status"], "cancelled");
    assert!(job["record_id"].is_null());
    let (_, list) = app.get_json("acme", "/detect?status=cancelled").await;
    assert_eq!(list["total"], 1);
    app.finish().await;
}

#[backends]
async fn failures_say_why_and_retry_until_max_attempts() {
    let data = TestStorage::new();
    let repos = tempfile::tempdir().expect("tempdir");
    let not_git = repos.path().join("plain-dir");
    std::fs::create_dir_all(&not_git).expect("mkdir");
    let app = TestApp::start(&data, config(data.path(), |c| c.jobs.max_attempts = 2)).await;
    let id = app.submit_ok("acme", &not_git.display().to_string()).await;
    let job = app.wait_final("acme", &id).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["attempts"], 1, "not a repository: retrying cannot help");
    assert!(
        job["error"]
            .as_str()
            .expect("error")
            .contains("is not a git repository"),
        "{job}"
    );
    assert!(job["record_id"].is_null());

    // Nothing listens on port 1: the clone fails fast, is retried, then fails.
    let id = app
        .submit_ok("acme", "http://127.0.0.1:1/acme/repo.git")
        .await;
    let job = app.wait_final("acme", &id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 2);
    assert!(
        job["error"]
            .as_str()
            .expect("error")
            .starts_with("Could not clone the repository"),
        "{job}"
    );
    app.finish().await;
}
