//! The egress worker: takes messages from a connector's egress topic, asks the
//! connector to send them, and publishes what came of it.
//!
//! A message leaves the topic only when the provider took it or it was
//! dead-lettered with the reason. Retryable outcomes come back after an
//! exponential backoff with jitter (at least the provider's Retry-After), up to
//! `max_attempts`; permanent ones are dead-lettered at once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::rate::{Pace, SenderRates, SharedRates};
use super::{CONSENT_STREAM, DEADLETTER_STREAM, EGRESS_STREAM, STATUS_STREAM};
use crate::bus::{Bus, Delivery};
use crate::config::EgressConfig;
use crate::connectors::ConnectorSlot;
use crate::messages::{self, Attributes, ConsentEvent, DeadLetter, EgressMessage, StatusEvent};
use crate::runtime::CallFailure;
use crate::runtime::bindings::{self, ProviderError, SendError};
use crate::telemetry::spans::{self, Kind, Start};
use crate::telemetry::{TraceContext, metrics};

/// How long an idle worker waits before looking at the topic again.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How long a worker waits after the bus failed before trying again.
const BUS_PAUSE: Duration = Duration::from_secs(1);
/// A message waits for its sender's pace (holding its worker) at most this
/// long. One whose turn is further away goes back on the bus until then, so
/// that a busy sender never holds every worker while the others wait.
const PACE_HORIZON: Duration = Duration::from_secs(2);

/// One connector's egress: its topics, its bounds, and the shared rate limits.
#[derive(Debug)]
pub struct EgressWorker {
    slot: Arc<ConnectorSlot>,
    bus: Arc<dyn Bus>,
    egress_topic: String,
    status_topic: Option<String>,
    deadletter_topic: Option<String>,
    consent_topic: Option<String>,
    config: EgressConfig,
    rates: Pace,
    /// How long a taken message stays hidden: longer than any one send.
    visibility: Duration,
}

/// How an egress message ended (or is to go on), as status events, dead
/// letters and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider took it.
    Accepted,
    /// Sent again later.
    Retry,
    /// It will never be sent as it is.
    Failed,
    /// The recipient opted out.
    OptedOut,
    /// It may or may not have reached the provider: not sent again blindly.
    Unknown,
}

impl Outcome {
    /// The name in status events, dead letters and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Retry => "retry",
            Self::Failed => "failed",
            Self::OptedOut => "opted-out",
            Self::Unknown => "unknown",
        }
    }
}

/// The final word on a message that was not sent.
struct Failure {
    outcome: Outcome,
    reason: String,
    error: Option<ProviderError>,
}

impl Failure {
    fn new(outcome: Outcome, reason: String, error: Option<ProviderError>) -> Self {
        Self { outcome, reason, error }
    }
}

impl EgressWorker {
    /// The worker for `slot`, or `None` when the connector has no egress
    /// topic. With `shared_pace`, each sender's rate holds across every
    /// host of `bus` (a NATS bus); without, on this host (the embedded bus).
    pub fn new(
        slot: Arc<ConnectorSlot>,
        bus: Arc<dyn Bus>,
        call_timeout: Duration,
        shared_pace: bool,
    ) -> Option<Arc<Self>> {
        let topics = &slot.config.topics;
        let egress_topic = topics.get(EGRESS_STREAM)?.clone();
        let rate = slot.config.egress.rate_per_sender;
        let rates = if shared_pace {
            Pace::Shared(SharedRates::new(bus.clone(), rate))
        } else {
            Pace::Local(SenderRates::new(rate))
        };
        Some(Arc::new(Self {
            status_topic: topics.get(STATUS_STREAM).cloned(),
            deadletter_topic: topics.get(DEADLETTER_STREAM).cloned(),
            consent_topic: topics.get(CONSENT_STREAM).cloned(),
            rates,
            config: slot.config.egress.clone(),
            visibility: call_timeout + Duration::from_secs(30),
            egress_topic,
            slot,
            bus,
        }))
    }

