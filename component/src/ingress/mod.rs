//! Twilio → the bus: webhooks verified ([`signature`]) with their account's
//! tokens or shared keys ([`signature_settings`]), turned into envelopes with their typed fields ([`envelope`],
//! [`typed_fields`]), status and consent events ([`consent`]), status kept moving forward ([`status_order`],
//! [`status_memory`]), media fetched into the host's blob store
//! ([`media`], [`media_fetch`]); [`webhook`] is the route handler.

pub mod consent;
pub mod envelope;
pub mod media;
pub(crate) mod media_fetch;
pub mod signature;
pub mod signature_settings;
pub(crate) mod status_memory;
pub mod status_order;
pub mod typed_fields;
pub(crate) mod webhook;
