//! Twilio → the bus: webhooks verified ([`signature`]) with their account's
//! tokens or shared keys ([`signature_settings`]), turned into envelopes with
//! their typed fields ([`envelope`], [`typed_fields`]), status and consent
//! events ([`consent`]), status kept moving forward ([`status_order`],
//! [`status_memory`]), media fetched into the host's blob store ([`media`],
//! [`media_fetch`]); [`webhook`] is the route handler, and Event Streams
//! batches ([`event_streams`]) are taken by [`event_sink`].

pub mod consent;
pub mod envelope;
pub(crate) mod event_sink;
pub mod event_streams;
pub mod media;
pub(crate) mod media_fetch;
pub mod signature;
pub mod signature_settings;
pub(crate) mod status_memory;
pub mod status_order;
pub mod typed_fields;
pub(crate) mod webhook;