    /// Runs `concurrency` loops on `tasks` until `stop`; a send under way
    /// finishes first (each is bounded by the call timeout).
    pub fn spawn(self: &Arc<Self>, tasks: &TaskTracker, stop: &CancellationToken) {
        for _ in 0..self.config.concurrency {
            let (worker, stop) = (self.clone(), stop.clone());
            tasks.spawn(async move { worker.run(stop).await });
        }
    }

    /// Takes and processes messages, one at a time, until `stop`. Once a
    /// message's send is over, the next one is taken while the outcome is
    /// settled, so both share one commit: a message costs one commit wait,
    /// not two. The next message is not taken earlier, so it never waits
    /// hidden behind a slow send.
    async fn run(&self, stop: CancellationToken) {
        let mut next = None;
        while !stop.is_cancelled() {
            let Some(delivery) = next.take() else {
                next = self.take_next(&stop).await;
                continue;
            };
            let (sent, send_over) = oneshot::channel();
            let take_after_send = async {
                // Fired when the send is over, or dropped when it never started.
                let _ = send_over.await;
                if stop.is_cancelled() { None } else { self.take_next(&stop).await }
            };
            (_, next) = tokio::join!(self.process(delivery, &stop, sent), take_after_send);
        }
        if let Some(unsent) = next {
            // Taken but not started: back at once, for another host or the next start.
            self.settle(self.bus.retry_later(unsent.seq, Duration::ZERO).await, "release");
        }
    }

    /// The oldest visible message; none after a pause when there is none or
    /// the bus failed.
    async fn take_next(&self, stop: &CancellationToken) -> Option<Delivery> {
        match self.bus.take(&self.egress_topic, self.visibility).await {
            Ok(Some(delivery)) => return Some(delivery),
            Ok(None) => stop.run_until_cancelled(tokio::time::sleep(IDLE_POLL)).await,
            Err(e) => {
                tracing::warn!(topic = %self.egress_topic, error = %e, "cannot take egress messages");
                stop.run_until_cancelled(tokio::time::sleep(BUS_PAUSE)).await
            }
        };
        None
    }

    /// Sends one message and settles it: acknowledged, retried later, or
    /// dead-lettered; released at once when `stop` comes while it waits.
    /// `sent` fires once the send is over.
    async fn process(&self, delivery: Delivery, stop: &CancellationToken, sent: oneshot::Sender<()>) {
        let message: EgressMessage = match serde_json::from_slice(&delivery.payload) {
            Ok(message) => message,
            Err(e) => {
                let reason = format!("malformed egress message: {e}");
                let ident = Ident::plain(format!("seq-{}", delivery.seq));
                self.fail(&delivery, &ident, Failure::new(Outcome::Failed, reason, None)).await;
                return;
            }
        };
        let id = message.id.clone().unwrap_or_else(|| format!("seq-{}", delivery.seq));
        let start = spans::start(delivery.trace.as_ref());
        let span = self.send_span(&start, &delivery, &id);
        let ident = Ident { records: message.record_key(&id), id };
        let send = self.send(&delivery, &ident, message.to_wit(&ident.id), stop, sent).instrument(span);
        TraceContext::carry(start.carried(), send).await;
    }

    /// The span of one attempt at a message: a child of the trace the
    /// message was enqueued in, when it came with one. Its outcome and error
    /// class are recorded when known ([`record_outcome`]).
    fn send_span(&self, start: &Start, delivery: &Delivery, id: &str) -> tracing::Span {
        use tracing::field::Empty;
        let span = spans::service_span!(
            start,
            delivery.trace.as_ref(),
            "egress",
            connector = %self.slot.config.name,
            id = %id,
            attempt = delivery.attempt,
            otel.name = Empty,
            otel.kind = Empty,
            otel.status_code = Empty,
        );
        let topic = &self.egress_topic;
        let name = || format!("process {topic}");
        spans::describe(&span, Kind::Consumer, name, || {
            spans::messaging(self.bus.system(), "process", topic, Some(id))
        });
        span
    }

    /// What the records about `delivery` carry: the send's own trace
    /// context; in an unsampled trace, the one the send carries; the one
    /// the message came with when nothing is exported.
    fn onward(delivery: &Delivery) -> Option<TraceContext> {
        TraceContext::carried().or_else(|| TraceContext::onward(&tracing::Span::current(), delivery.trace.as_ref()))
    }

