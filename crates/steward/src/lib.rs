//! Steward: the operations layer of a production system, as one binary.
//!
//! # Layout (the data flow, left to right)
//! config → checks (scheduler) → alerting → incidents → runbooks; backups beside them;
//! store under all of them; engine (assembly) → api / cli on top.
//! See ARCHITECTURE.md for the invariants each module keeps.

pub mod alerting;
pub mod api;
pub mod backups;
pub mod checks;
pub mod cli;
pub mod cluster;
pub mod demo;
pub mod engine;
pub mod incidents;
pub mod runbooks;
pub mod slos;
pub mod telemetry;

pub use steward_model::{auth, bounds, clock, config, cron};
pub use steward_store as store;
