//! The bus → Twilio: [`message`] checks an egress message and says exactly
//! what to send, [`options`] checks Twilio's own options, [`send`] owns the
//! whole send sequence of one attempt (the account, the WhatsApp window, the
//! request, the call, and the reconciliation of an earlier ambiguous attempt
//! by the pure rules of [`reconcile`]), and cancels.

pub mod message;
pub mod options;
pub mod reconcile;
pub(crate) mod send;
