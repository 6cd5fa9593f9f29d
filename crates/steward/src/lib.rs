//! Steward: the operations layer of a production system, as one binary.
//!
//! # Layout (the data flow, left to right)
//! config → checks → scheduler → store → api / cli.
//! See ARCHITECTURE.md for the invariants each module keeps.

pub mod auth;
pub mod checks;
pub mod config;
pub mod store;