    /// Checks the message with the connector, waits for its sender's rate, sends it.
    async fn send(
        &self,
        delivery: &Delivery,
        id: &Ident,
        message: bindings::EgressMessage,
        stop: &CancellationToken,
        sent: oneshot::Sender<()>,
    ) {
        let current = self.slot.current();
        let plan = match current.check(&message).await {
            Ok(plan) => plan,
            Err(CallFailure::Refused(reason)) => {
                let failure = Failure::new(Outcome::Failed, format!("invalid: {reason}"), None);
                return self.fail(delivery, id, failure).await;
            }
            Err(failure) => return self.retry(delivery, id, None, call_error(&failure)).await,
        };
        match stop.run_until_cancelled(self.rates.acquire(&plan.rate_key, PACE_HORIZON)).await {
            Some(Ok(())) => {}
            // Its sender's turn is further away than a worker is held: back on the bus until then.
            Some(Err(later)) => {
                let later = later.min(self.visibility);
                return self.settle(self.bus.retry_later(delivery.seq, later).await, "retry");
            }
            // Shutting down before it was sent: give it back for another host (or the next start).
            None => return self.settle(self.bus.retry_later(delivery.seq, Duration::ZERO).await, "release"),
        }
        let outcome = current.send(&message, delivery.attempt).await;
        let _ = sent.send(());
        match outcome {
            Ok(accepted) => self.accepted(delivery, id, accepted).await,
            Err(CallFailure::Refused(SendError::Retry(hint))) => {
                self.retry(delivery, id, hint.after_ms.map(Duration::from_millis), hint.reason).await
            }
            Err(CallFailure::Refused(SendError::Reject(error))) => {
                let reason = format!("rejected: {}", describe(&error));
                self.fail(delivery, id, Failure::new(Outcome::Failed, reason, Some(error))).await
            }
            Err(CallFailure::Refused(SendError::OptedOut(error))) => {
                if !self.publish_consent(id, delivery, message.to.as_deref(), &plan.rate_key).await {
                    // Not recorded: it comes back, is refused again, and recorded then.
                    return self.settle(self.bus.retry_later(delivery.seq, BUS_PAUSE).await, "retry");
                }
                let reason = format!("recipient opted out: {}", describe(&error));
                self.fail(delivery, id, Failure::new(Outcome::OptedOut, reason, Some(error))).await
            }
            Err(CallFailure::Refused(SendError::Ambiguous(error))) => {
                // Not retried: the provider may have the message already.
                let reason = format!("outcome unknown, may have been sent: {}", describe(&error));
                self.fail(delivery, id, Failure::new(Outcome::Unknown, reason, Some(error))).await
            }
            Err(failure) => self.retry(delivery, id, None, call_error(&failure)).await,
        }
    }

    async fn accepted(&self, delivery: &Delivery, id: &Ident, accepted: bindings::Accepted) {
        tracing::info!(sid = %accepted.provider_message_id, status = %accepted.status, "sent");
        metrics::egress_outcome(&self.slot.config.name, Outcome::Accepted.as_str());
        record_outcome(Outcome::Accepted, None);
        let mut event = status_event(&id.id, Some(accepted.provider_message_id), &accepted.status, None);
        event.reconciliation = accepted.reconciliation.map(|how| messages::reconciliation_name(how).to_owned());
        self.publish_status_and_ack(&event, id, delivery).await;
    }

    async fn retry(&self, delivery: &Delivery, id: &Ident, after: Option<Duration>, error: ProviderError) {
        let connector = &self.slot.config.name;
        if delivery.attempt >= self.config.max_attempts {
            let reason = format!("gave up after {} attempts: {}", delivery.attempt, describe(&error));
            // Out of attempts while the connector was still settling whether it was sent.
            let outcome = match error.class {
                bindings::ErrorClass::Unknown => Outcome::Unknown,
                _ => Outcome::Failed,
            };
            self.fail(delivery, id, Failure::new(outcome, reason, Some(error))).await;
            return;
        }
        let delay = backoff(&self.config, delivery.attempt).max(after.unwrap_or_default());
        tracing::warn!(?delay, reason = %describe(&error), "send failed; retrying later");
        record_outcome(Outcome::Retry, Some(&error));
        metrics::egress_outcome(connector, Outcome::Retry.as_str());
        metrics::egress_retry(connector);
        self.settle(self.bus.retry_later(delivery.seq, delay).await, "retry");
    }

