//! Dead letters sent again: once an operator fixed what made sends fail (a
//! wrong sender, a suspended number, an expired key), each chosen dead
//! letter's egress message goes back on its connector's egress topic.
//!
//! - It keeps its `id`, so status events name the message the platform knows.
//! - It carries `redriven_from` (`TOPIC/SEQ` of its dead letter): the worker
//!   then records a second failure as such instead of taking it for the
//!   first (their de-duplication keys differ).
//! - Once: the publish's de-duplication key names the dead letter, and a
//!   marker in the bus's state, written after the publish, remembers it for
//!   the bus's retention. A repeated redrive sends nothing again; one cut
//!   off between the publish and the marker is caught by the key.
//! - A recipient who opted out is never written to again: those dead
//!   letters are never sent again, whatever the filter.
//! - One dead-lettered as `unknown` may have reached the provider: it is
//!   sent again only when asked (`include_unknown`), as a recipient may then
//!   get it twice.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::bus::{Bus, BusError};
use crate::config::ConnectorConfig;
use crate::messages::{DeadLetter, EgressMessage};
use crate::telemetry::TraceContext;

/// The state bucket of redrive markers (no connector is named so: names
/// start with a letter).
const MARKERS: &str = "_redrive";
/// Dead letters read from the bus at a time.
const PAGE: usize = 500;

/// Which dead letters to send again: the JSON body of
/// `POST /v1/deadletters/redrive`, and the arguments of `ingress-egress redrive`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// The dead-letter topic, e.g. deadletter.twilio (a connector's `deadletter` topic).
    #[arg(long)]
    pub topic: String,
    /// Only those dead-lettered at or after this time (RFC 3339, e.g. 2026-12-07T10:00:00Z).
    #[serde(default)]
    #[arg(long)]
    pub since: Option<String>,
    /// Only those of this error class (invalid-request, unreachable, …; see the dead letter's error_class).
    #[serde(default)]
    #[arg(long)]
    pub error_class: Option<String>,
    /// Count what would be sent again; send nothing.
    #[serde(default)]
    #[arg(long)]
    pub dry_run: bool,
    /// Also those dead-lettered as unknown (the provider may have them already: a recipient may get one twice).
    #[serde(default)]
    #[arg(long)]
    pub include_unknown: bool,
}

/// What a redrive did, by dead letter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedriveReport {
    /// Dead letters read.
    pub examined: u64,
    /// Sent again (with `dry_run`: would be).
    pub redriven: u64,
    /// Sent again by an earlier redrive: not again.
    pub already_redriven: u64,
    /// The recipient opted out: never sent again.
    pub opted_out: u64,
    /// Dead-lettered as `unknown` (maybe sent), left without `include_unknown`.
    pub maybe_sent: u64,
    /// Outside `since` or `error_class`.
    pub not_matching: u64,
    /// Not a dead letter with an egress message in it (left as they are).
    pub unreadable: u64,
    /// Whether nothing was sent.
    pub dry_run: bool,
}

/// Why a redrive could not run (what it did until then is not undone; run
/// it again to finish: nothing is sent twice).
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    /// The request names no dead-letter topic of a connector, or a bad time.
    #[error("{0}")]
    Invalid(String),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// The egress topic of the connector whose dead letters `topic` holds.
pub fn egress_topic_of<'a>(connectors: &'a [ConnectorConfig], topic: &str) -> Result<&'a str, RedriveError> {
    let owner = connectors
        .iter()
        .find(|c| c.topics.get(super::DEADLETTER_STREAM).is_some_and(|t| t == topic))
        .ok_or_else(|| RedriveError::Invalid(format!("{topic} is no connector's dead-letter topic")))?;
    owner
        .topics
        .get(super::EGRESS_STREAM)
        .map(String::as_str)
        .ok_or_else(|| RedriveError::Invalid(format!("connector {} has no egress topic", owner.name)))
}

