//! Policies in force per venue.
//!
//! Every venue has a policy file (see `policies/`); it is parsed and
//! validated at start-up (the aggregator refuses to start otherwise), and
//! its SHA-256 is the hash every release and lease must name.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use veil_privacy::policy::LoadedPolicy;

/// Policies per venue.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    by_venue: HashMap<String, Arc<LoadedPolicy>>,
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    veil_privacy::policy::sha256_hex(bytes)
}

impl Policies {
    /// Loads and validates every venue's policy file: (venue, resolved path).
    pub fn load<'a>(files: impl IntoIterator<Item = (&'a str, PathBuf)>) -> Result<Self, String> {
        let mut by_venue = HashMap::new();
        for (venue, path) in files {
            let policy = load_one(venue, &path)?;
            by_venue.insert(venue.to_owned(), Arc::new(policy));
        }
        Ok(Self { by_venue })
    }

    /// Policies from already loaded documents (tools and tests).
    pub fn from_loaded(venues: impl IntoIterator<Item = (String, LoadedPolicy)>) -> Self {
        Self {
            by_venue: venues.into_iter().map(|(v, p)| (v, Arc::new(p))).collect(),
        }
    }

    /// The policy of `venue`, if any (fail closed when `None`).
    pub fn get(&self, venue: &str) -> Option<&Arc<LoadedPolicy>> {
        self.by_venue.get(venue)
    }

    /// Every (venue, policy).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<LoadedPolicy>)> {
        self.by_venue.iter()
    }
}

fn load_one(venue: &str, path: &Path) -> Result<LoadedPolicy, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("venue {venue}: reading policy {}: {e}", path.display()))?;
    LoadedPolicy::parse(&text).map_err(|e| format!("venue {venue}: policy {}: {e}", path.display()))
}
