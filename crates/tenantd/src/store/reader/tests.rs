use std::sync::Arc;

use tenancy::TenantId;

use super::{MAX_IDLE, Readers};
use crate::clock::Clock;
use crate::store::{Db, QuotaLimits, StoreError, StoredType, TenantScope, open_sqlite, sql};

async fn db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::sqlite(
        open_sqlite(dir.path(), 2).await.expect("opens"),
        Clock::system(),
    );
    (dir, db)
}

fn scope() -> TenantScope {
    TenantScope::system(
        TenantId::new("acme").expect("valid id"),
        QuotaLimits::default(),
    )
}

#[tokio::test]
async fn placeholders_bind_by_number_not_by_first_appearance() {
    let (_dir, db) = db().await;
    let mut conn = db.read(&scope()).await.expect("reader");
    let row = conn
        .fetch_one(
            sql("SELECT $2 || $1, $3 + 1, $4, $2")
                .bind("b")
                .bind("a")
                .bind(41_i64)
                .bind(None::<String>),
        )
        .await
        .expect("row");
    assert_eq!(row.get::<String>(0).expect("text"), "ab");
    assert_eq!(row.get::<i64>(1).expect("int"), 42);
    assert_eq!(row.get::<Option<String>>(2).expect("null"), None);
    assert_eq!(row.get::<String>(3).expect("repeated"), "a");
    assert_eq!(
        row.stored_type(1).expect("sqlite"),
        Some(StoredType::Integer)
    );
    assert_eq!(row.stored_type(2).expect("sqlite"), None);
    // The byte-wise collation the writers use is registered here too.
    let first: String = conn
        .scalar(sql(
            "SELECT x FROM (SELECT 'a' AS x UNION ALL SELECT 'B') ORDER BY x COLLATE \"C\" LIMIT 1",
        ))
        .await
        .expect("scalar");
    assert_eq!(first, "B");
}

#[tokio::test]
async fn a_write_sent_down_the_read_path_is_refused_and_writes_nothing() {
    let (_dir, db) = db().await;
    let mut conn = db.read(&scope()).await.expect("reader");
    let refused = conn
        .execute(sql(
            "INSERT INTO deleted_tenants (id, deleted_at) VALUES ('x', 'y')",
        ))
        .await
        .expect_err("query_only");
    assert!(
        matches!(
            refused,
            StoreError::Unavailable(_) | StoreError::Internal(_)
        ),
        "{refused:?}"
    );
    drop(conn);
    let mut admin = db.admin_read().await.expect("admin");
    let n: i64 = admin
        .scalar(sql("SELECT count(*) FROM deleted_tenants"))
        .await
        .expect("count");
    assert_eq!(n, 0);
}

#[tokio::test]
async fn reads_see_what_the_writers_committed() {
    let (_dir, db) = db().await;
    // A reader opened before the write must not pin an old snapshot.
    drop(db.read(&scope()).await.expect("reader"));
    let mut w = db.admin_write().await.expect("writer");
    w.execute(sql(
        "INSERT INTO deleted_tenants (id, deleted_at) VALUES ('gone', '2026-01-01')",
    ))
    .await
    .expect("insert");
    w.commit().await.expect("commit");
    let mut conn = db.read(&scope()).await.expect("reader");
    let at: Option<String> = conn
        .scalar_optional(sql("SELECT deleted_at FROM deleted_tenants WHERE id = $1").bind("gone"))
        .await
        .expect("read");
    assert_eq!(at.as_deref(), Some("2026-01-01"));
}

#[tokio::test]
async fn idle_connections_are_reused_and_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The file must exist (and be in WAL mode) before readers open it.
    let _store = open_sqlite(dir.path(), 1).await.expect("opens");
    let readers = Readers::new(&dir.path().join(crate::store::sqlite::DB_FILE));
    let many: Vec<_> = (0..MAX_IDLE + 4)
        .map(|_| readers.get().expect("opens"))
        .collect();
    drop(many);
    assert_eq!(readers.lock().len(), MAX_IDLE);
    let again = readers.get().expect("reused");
    assert_eq!(readers.lock().len(), MAX_IDLE - 1);
    drop(again);
    let in_use = readers.get().expect("opens");
    readers.close();
    assert!(readers.lock().is_empty());
    assert!(
        matches!(readers.get().map(drop), Err(StoreError::Unavailable(_))),
        "a closed database refuses reads"
    );
    drop(in_use);
    assert!(readers.lock().is_empty(), "returned after close: closed");
    assert_eq!(Arc::strong_count(&readers), 1);
}

#[tokio::test]
async fn a_statement_error_is_classified_and_keeps_its_cause() {
    let (_dir, db) = db().await;
    let mut conn = db.read(&scope()).await.expect("reader");
    let err = conn
        .fetch_all(sql("SELECT * FROM no_such_table"))
        .await
        .expect_err("no such table");
    let StoreError::Internal(cause) = &err else {
        panic!("a bad statement is a bug: {err:?}");
    };
    assert!(cause.chain().contains("no_such_table"), "{}", cause.chain());
    // The connection is still usable afterwards.
    let one: i64 = conn.scalar(sql("SELECT 1")).await.expect("usable");
    assert_eq!(one, 1);
}
