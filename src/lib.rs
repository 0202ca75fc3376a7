//! megatest: a supervisor daemon that runs multi-hour, multi-agent AI coding sessions and
//! reports what really happened. See ARCHITECTURE.md for the bird's-eye view.
//!
//! Reading order: [`config`] (file → validated [`config::Config`]) → [`session`] (the one task
//! that owns state; [`protocol::Event`] is every input) → [`backend`] (agent processes) →
//! [`proxy`] (the metered model endpoint) → [`eval`] / [`metrics`] / [`report`] (what the session
//! measured) → [`store`] (`session.db`). [`cli`] is the thin edge.

// A panic in the daemon loses a session: library code returns errors instead (tests may unwrap).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
// Every public item says what it is, with units and where a rule comes from.
#![deny(missing_docs)]

pub mod agent;
pub mod api;
pub mod backend;
pub mod budget;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod daemon;
pub mod eval;
pub mod figure;
pub mod fsutil;
pub mod metrics;
pub mod project;
pub mod protocol;
pub mod proxy;
pub mod recovery;
pub mod report;
pub mod session;
pub mod store;
pub mod swarm;
