//! What lets one connector serve many tenants of its provider (many
//! accounts) without the host learning what a tenant is:
//!
//! - [`CredentialSets`]: named sets of the connector's own secrets and
//!   settings, one folder each in a directory, held in memory (one lookup is
//!   a map read) and reloaded when the directory changes ([`SetWatcher`]);
//! - [`FetchCache`]: a bounded memory of values the connector fetched from
//!   its provider, with fetches bounded in rate and number, so unknown
//!   tenants cannot turn into a flood of calls.

mod cache;
mod sets;
mod watch;

pub use cache::{FetchCache, FetchLeave, FetchRefused};
pub use sets::{CredentialSets, SetsSummary};
pub use watch::SetWatcher;
