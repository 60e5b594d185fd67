//! Cost of one rate-limit check on the [`MemoryStore`]: a tenant bucket with
//! minute, hour and day windows, for one tenant and spread over 100,000
//! tenants (the map is full, so the cost includes cache misses on a large
//! table). `check_now` is the synchronous body of the async `check`.
//!
//! Run: `cargo bench -p tower-tenancy --bench ratelimit`.

use std::hint::black_box;

use criterion::{Criterion, criterion_main};
use tower_tenancy::TenantId;
use tower_tenancy::ratelimit::{Bucket, MemoryStore, Window};

fn bench(c: &mut Criterion) {
    let buckets = [Bucket::tenant([
        Window::per_minute(u64::MAX),
        Window::per_hour(u64::MAX),
        Window::per_day(u64::MAX),
    ])];
    let now = 1_700_000_000_000;
    let mut group = c.benchmark_group("ratelimit_memory");

    let one = MemoryStore::new();
    let tenant = TenantId::new("tenant-42").expect("valid");
    group.bench_function("one_tenant", |b| {
        b.iter(|| one.check_now(black_box(&tenant), &buckets, now))
    });

    let many = MemoryStore::new();
    let tenants: Vec<TenantId> = (0..100_000)
        .map(|i| TenantId::new(&format!("tenant-{i}")).expect("valid"))
        .collect();
    for t in &tenants {
        many.check_now(t, &buckets, now);
    }
    let mut i = 0usize;
    group.bench_function("100k_tenants", |b| {
        b.iter(|| {
            // A stride that visits the tenants in a cache-unfriendly order.
            i = (i + 7_919) % tenants.len();
            many.check_now(black_box(&tenants[i]), &buckets, now)
        })
    });
    group.finish();
}

// The macro generates an undocumented `pub fn benches`; a private module
// keeps it out of the crate surface that `missing_docs` checks.
mod group {
    criterion::criterion_group!(benches, super::bench);
}
use group::benches;
criterion_main!(benches);
