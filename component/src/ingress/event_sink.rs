//! `POST /twilio/events`: an Event Streams batch, verified by the webhook
//! route, taken event by event.
//!
//! - Status, inbound and conversation events are published as their webhook
//!   twins are ([`deliver`]): the same envelope or status event, the same
//!   de-duplication key, the same forward-only status memory. A replayed
//!   batch, or an event whose webhook came first, publishes nothing new.
//! - Other types are acknowledged and counted.
//! - A malformed event, or one naming another account than the batch was
//!   signed for, is published on the `rejected` topic with its reason, and
//!   the rest of the batch goes on.
//! - 200 only once every event is durable; 503 when the bus (or the status
//!   memory) cannot take one now, so that Twilio retries the whole batch.

use crate::ingress::envelope::Params;
use crate::ingress::event_streams::{Event, Kind};
use crate::ingress::webhook::{Failure, Reply, Route, deliver, refused};
use crate::platform::connector::bus::{self, BusError, BusMessage};
use crate::platform::connector::log::{self, Level};
use crate::platform::connector::metrics;
use crate::platform::connector::types::RejectedDelivery;
use crate::shared::accounts::Account;
use crate::shared::clock;

/// The route name rejected items carry.
const ROUTE: &str = "events";

/// Takes every event of a batch signed for `account`, sent to `url`.
pub(crate) fn take(events: Vec<Event>, url: &str, account: &Account) -> Reply {
    let received_at = clock::now_rfc3339();
    for event in &events {
        let route = match &event.kind {
            Kind::Status => Route::Status,
            Kind::Inbound => Route::Messaging,
            Kind::ConversationMessage => Route::Conversations,
            Kind::Other => {
                metrics::count("event-streams-ignored", 1);
                continue;
            }
            Kind::Malformed(reason) => {
                if let Err(reply) = reject(event, reason, account, &received_at) {
                    return reply;
                }
                continue;
            }
        };
        let outcome = match foreign_account(event, account) {
            Some(reason) => Err(Failure::Malformed(reason)),
            None => deliver(route, Params(&event.params), url, account),
        };
        let failed = match outcome {
            Ok(()) => {
                metrics::count("event-streams-published", 1);
                continue;
            }
            Err(Failure::Malformed(reason)) => reject(event, &reason, account, &received_at),
            Err(Failure::Answer(reply)) => Err(reply),
        };
        if let Err(reply) = failed {
            return reply;
        }
    }
    Reply::ok()
}

/// Why `event` is not taken under `account`'s signature, when it names
/// another account: one account's signature vouches for its own events only.
fn foreign_account(event: &Event, account: &Account) -> Option<String> {
    let named = event.account.as_deref()?;
    (named != account.sid).then(|| format!("the event names account {named}; the batch was signed for another"))
}

/// Publishes `event` on the `rejected` topic with `reason` (counted as
/// `event-streams-rejected`). A deployment without that topic logs it.
fn reject(event: &Event, reason: &str, account: &Account, received_at: &str) -> Result<(), Reply> {
    metrics::count("event-streams-rejected", 1);
    let id = event.id.clone().unwrap_or_else(clock::uuid_v4);
    let rejected = RejectedDelivery {
        id: id.clone(),
        route: ROUTE.to_owned(),
        reason: reason.to_owned(),
        account: Some(account.sid.clone()).filter(|sid| !sid.is_empty()),
        received_at: received_at.to_owned(),
        payload_json: event.raw.clone(),
    };
    match bus::publish("rejected", Some(&id), &BusMessage::Rejected(rejected)) {
        Ok(_) => Ok(()),
        Err(BusError::NotAllowed(_)) => {
            log::log(Level::Warn, &format!("event {id} rejected ({reason}); no rejected topic is granted"));
            Ok(())
        }
        Err(error) => Err(refused("rejected", &id, error)),
    }
}