/// Sends the dead letters `request` chooses back to `egress_topic`.
pub async fn redrive(
    bus: &dyn Bus,
    egress_topic: &str,
    request: &RedriveRequest,
) -> Result<RedriveReport, RedriveError> {
    let since = request.since.as_deref().map(parse_time).transpose()?;
    let mut report = RedriveReport { dry_run: request.dry_run, ..RedriveReport::default() };
    let mut after = 0;
    loop {
        let page = bus.read(&request.topic, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for stored in page {
            report.examined += 1;
            let marker = format!("{}/{}", request.topic, stored.seq);
            match choose(&stored.payload, request, since) {
                Choice::Send(message) => {
                    if redriven_before(bus, &marker).await? {
                        report.already_redriven += 1;
                        continue;
                    }
                    if !request.dry_run {
                        send_again(bus, egress_topic, *message, stored.trace.as_ref(), &marker).await?;
                        crate::telemetry::metrics::redriven(&request.topic);
                    }
                    report.redriven += 1;
                }
                Choice::OptedOut => report.opted_out += 1,
                Choice::MaybeSent => report.maybe_sent += 1,
                Choice::NotMatching => report.not_matching += 1,
                Choice::Unreadable => report.unreadable += 1,
            }
        }
    }
    Ok(report)
}

/// What to do with one dead letter.
enum Choice {
    Send(Box<EgressMessage>),
    OptedOut,
    MaybeSent,
    NotMatching,
    Unreadable,
}

fn choose(payload: &[u8], request: &RedriveRequest, since: Option<OffsetDateTime>) -> Choice {
    let Ok(letter) = serde_json::from_slice::<DeadLetter>(payload) else { return Choice::Unreadable };
    if letter.status == "opted-out" || letter.error_class.as_deref() == Some("opted-out") {
        return Choice::OptedOut;
    }
    if letter.status == "unknown" && !request.include_unknown {
        return Choice::MaybeSent;
    }
    let in_time = since.is_none_or(|since| parse_time(&letter.dead_lettered_at).is_ok_and(|at| at >= since));
    let in_class = request.error_class.as_ref().is_none_or(|class| letter.error_class.as_ref() == Some(class));
    if !(in_time && in_class) {
        return Choice::NotMatching;
    }
    match serde_json::from_value::<EgressMessage>(letter.message) {
        Ok(mut message) => {
            message.id = Some(letter.id);
            Choice::Send(Box::new(message))
        }
        Err(_) => Choice::Unreadable,
    }
}

async fn redriven_before(bus: &dyn Bus, marker: &str) -> Result<bool, BusError> {
    Ok(bus.state_get(MARKERS, marker).await?.is_some())
}

/// Publishes `message` again, in the trace its dead letter was published in,
/// then marks its dead letter `marker` as sent again.
async fn send_again(
    bus: &dyn Bus,
    egress_topic: &str,
    mut message: EgressMessage,
    trace: Option<&TraceContext>,
    marker: &str,
) -> Result<(), RedriveError> {
    message.redriven_from = Some(marker.to_owned());
    let key = message.record_key(message.id.as_deref().unwrap_or_default());
    let payload = serde_json::to_vec(&message).map_err(|e| RedriveError::Invalid(e.to_string()))?;
    bus.publish(egress_topic, Some(&key), payload.into(), trace).await?;
    // Written, or already there (another redrive got here first): marked either way.
    bus.state_put(MARKERS, marker, crate::messages::now_rfc3339(), None).await?;
    Ok(())
}

fn parse_time(text: &str) -> Result<OffsetDateTime, RedriveError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| RedriveError::Invalid(format!("{text:?} is not an RFC 3339 time (2026-12-07T10:00:00Z)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(status: &str, class: &str, at: &str) -> Vec<u8> {
        serde_json::json!({
            "id": "m-1", "status": status, "reason": "r", "error_code": null, "error_message": null,
            "error_class": class, "attempts": 1, "dead_lettered_at": at,
            "message": {"id": "m-1", "to": "+14155550100", "body": "hi"}
        })
        .to_string()
        .into_bytes()
    }

    fn request(since: Option<&str>, class: Option<&str>, include_unknown: bool) -> RedriveRequest {
        RedriveRequest {
            topic: "deadletter.x".into(),
            since: since.map(str::to_owned),
            error_class: class.map(str::to_owned),
            dry_run: false,
            include_unknown,
        }
    }

    fn chosen(payload: &[u8], request: &RedriveRequest) -> &'static str {
        let since = request.since.as_deref().map(|t| parse_time(t).unwrap());
        match choose(payload, request, since) {
            Choice::Send(message) => {
                assert_eq!(message.id.as_deref(), Some("m-1"));
                "send"
            }
            Choice::OptedOut => "opted-out",
            Choice::MaybeSent => "maybe-sent",
            Choice::NotMatching => "not-matching",
            Choice::Unreadable => "unreadable",
        }
    }

    #[test]
    fn opted_out_never_unknown_only_when_asked_and_the_filters_hold() {
        let at = "2026-12-07T10:00:00.000Z";
        let all = request(None, None, false);
        assert_eq!(chosen(&letter("failed", "invalid-request", at), &all), "send");
        assert_eq!(chosen(&letter("opted-out", "opted-out", at), &request(None, None, true)), "opted-out");
        assert_eq!(chosen(&letter("failed", "opted-out", at), &all), "opted-out");
        assert_eq!(chosen(&letter("unknown", "unknown", at), &all), "maybe-sent");
        assert_eq!(chosen(&letter("unknown", "unknown", at), &request(None, None, true)), "send");
        let later = request(Some("2026-12-07T10:00:01Z"), None, false);
        assert_eq!(chosen(&letter("failed", "invalid-request", at), &later), "not-matching");
        let same = request(Some("2026-12-07T10:00:00Z"), Some("invalid-request"), false);
        assert_eq!(chosen(&letter("failed", "invalid-request", at), &same), "send");
        let other = request(None, Some("unreachable"), false);
        assert_eq!(chosen(&letter("failed", "invalid-request", at), &other), "not-matching");
        assert_eq!(chosen(b"not json", &all), "unreadable");
        let text_message = br#"{"id":"m","status":"failed","reason":"r","error_code":null,"error_message":null,"error_class":null,"attempts":1,"dead_lettered_at":"x","message":"garbled"}"#;
        assert_eq!(chosen(text_message, &all), "unreadable");
        assert!(parse_time("yesterday").unwrap_err().to_string().contains("RFC 3339"));
    }
}
