//! What one connector is granted: the only secrets, settings, streams and
//! outbound hosts its instances can reach.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bus::Bus;
use crate::config::{ConnectorConfig, Secret};
use crate::telemetry::bounded_log::BoundedLog;
use crate::tenancy::{CredentialSets, FetchCache};

/// A connector's grants, shared by all its instances.
#[derive(Debug)]
pub struct Grants {
    /// The connector's name (logs, metrics).
    pub connector: String,
    /// Granted secrets: name → value when set.
    pub secrets: BTreeMap<String, Option<Secret>>,
    /// Granted variables: name → value.
    pub variables: BTreeMap<String, String>,
    /// Stream name → bus topic.
    pub topics: BTreeMap<String, String>,
    /// Hosts it may call.
    pub outbound: OutboundAllowList,
    /// The bus it publishes to.
    pub bus: Arc<dyn Bus>,
    /// The event names it has counted (`metrics.count`), shared by its instances.
    pub events: Arc<EventNames>,
    /// The windows of its bounded log lines (`log.log-bounded`), shared by its instances.
    pub bounded_log: Arc<BoundedLog>,
    /// Its blob store, when granted (`blobs:`).
    pub blobs: Option<crate::blobs::BlobStore>,
    /// Its credential sets, when granted (`credential_sets:`).
    pub credential_sets: Option<Arc<CredentialSets>>,
    /// Its in-memory cache, when granted (`cache:`).
    pub cache: Option<Arc<FetchCache>>,
}

/// The distinct event names one connector may count: a bounded set, so a
/// connector cannot grow the metrics' label space without end.
#[derive(Debug, Default)]
pub struct EventNames(std::sync::Mutex<std::collections::BTreeSet<String>>);

impl EventNames {
    /// At most this many distinct names per connector.
    pub const MOST: usize = 32;

    /// Whether `event` may be counted: a well-formed name, already known or
    /// still within [`Self::MOST`].
    pub fn admit(&self, event: &str) -> bool {
        let well_formed = (1..=48).contains(&event.len())
            && event.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !well_formed {
            return false;
        }
        let Ok(mut names) = self.0.lock() else { return false };
        if names.contains(event) {
            return true;
        }
        names.len() < Self::MOST && names.insert(event.to_owned())
    }
}

impl Grants {
    /// The grants `config` declares (its credential sets read now); fails
    /// when its blob store cannot be opened.
    pub fn new(config: &ConnectorConfig, bus: Arc<dyn Bus>) -> Result<Self, crate::blobs::OpenError> {
        let blobs = config.blobs.as_ref().map(crate::blobs::BlobStore::open).transpose()?;
        let credential_sets = config.credential_sets.clone().map(|sets| Arc::new(CredentialSets::load(sets)));
        let cache = config.cache.as_ref().map(|cache| Arc::new(FetchCache::new(&config.name, cache)));
        Ok(Self {
            connector: config.name.clone(),
            secrets: config.secrets.clone(),
            variables: config.variables.clone(),
            topics: config.topics.clone(),
            outbound: OutboundAllowList::new(config.outbound_hosts.clone()),
            bus,
            events: Arc::default(),
            bounded_log: Arc::default(),
            blobs,
            credential_sets,
            cache,
        })
    }
}

/// Host names a connector may call; `*.example.com` matches any subdomain.
#[derive(Debug, Clone)]
pub struct OutboundAllowList(Vec<String>);

impl OutboundAllowList {
    /// An allow-list of host names and `*.domain` patterns.
    pub fn new(hosts: Vec<String>) -> Self {
        Self(hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect())
    }

    /// Whether `host` is on the list.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.0.iter().any(|pattern| match pattern.strip_prefix("*.") {
            Some(domain) => {
                host.len() > domain.len() + 1
                    && host.ends_with(domain)
                    && host[..host.len() - domain.len()].ends_with('.')
            }
            None => *pattern == host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_exact_hosts_and_subdomains_only() {
        let list = OutboundAllowList::new(vec!["api.example.com".into(), "*.example.com".into(), "127.0.0.1".into()]);
        assert!(list.allows("api.example.com"));
        assert!(list.allows("API.Example.com."));
        assert!(list.allows("conversations.dublin.ie1.example.com"));
        assert!(list.allows("127.0.0.1"));
        assert!(!list.allows("example.com"));
        assert!(!list.allows("evilexample.com"));
        assert!(!list.allows("example.com.evil.org"));
        assert!(!list.allows("127.0.0.2"));
    }
}