    /// Dead-letters a message with its reason, publishes its final status, acknowledges it.
    async fn fail(&self, delivery: &Delivery, id: &Ident, failure: Failure) {
        let connector = &self.slot.config.name;
        let status = failure.outcome.as_str();
        tracing::warn!(status, reason = %failure.reason, "dead-lettering");
        record_outcome(failure.outcome, failure.error.as_ref());
        metrics::egress_outcome(connector, status);
        let Some(topic) = &self.deadletter_topic else {
            tracing::error!("no deadletter topic for {connector}: the message stays on the egress topic");
            self.settle(self.bus.retry_later(delivery.seq, Duration::from_secs(60)).await, "retry");
            return;
        };
        let record = DeadLetter {
            id: id.id.clone(),
            status: status.to_owned(),
            reason: failure.reason,
            error_code: failure.error.as_ref().and_then(|e| e.code),
            error_message: failure.error.as_ref().map(|e| e.message.clone()),
            error_class: failure.error.as_ref().map(|e| messages::error_class_name(e.class).to_owned()),
            attempts: delivery.attempt,
            dead_lettered_at: messages::now_rfc3339(),
            message: serde_json::from_slice(&delivery.payload)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&delivery.payload).into_owned())),
        };
        if !self.publish_record(topic, &id.records, &record, delivery, "dead letter").await {
            return;
        }
        metrics::dead_letter(connector);
        let event = status_event(&id.id, None, status, failure.error.as_ref());
        self.publish_status_and_ack(&event, id, delivery).await;
    }

    /// Publishes a message's final status event and acknowledges the message
    /// (in one commit on the SQLite bus). Should the bus take neither, the
    /// message comes back after its visibility timeout and this is done again;
    /// the event's key makes a second publish a duplicate.
    async fn publish_status_and_ack(&self, event: &StatusEvent, id: &Ident, delivery: &Delivery) {
        let Some(topic) = &self.status_topic else {
            return self.settle(self.bus.ack(delivery.seq).await, "ack");
        };
        let key = format!("{}:{}", id.records, event.status);
        let trace = Self::onward(delivery);
        let published =
            self.bus.publish_and_ack(topic, Some(&key), record_payload(event), trace.as_ref(), delivery.seq);
        if let Err(e) = published.await {
            tracing::error!(error = %e, "cannot publish the status event and acknowledge; the message will come back");
        }
    }

    /// The provider refused a send because `user` opted out of `sender`: the
    /// platform hears it on the consent topic, scoped to that sender. True
    /// when published (or the connector has no consent topic).
    async fn publish_consent(&self, id: &Ident, delivery: &Delivery, user: Option<&str>, sender: &str) -> bool {
        let (Some(topic), Some(user)) = (&self.consent_topic, user) else { return true };
        let event = ConsentEvent {
            user: user.to_owned(),
            sender: sender.to_owned(),
            action: "opted-out".to_owned(),
            via: "send-refused".to_owned(),
            keyword: None,
            provider_message_id: None,
            account_sid: None,
            occurred_at: messages::now_rfc3339(),
        };
        self.publish_record(topic, &format!("{}:consent", id.records), &event, delivery, "consent event").await
    }

    /// Publishes one record the worker writes about a message (its `what`,
    /// for the log); false when the bus did not take it, and the message
    /// then comes back after its visibility timeout.
    async fn publish_record(
        &self,
        topic: &str,
        key: &str,
        record: &impl serde::Serialize,
        delivery: &Delivery,
        what: &str,
    ) -> bool {
        match self.bus.publish(topic, Some(key), record_payload(record), Self::onward(delivery).as_ref()).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, "cannot publish the {what}; the message will come back");
                false
            }
        }
    }

    fn settle(&self, result: Result<(), crate::bus::BusError>, what: &str) {
        if let Err(e) = result {
            tracing::error!(error = %e, "bus {what} failed; the message will come back after its visibility timeout");
        }
    }
}

