//! A SQLite data directory written before search tokens carried their
//! tenant (migration 6) opens and searches as before: the "reindex search"
//! data upgrade rewrites the index of the shared file on start and of a
//! dedicated tenant's file on its first open, once each.

use std::path::Path;

use crate::support::{TestApp, TestStorage};
use serde_json::{Value, json};

use super::tier_config;

/// The search index as builds before migration 6 made it: a leading
/// `tenant_key` column holding the tenant as one hex token, the text of
/// each field as typed, a prefix index.
const OLD_LAYOUT: [&str; 5] = [
    "DROP TABLE records_fts",
    "DROP TABLE data_upgrades",
    "DELETE FROM _sqlx_migrations WHERE version = 6",
    "CREATE VIRTUAL TABLE records_fts USING fts5(\
         tenant_key, name, description, url, tags, fields, \
         content = '', contentless_delete = 1, prefix = '2 3', \
         tokenize = 'unicode61 remove_diacritics 2')",
    "INSERT INTO records_fts (records_fts, rank) \
     VALUES ('rank', 'bm25(0.0, 10.0, 2.0, 1.0, 5.0, 1.0)')",
];

/// Every record's entry as the old build wrote it (the JSON punctuation
/// of tags and fields is a separator to the tokenizer, as the spaces the
/// old build joined them with were).
const OLD_ENTRIES: &str = "INSERT INTO records_fts \
     (rowid, tenant_key, name, description, url, tags, fields) \
     SELECT seq, 't' || lower(hex(tenant_id)), name, coalesce(description, ''), url, \
     tags, fields FROM records";

/// Turns the SQLite file `file` back into the layout before migration 6.
async fn downgrade(file: &Path) {
    let url = format!("sqlite://{}", file.display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("open");
    for statement in OLD_LAYOUT.into_iter().chain([OLD_ENTRIES]) {
        sqlx::query(statement)
            .execute(&mut conn)
            .await
            .expect(statement);
    }
    <sqlx::SqliteConnection as sqlx::Connection>::close(conn)
        .await
        .expect("close");
}

/// Upgrades recorded in the SQLite file `file`.
async fn upgrades_in(file: &Path) -> Vec<String> {
    let url = format!("sqlite://{}?mode=ro", file.display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("open");
    sqlx::query_scalar("SELECT name FROM data_upgrades ORDER BY name")
        .fetch_all(&mut conn)
        .await
        .expect("ledger")
}

async fn create(app: &crate::support::App, tenant: &str, name: &str, description: &str) -> String {
    let resp = app
        .req(reqwest::Method::POST, tenant, "/records")
        .json(
            &json!({"name": name, "kind": "service", "url": "https://example.com",
                      "description": description, "tags": ["blue"], "fields": {"lang": "rust"}}),
        )
        .send()
        .await
        .expect("create");
    let status = resp.status();
    let created: Value = resp.json().await.expect("json");
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().expect("id").to_owned()
}

async fn found(app: &crate::support::App, tenant: &str, query: &str) -> Vec<String> {
    let (status, page) = app.search(tenant, json!({"query": query})).await;
    assert_eq!(status, 200, "{page}");
    page["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn an_index_written_before_tenant_tokens_is_rebuilt_once_on_open() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, tier_config(dir.path(), |_| {})).await;
    app.tenant("vault", Some(json!({"isolation": "dedicated"})))
        .await;
    app.tenant("acme", None).await;
    app.tenant("globex", None).await;
    let acme = create(&app, "acme", "payments-api", "Invoices and refunds").await;
    let globex = create(&app, "globex", "payments-worker", "Refunds queue").await;
    let vault = create(&app, "vault", "ledger", "Refunds ledger").await;
    app.stop().await;

    let shared = dir.path().join("tenantd.db");
    let dedicated = dir.path().join("tenants").join("vault.db");
    downgrade(&shared).await;
    downgrade(&dedicated).await;

    let app = TestApp::start(&dir, tier_config(dir.path(), |_| {})).await;
    assert_eq!(found(&app, "acme", "refunds").await, [acme.as_str()]);
    assert_eq!(found(&app, "acme", "payments ap").await, [acme.as_str()]);
    assert_eq!(found(&app, "globex", "refund").await, [globex]);
    assert_eq!(
        found(&app, "globex", "invoices").await,
        Vec::<String>::new()
    );
    assert_eq!(found(&app, "acme", "blue rust").await, [acme]);
    assert_eq!(
        found(&app, "vault", "refunds ledger").await,
        [vault.as_str()]
    );
    // Writes after the upgrade are indexed alongside.
    let later = create(&app, "vault", "ledger-2", "Refunds archive").await;
    assert_eq!(found(&app, "vault", "archive").await, [later]);
    app.stop().await;

    let step = "records: reindex search with tenant tokens".to_owned();
    assert_eq!(upgrades_in(&shared).await, [step.as_str()]);
    assert_eq!(upgrades_in(&dedicated).await, [step]);
    // Recorded: a second start does not rebuild (the rebuild would drop
    // nothing, so the proof is the ledger's single row and a working index).
    let app = TestApp::start(&dir, tier_config(dir.path(), |_| {})).await;
    assert_eq!(found(&app, "vault", "refunds").await.len(), 2);
    app.finish().await;
}
