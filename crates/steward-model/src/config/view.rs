//! The configuration in force, as the subsystems see it.

use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use super::Config;

/// The configuration in force, shared by every subsystem and swapped whole by a reload:
/// a reader takes one snapshot ([`ConfigView::get`]) and works from it, so nothing ever
/// sees half of one configuration and half of the next.
#[derive(Clone)]
pub struct ConfigView(Arc<RwLock<Snapshot>>);

struct Snapshot {
    config: Arc<Config>,
    loaded_at: DateTime<Utc>,
}

impl ConfigView {
    pub fn new(config: Config) -> ConfigView {
        ConfigView(Arc::new(RwLock::new(Snapshot { config: Arc::new(config), loaded_at: crate::clock::now() })))
    }

    /// The configuration now in force.
    pub fn get(&self) -> Arc<Config> {
        self.0.read().expect("config lock").config.clone()
    }

    /// When the configuration in force was loaded.
    pub fn loaded_at(&self) -> DateTime<Utc> {
        self.0.read().expect("config lock").loaded_at
    }

    /// Puts a new configuration in force; returns it as shared.
    pub fn replace(&self, config: Config) -> Arc<Config> {
        let config = Arc::new(config);
        *self.0.write().expect("config lock") = Snapshot { config: config.clone(), loaded_at: crate::clock::now() };
        config
    }
}