/// An egress message's id, and the name its outcome records (status events,
/// dead letter, consent) are de-duplicated by: the id itself, or, for a
/// message sent again from a dead letter, the id and that dead letter, so
/// that a second failure is recorded rather than taken for the first.
#[derive(Debug)]
struct Ident {
    id: String,
    records: String,
}

impl Ident {
    fn plain(id: String) -> Self {
        Self { records: id.clone(), id }
    }
}

/// Records how the attempt ended on the send's span: `outcome`, and for a
/// failure `error.class` and the provider's code as `error.type`.
fn record_outcome(outcome: Outcome, error: Option<&ProviderError>) {
    let span = tracing::Span::current();
    spans::attributes(&span, || {
        let mut attributes = vec![("outcome", outcome.as_str().into())];
        if let Some(error) = error {
            // The provider's error code, else the HTTP status: OpenTelemetry's `error.type`.
            let kind = match (error.code, error.http_status) {
                (Some(code), _) => code.to_string(),
                (None, Some(status)) => status.to_string(),
                (None, None) => "unknown".to_owned(),
            };
            attributes.push(("error.class", messages::error_class_name(error.class).into()));
            attributes.push(("error.type", kind.into()));
        }
        attributes
    });
    if outcome != Outcome::Accepted {
        spans::failed(&span);
    }
}

/// A record the worker publishes, as JSON.
fn record_payload(record: &impl serde::Serialize) -> bytes::Bytes {
    // These records have no map with non-string keys: serialising cannot fail.
    serde_json::to_vec(record).unwrap_or_default().into()
}

fn status_event(id: &str, sid: Option<String>, status: &str, error: Option<&ProviderError>) -> StatusEvent {
    StatusEvent {
        id: Some(id.to_owned()),
        provider_message_id: sid,
        status: status.to_owned(),
        error_code: error.and_then(|e| e.code),
        error_message: error.map(|e| e.message.clone()),
        error_class: error.map(|e| messages::error_class_name(e.class).to_owned()),
        previous_status: None,
        reconciliation: None,
        account_sid: None,
        occurred_at: messages::now_rfc3339(),
        attributes: Attributes::default(),
    }
}

/// A call into the connector that failed as a call: retried like a transient error.
fn call_error<E: std::fmt::Debug>(failure: &CallFailure<E>) -> ProviderError {
    let class = bindings::ErrorClass::Retryable;
    ProviderError { code: None, message: failure.to_string(), http_status: None, more_info: None, class }
}

fn describe(error: &ProviderError) -> String {
    match (error.code, error.http_status) {
        (Some(code), _) => format!("{code}: {}", error.message),
        (None, Some(status)) => format!("HTTP {status}: {}", error.message),
        (None, None) => error.message.clone(),
    }
}

/// Exponential backoff with jitter: `initial · 2^(attempt-1)`, capped, then
/// a random point in its upper half (so retries of a burst spread out).
pub fn backoff(config: &EgressConfig, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let full = config.initial_backoff.saturating_mul(1 << exponent).min(config.max_backoff);
    let half = full / 2;
    half + full.saturating_sub(half).mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let config = EgressConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..EgressConfig::default()
        };
        let mut firsts = std::collections::BTreeSet::new();
        for _ in 0..100 {
            let first = backoff(&config, 1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100), "{first:?}");
            firsts.insert(first);
            let third = backoff(&config, 3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400), "{third:?}");
            let late = backoff(&config, 30);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_secs(1), "{late:?}");
        }
        // Jitter: retries of many messages do not land together. Without it
        // every draw would be the same value.
        assert!(firsts.len() > 50, "only {} distinct delays in 100", firsts.len());
        let spread = *firsts.last().unwrap() - *firsts.first().unwrap();
        assert!(spread > Duration::from_millis(25), "spread {spread:?} over a 50 ms window");
    }
}
