//! Bulk-loads records into a stopped tenantd SQLite data directory for
//! `scripts/bench-storage.sh` (a million API calls would take longer than
//! the benchmark). Rows are written as tenantd writes them: ULID ids, the
//! search entry per record made by the server's own function
//! (`tenantd::records::search_columns`, tokens carrying the tenant) and
//! written through this build's bundled SQLite, which has the FTS5
//! options the schema uses, `tenant_stats` by its triggers. The data
//! directory must have been opened by this build's server first (its
//! migrations and data upgrades done).
//!
//! Usage: `bench_seed_sqlite DB_FILE TENANTS PER_TENANT IDS_OUT`
//! (tenants `t00000`…; IDS_OUT gets "<tenant> <record id>" per tenant).

use std::io::Write as _;

use sqlx::Connection as _;
use tenantd::records::{NewRecord, SEARCH_INDEX_SQL, search_columns};

const WORDS: [&str; 20] = [
    "payments",
    "billing",
    "search",
    "gateway",
    "ledger",
    "auth",
    "inventory",
    "shipping",
    "catalog",
    "checkout",
    "pricing",
    "orders",
    "invoices",
    "refunds",
    "fraud",
    "identity",
    "profile",
    "reports",
    "metrics",
    "alerts",
];
const NOW: &str = "2026-01-01T00:00:00.000000Z";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 5,
        "usage: bench_seed_sqlite DB_FILE TENANTS PER_TENANT IDS_OUT"
    );
    let (db, tenants, per_tenant): (&str, u32, u32) =
        (&args[1], args[2].parse()?, args[3].parse()?);
    let mut ids = std::io::BufWriter::new(std::fs::File::create(&args[4])?);
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{db}")).await?;
    sqlx::query("PRAGMA synchronous = OFF")
        .execute(&mut conn)
        .await?;
    let mut seq: i64 = sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM records")
        .fetch_one(&mut conn)
        .await?;
    let mut state: u64 = 7;
    let mut next = move |n: usize| {
        // xorshift: deterministic word choice without another dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let started = std::time::Instant::now();
    for t in 0..tenants {
        let tenant = format!("t{t:05}");
        let tenant_id = tenancy::TenantId::new(&tenant)?;
        let mut tx = conn.begin().await?;
        for i in 0..per_tenant {
            seq += 1;
            let (word, other) = (WORDS[next(WORDS.len())], WORDS[next(WORDS.len())]);
            let id = format!("rec_{}", ulid::Ulid::new());
            if i == 0 {
                writeln!(ids, "{tenant} {id}")?;
            }
            let stage = if i % 2 == 1 { "prod" } else { "staging" };
            let record = NewRecord {
                kind: "service".to_owned(),
                name: format!("{word}-service-{i}"),
                url: format!("https://git.example.test/{tenant}/{word}-{i}"),
                description: Some(format!("The {word} service number {i}, talks to {other}")),
                tags: vec![word.to_owned(), stage.to_owned()],
                fields: serde_json::json!({"lang": "rust", "owner": format!("team-{}", i % 17)})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            };
            sqlx::query(
                "INSERT INTO records (seq, tenant_id, id, kind, name, url, description, tags, fields, \
                 size_bytes, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
            )
            .bind(seq)
            .bind(&tenant)
            .bind(&id)
            .bind(&record.kind)
            .bind(&record.name)
            .bind(&record.url)
            .bind(&record.description)
            .bind(serde_json::to_string(&record.tags)?)
            .bind(serde_json::to_string(&record.fields)?)
            .bind(record.size_bytes())
            .bind(NOW)
            .execute(&mut *tx)
            .await?;
            // The server's own entry: every word one token of the tenant.
            let [name, description, url, tags, fields] = search_columns(&tenant_id, &record);
            sqlx::query(SEARCH_INDEX_SQL)
                .bind(seq)
                .bind(name)
                .bind(description)
                .bind(url)
                .bind(tags)
                .bind(fields)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    ids.flush()?;
    eprintln!(
        "seeded {} records over {tenants} tenants (sqlite) in {:.0} s",
        u64::from(tenants) * u64::from(per_tenant),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
