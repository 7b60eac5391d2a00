//! Twilio → the bus: webhooks verified ([`signature`]) with their account's
//! tokens, turned into envelopes, status and consent events ([`envelope`],
//! [`consent`]), status kept moving forward ([`status_order`],
//! [`status_memory`]), media fetched into the host's blob store
//! ([`media`], [`media_fetch`]); [`webhook`] is the route handler.

pub mod consent;
pub mod envelope;
pub mod media;
pub(crate) mod media_fetch;
pub mod signature;
pub(crate) mod status_memory;
pub mod status_order;
pub(crate) mod webhook;
