//! Faults from outside the process: a full disk, a database that crashes
//! under load, a server killed under load. (Slow clients and SIGTERM with
//! a stuck client are in the security suite's `timeouts`; a Redis outage
//! in the tenancy crate's `ratelimit_redis_outage`.)

use crate::support;

mod cluster;
mod database;
mod disk;
mod outage;
mod relay;

pub(crate) use support::{ADMIN_KEY, App, config};
