//! Property: whatever interleaving of creates, deletes, reads and searches
//! several tenants perform, no tenant ever sees, finds or deletes a record
//! that is not its own, and each sees exactly its own. Runs on both
//! backends (`tenants_only_ever_see_their_own::{sqlite,postgres}`).

use crate::support;

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Map;
use tenancy::{TenantContext, TenantId, TenantSource};
use tenantd::records::{NewRecord, RecordId, RecordsError, SearchQuery};
use tenantd::store::Store;

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const WORDS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

#[derive(Debug, Clone)]
enum Op {
    Create {
        tenant: usize,
        word: usize,
        n: u8,
    },
    /// Delete the `pick`-th known record (of any tenant) as `tenant`.
    Delete {
        tenant: usize,
        pick: usize,
    },
    Get {
        tenant: usize,
        pick: usize,
    },
    Search {
        tenant: usize,
        word: Option<usize>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 0..4usize, any::<u8>()).prop_map(|(tenant, word, n)| Op::Create { tenant, word, n }),
        1 => (0..3usize, any::<usize>()).prop_map(|(tenant, pick)| Op::Delete { tenant, pick }),
        2 => (0..3usize, any::<usize>()).prop_map(|(tenant, pick)| Op::Get { tenant, pick }),
        2 => (0..3usize, proptest::option::of(0..4usize)).prop_map(|(tenant, word)| Op::Search { tenant, word }),
    ]
}

fn ctx(tenant: usize) -> TenantContext {
    TenantContext::for_testing(
        TenantId::new(TENANTS[tenant]).expect("valid"),
        TenantSource::Static,
    )
}

struct Known {
    tenant: usize,
    word: usize,
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = support::TestStorage::new();
    let mut storage = tenantd::config::StorageConfig::default();
    support::use_backend(&mut storage, dir.path());
    let store = Store::open(
        &storage,
        4,
        tenantd::clock::Clock::system(),
        tenantd::server::data_upgrades(),
    )
    .await
    .expect("open");
    let mut known: BTreeMap<String, Known> = BTreeMap::new();
    let mut ids: Vec<RecordId> = Vec::new();
    for op in ops {
        match op {
            Op::Create { tenant, word, n } => {
                let new = NewRecord {
                    kind: "service".into(),
                    name: format!("{}-{n}", WORDS[word]),
                    url: "https://example".into(),
                    description: Some(format!("the {} service", WORDS[word])),
                    tags: vec![],
                    fields: Map::new(),
                };
                match store.scoped(&ctx(tenant)).create_record(new.clone()).await {
                    Ok(record) => {
                        prop_assert_eq!(record.tenant_id.as_str(), TENANTS[tenant]);
                        known.insert(record.id.to_string(), Known { tenant, word });
                        ids.push(record.id);
                    }
                    Err(RecordsError::Conflict { .. }) => {
                        // Only a same-tenant name may conflict.
                        let names: Vec<_> = store
                            .scoped(&ctx(tenant))
                            .search_records(&all())
                            .await
                            .expect("search")
                            .results
                            .into_iter()
                            .map(|h| h.record.name)
                            .collect();
                        prop_assert!(
                            names.contains(&new.name),
                            "conflict without a same-tenant twin"
                        );
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("create: {e}"))),
                }
            }
            Op::Delete { tenant, pick } => {
                if ids.is_empty() {
                    continue;
                }
                let id = ids[pick % ids.len()].clone();
                let owner = known.get(id.as_str()).map(|k| k.tenant);
                let result = store.scoped(&ctx(tenant)).delete_record(&id).await;
                if owner == Some(tenant) {
                    prop_assert!(result.is_ok());
                    known.remove(id.as_str());
                } else {
                    prop_assert!(matches!(result, Err(RecordsError::NotFound(_))));
                }
            }
            Op::Get { tenant, pick } => {
                if ids.is_empty() {
                    continue;
                }
                let id = &ids[pick % ids.len()];
                let owner = known.get(id.as_str()).map(|k| k.tenant);
                match store.scoped(&ctx(tenant)).get_record(id).await {
                    Ok(record) => {
                        prop_assert_eq!(owner, Some(tenant));
                        prop_assert_eq!(record.tenant_id.as_str(), TENANTS[tenant]);
                    }
                    Err(RecordsError::NotFound(_)) => prop_assert_ne!(owner, Some(tenant)),
                    Err(e) => return Err(TestCaseError::fail(format!("get: {e}"))),
                }
            }
            Op::Search { tenant, word } => {
                let mut q = all();
                if let Some(w) = word {
                    q.text = WORDS[w].to_owned();
                }
                let page = store
                    .scoped(&ctx(tenant))
                    .search_records(&q)
                    .await
                    .expect("search");
                let expected = known
                    .values()
                    .filter(|k| k.tenant == tenant && word.is_none_or(|w| w == k.word))
                    .count();
                prop_assert_eq!(page.total as usize, expected);
                prop_assert_eq!(page.results.len(), expected);
                for hit in page.results {
                    prop_assert_eq!(hit.record.tenant_id.as_str(), TENANTS[tenant]);
                }
            }
        }
    }
    Ok(())
}

fn all() -> SearchQuery {
    SearchQuery {
        text: String::new(),
        kind: None,
        tags: vec![],
        limit: 1000,
        offset: 0,
    }
}

/// Runs one case on `backend` (on a runtime of its own: proptest's cases
/// are synchronous). `Ok` without running when PostgreSQL is not set up;
/// `run_on` says so loudly.
fn case_on(backend: support::Backend, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(support::run_on(backend, run(ops)))
        .unwrap_or(Ok(()))
}

mod tenants_only_ever_see_their_own {
    use proptest::prelude::*;

    use super::{case_on, op, support::Backend};

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn sqlite(ops in proptest::collection::vec(op(), 1..60)) {
            case_on(Backend::Sqlite, ops)?;
        }

        #[test]
        fn postgres(ops in proptest::collection::vec(op(), 1..60)) {
            if crate::support::postgres::superuser_url().is_none() {
                // Said once per test, not once per case.
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| crate::support::skipped(crate::support::postgres::URL_VAR));
                return Ok(());
            }
            case_on(Backend::Postgres, ops)?;
        }
    }
}
