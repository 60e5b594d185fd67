//! Faults from outside the process: a full disk. (Slow clients and
//! SIGTERM with a stuck client are in the security suite's `timeouts`.)

#[path = "../support/mod.rs"]
mod support;

mod database;
mod disk;

pub(crate) use support::{ADMIN_KEY, App, config};
