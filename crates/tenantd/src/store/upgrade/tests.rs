use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tenancy::TenantId;

use super::*;
use crate::clock::Clock;
use crate::store::{Target, TenantPools, open_sqlite};

/// A step that counts its runs and leaves a row behind, failing after
/// writing it when told to.
struct Counting {
    runs: Arc<AtomicUsize>,
    fail: bool,
}

#[async_trait]
impl DataUpgrade for Counting {
    fn name(&self) -> &'static str {
        "test: counting"
    }

    async fn run(&self, conn: &mut Conn) -> Result<(), StoreError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        conn.execute(sql("CREATE TABLE IF NOT EXISTS upgraded (n INTEGER)"))
            .await?;
        conn.execute(sql("INSERT INTO upgraded (n) VALUES (1)"))
            .await?;
        if self.fail {
            return Err(StoreError::Internal("the step failed".into()));
        }
        Ok(())
    }
}

fn counting(fail: bool) -> (DataUpgrades, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let step = Counting {
        runs: runs.clone(),
        fail,
    };
    (DataUpgrades::new(vec![Arc::new(step)]), runs)
}

async fn count(db: &Db, text: &'static str) -> i64 {
    let mut conn = db.admin_read().await.expect("conn");
    conn.scalar(sql(text)).await.expect("count")
}

async fn shared(dir: &std::path::Path) -> Db {
    Db::sqlite(open_sqlite(dir, 2).await.expect("opens"), Clock::system())
}

#[tokio::test]
async fn a_step_runs_once_and_is_recorded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = shared(dir.path()).await;
    let (upgrades, runs) = counting(false);
    assert_eq!(upgrades.run(&db).await.expect("runs"), 1);
    assert_eq!(upgrades.run(&db).await.expect("runs"), 0);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM data_upgrades WHERE name = 'test: counting'"
        )
        .await,
        1
    );
    assert_eq!(count(&db, "SELECT count(*) FROM upgraded").await, 1);

    // Reopened, the database remembers.
    db.close().await;
    let db = shared(dir.path()).await;
    assert_eq!(upgrades.run(&db).await.expect("runs"), 0);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_step_leaves_nothing_and_runs_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = shared(dir.path()).await;
    let (failing, _) = counting(true);
    assert!(failing.run(&db).await.is_err());
    assert_eq!(count(&db, "SELECT count(*) FROM data_upgrades").await, 0);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE name = 'upgraded'"
        )
        .await,
        0,
        "the step's writes were rolled back with it"
    );
    let (upgrades, runs) = counting(false);
    assert_eq!(upgrades.run(&db).await.expect("runs"), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_dedicated_file_made_before_is_upgraded_on_its_first_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tenant = TenantId::new("vault").expect("id");
    let target = Target::Sqlite(Target::sqlite_file(dir.path(), &tenant));
    let pools = |upgrades: DataUpgrades| {
        TenantPools::new(dir.path(), 4, Duration::from_secs(60), Clock::system())
            .with_upgrades(upgrades)
    };
    // An older build made the file (no steps to run then).
    let old = pools(DataUpgrades::none());
    old.get(&tenant, &target).await.expect("creates the file");
    old.close_all().await;

    let (upgrades, runs) = counting(false);
    let new = pools(upgrades);
    let db = new.get(&tenant, &target).await.expect("opens");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM data_upgrades").await, 1);
    new.close_tenant(&tenant);
    drop(db);
    new.get(&tenant, &target).await.expect("opens again");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "recorded in the file");
    new.close_all().await;

    // A new tenant's file, copied from the template, gets the steps too.
    let fresh = TenantId::new("fresh").expect("id");
    let fresh_target = Target::Sqlite(Target::sqlite_file(dir.path(), &fresh));
    let db = new.get(&fresh, &fresh_target).await.expect("creates");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(count(&db, "SELECT count(*) FROM data_upgrades").await, 1);
}
