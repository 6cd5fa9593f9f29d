//! Steward's model layer: the types and languages every other layer speaks, with no
//! runtime of their own — configuration (YAML → a validated `Config`), checks'
//! outcomes and states, alerts and their matchers, templates and time intervals,
//! incidents and on-call arithmetic, runbook runs and their templates, backup records,
//! roles, and the clock, bounds and cron-in-a-zone every schedule uses.
//!
//! Nothing here talks to the network, a database or another process; configuration
//! loading reads files and resolves `${env:…}` / `${file:…}` references, nothing more.

pub mod alerting;
pub mod auth;
pub mod backups;
pub mod bounds;
pub mod checks;
pub mod clock;
pub mod config;
pub mod cron;
pub mod forecast;
pub mod incidents;
pub mod runbooks;
pub mod slo;
