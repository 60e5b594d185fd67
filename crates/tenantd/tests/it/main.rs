//! tenantd's integration tests, one binary: real servers over HTTP, the
//! real binary, the store and PostgreSQL's own isolation.
//!
//! Behaviour tests are `#[backends]` functions: each runs twice,
//! `name::sqlite` and `name::postgres` (skipped loudly without
//! `TENANTD_TEST_POSTGRES_URL`). Tests about one backend only (PostgreSQL's
//! grants and row-level security, faults of a PostgreSQL cluster the test
//! starts itself) are plain `#[tokio::test]`s and say which backend they
//! need.

mod support;

mod accounting;
mod admin;
mod api;
mod cli;
mod faults;
mod jobs;
mod portable;
mod postgres;
mod security;
mod store_isolation;
mod tiers;
