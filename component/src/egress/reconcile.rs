//! Settling a send whose outcome is ambiguous (the request may have reached
//! Twilio: a timeout after sending, an answer cut short) before anything is
//! sent again. Sending blindly could charge and deliver twice; giving up could
//! lose the message.
//!
//! Twilio has no idempotency key, so the connector asks Twilio's Messages list
//! for the message (`To`, `From`, `DateSent>`) and matches it by sender, body
//! and time. Found: the message was sent. Not found after a bound: it is sent
//! once more. Pure: the queries, the matching and the record of where a
//! message stands; [`crate::egress::send`] does the calls.

use crate::egress::message::EgressSettings;
use crate::shared::rest::{PreparedRequest, Verb, twilio_count};

/// How far Twilio's clock may be from ours, and how long before our request
/// Twilio may have stamped the message (its `date_created` is in seconds).
pub const CLOCK_SKEW_SECONDS: u64 = 120;
/// The most pages of the list one lookup reads: the window is seconds long,
/// so more than this many messages between one pair in it is not a match we
/// could tell apart anyway.
pub const MOST_PAGES: usize = 3;
/// Messages per page of a lookup.
const PAGE_SIZE: u32 = 50;

/// Where an ambiguous message stands, kept in the state store so a lookup on
/// another host, or after a restart, goes on from there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    /// Unix milliseconds just before the ambiguous attempt was sent.
    pub started_ms: u64,
    pub stage: Stage,
    /// Once settled: the message Twilio has, and how it was settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<Settled>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Looking for the message in Twilio's list.
    Looking,
    /// Not found: being sent once more.
    Resending,
    /// Settled (found, or resent and taken): answered as it was, never sent again.
    Settled,
}

impl Stage {
    /// Its name on a trace.
    pub fn name(self) -> &'static str {
        match self {
            Self::Looking => "looking",
            Self::Resending => "resending",
            Self::Settled => "settled",
        }
    }
}

/// The message an ambiguous send was settled with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settled {
    pub sid: String,
    pub status: String,
    pub segments: Option<u32>,
    pub how: How,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum How {
    /// Twilio had it.
    Found,
    /// Twilio had none; it was sent once more and taken.
    Resent,
}

/// What one lookup in Twilio's list came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Found,
    /// Twilio answered, and has no such message.
    NotFound,
    /// Twilio did not answer (or not readably): nothing was learned.
    Failed,
}

/// What to do after a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Found: taken as sent.
    Settle,
    /// Look again later.
    Wait,
    /// Send it once more.
    Resend,
    /// Twilio's list never answered: the outcome stays unknown.
    GiveUp,
}

/// What to do at `now_ms`, `bound` seconds being how long to look before
/// resending. A resend needs Twilio to have said it has no such message: an
/// unanswered lookup proves nothing, so those go on to three bounds, then give up.
pub fn decide(pending: &Pending, now_ms: u64, bound: u64, lookup: Lookup) -> Decision {
    let looked_ms = now_ms.saturating_sub(pending.started_ms);
    let bound_ms = bound.saturating_mul(1000);
    match lookup {
        Lookup::Found => Decision::Settle,
        Lookup::NotFound if pending.stage == Stage::Resending || looked_ms >= bound_ms => Decision::Resend,
        Lookup::NotFound => Decision::Wait,
        Lookup::Failed if looked_ms < bound_ms.saturating_mul(3) => Decision::Wait,
        Lookup::Failed => Decision::GiveUp,
    }
}

/// How long to wait between lookups: a quarter of the bound, from 250 ms to 5 s.
pub fn lookup_interval_ms(bound: u64) -> u64 {
    (bound.saturating_mul(1000) / 4).clamp(250, 5000)
}

/// What identifies the message in Twilio's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    pub to: String,
    pub from: Option<String>,
    pub messaging_service: Option<String>,
    /// The body Twilio should hold; none when Twilio rewrites it (a
    /// template, shortened links, smart encoding).
    pub body: Option<String>,
    pub media: usize,
    /// Unix seconds: the message was created no earlier than this…
    pub earliest: u64,
    /// …and no later than this.
    pub latest: u64,
}

/// The lookup: `GET …/Messages.json?To=&From=&DateSent>=&PageSize=`. With
/// `sent_since` none, `DateSent>` is left out: a message still queued or
/// scheduled has no `date_sent` yet and that filter would hide it.
pub fn lookup(expect: &Expectation, sent_since: Option<u64>, settings: &EgressSettings) -> PreparedRequest {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("To", &expect.to);
    if let Some(from) = &expect.from {
        query.append_pair("From", from);
    }
    if let Some(since) = sent_since {
        query.append_pair("DateSent>", &rfc3339(since));
    }
    query.append_pair("PageSize", &PAGE_SIZE.to_string());
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages.json?{}",
        settings.api_base,
        crate::shared::rest::path_segment(&settings.account_sid),
        query.finish()
    );
    PreparedRequest {
        verb: Verb::Get,
        url,
        headers: crate::shared::rest::rest_headers(&settings.credentials),
        form: vec![],
    }
}

/// The next page of a lookup: Twilio's `next_page_uri`, on the same host.
pub fn next_page(uri: &str, settings: &EgressSettings) -> Option<PreparedRequest> {
    // Only a path: a full URL could send the credentials elsewhere.
    let path_ok = uri.starts_with('/') && !uri.starts_with("//") && !uri.contains(['\r', '\n', '#']);
    path_ok.then(|| PreparedRequest {
        verb: Verb::Get,
        url: format!("{}{uri}", settings.api_base),
        headers: crate::shared::rest::rest_headers(&settings.credentials),
        form: vec![],
    })
}

/// One page of Twilio's Messages list.
#[derive(Debug, serde::Deserialize)]
pub struct Page {
    #[serde(default)]
    pub messages: Vec<Listed>,
    #[serde(default)]
    pub next_page_uri: Option<String>,
}

/// One message of the list, as much of it as matching needs.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Listed {
    pub sid: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    /// A string in the Messages API (`"0"`).
    #[serde(default)]
    pub num_media: Option<serde_json::Value>,
    #[serde(default)]
    pub num_segments: Option<serde_json::Value>,
    /// RFC 2822, e.g. `Tue, 24 Nov 2026 10:00:00 +0000`.
    #[serde(default)]
    pub date_created: Option<String>,
    #[serde(default)]
    pub direction: Option<String>,
}

impl Listed {
    /// Whether this is the message `expect` describes.
    pub fn matches(&self, expect: &Expectation) -> bool {
        let created = self.date_created.as_deref().and_then(parse_rfc2822);
        let in_time = created.is_some_and(|at| at >= expect.earliest && at <= expect.latest);
        let outbound = self.direction.as_deref().is_none_or(|d| d.starts_with("outbound"));
        let sender = match (&expect.messaging_service, &expect.from) {
            (Some(service), _) => self.messaging_service_sid.as_ref() == Some(service),
            (None, from) => self.from.as_ref() == from.as_ref(),
        };
        // A Messaging Service may append its compliance text: the body starts with ours.
        let body = expect.body.as_ref().is_none_or(|ours| self.body.as_deref().unwrap_or_default().starts_with(ours));
        let media = twilio_count(self.num_media.as_ref()).is_none_or(|n| n == expect.media as u64);
        in_time && outbound && sender && body && media && self.to.as_ref() == Some(&expect.to)
    }

    pub fn segments(&self) -> Option<u32> {
        twilio_count(self.num_segments.as_ref()).and_then(|n| u32::try_from(n).ok())
    }
}

/// Unix seconds from an RFC 2822 date, as Twilio writes its dates.
pub fn parse_rfc2822(text: &str) -> Option<u64> {
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc2822).ok()?;
    u64::try_from(parsed.unix_timestamp()).ok()
}

/// Unix seconds as RFC 3339 in UTC, the way Twilio's libraries send a date-time filter.
pub fn rfc3339(unix_seconds: u64) -> String {
    let at = i64::try_from(unix_seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    at.format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expectation() -> Expectation {
        Expectation {
            to: "+14155550100".into(),
            from: Some("+15005550006".into()),
            messaging_service: None,
            body: Some("hello".into()),
            media: 0,
            earliest: 1_795_000_000,
            latest: 1_795_000_100,
        }
    }

    fn listed(json: &str) -> Listed {
        serde_json::from_str(json).unwrap()
    }

    const TWILIO_ROW: &str = r#"{"sid":"SM1","status":"sent","to":"+14155550100","from":"+15005550006",
        "messaging_service_sid":null,"body":"hello","num_media":"0","num_segments":"1",
        "date_created":"Wed, 18 Nov 2026 11:06:40 +0000","direction":"outbound-api"}"#;

    #[test]
    fn a_row_matches_by_recipient_sender_body_media_and_time() {
        assert_eq!(parse_rfc2822("Wed, 18 Nov 2026 11:06:40 +0000"), Some(1_795_000_000));
        let expect = expectation();
        let row = listed(TWILIO_ROW);
        assert!(row.matches(&expect));
        assert_eq!(row.segments(), Some(1));
        let differs = [
            ("+14155550100\"", "+14155550199\""),
            ("\"+15005550006", "\"+15005550007"),
            ("\"hello\"", "\"hullo\""),
            ("\"num_media\":\"0\"", "\"num_media\":\"1\""),
            ("11:06:40", "10:06:40"),
            ("outbound-api", "inbound"),
        ];
        for (from, to) in differs {
            assert!(!listed(&TWILIO_ROW.replacen(from, to, 1)).matches(&expect), "{to} still matched");
        }
        // A Messaging Service's appended compliance text still matches.
        assert!(listed(&TWILIO_ROW.replace("\"hello\"", "\"hello Reply STOP to opt out\"")).matches(&expect));
        // A rewritten body is not compared; the sender is the service when there is one.
        let mut by_service = Expectation { body: None, messaging_service: Some("MG1".into()), from: None, ..expect };
        let service_row = TWILIO_ROW.replace("\"messaging_service_sid\":null", "\"messaging_service_sid\":\"MG1\"");
        assert!(listed(&service_row.replace("\"hello\"", "\"rendered\"")).matches(&by_service));
        by_service.messaging_service = Some("MG2".into());
        assert!(!listed(&service_row).matches(&by_service));
    }

    #[test]
    fn the_lookup_is_the_list_query_twilio_documents() {
        let settings = crate::egress::message::tests::settings();
        let request = lookup(&expectation(), Some(1_795_000_000 - CLOCK_SKEW_SECONDS), &settings);
        assert_eq!(request.verb, Verb::Get);
        assert_eq!(
            request.url,
            "https://api.twilio.com/2010-04-01/Accounts/AC00000000000000000000000000000001/Messages.json\
             ?To=%2B14155550100&From=%2B15005550006&DateSent%3E=2026-11-18T11%3A04%3A40Z&PageSize=50"
        );
        let unsent = lookup(&Expectation { from: None, ..expectation() }, None, &settings);
        assert!(unsent.url.ends_with("Messages.json?To=%2B14155550100&PageSize=50"), "{}", unsent.url);
        // Paging stays on Twilio's host.
        assert!(next_page("/2010-04-01/Accounts/AC1/Messages.json?Page=1", &settings).is_some());
        for elsewhere in ["https://evil.example/x", "//evil.example/x", "/x\r\nHost: evil"] {
            assert!(next_page(elsewhere, &settings).is_none(), "{elsewhere}");
        }
    }

    #[test]
    fn looks_within_the_bound_then_resends_only_when_twilio_said_it_has_none() {
        let pending = |stage| Pending { started_ms: 1_000_000, stage, settled: None };
        let looking = pending(Stage::Looking);
        assert_eq!(decide(&looking, 1_005_000, 20, Lookup::Found), Decision::Settle);
        assert_eq!(decide(&looking, 1_019_999, 20, Lookup::NotFound), Decision::Wait);
        assert_eq!(decide(&looking, 1_020_000, 20, Lookup::NotFound), Decision::Resend);
        // Twilio did not answer: keep looking a while longer, then give up rather than guess.
        assert_eq!(decide(&looking, 1_030_000, 20, Lookup::Failed), Decision::Wait);
        assert_eq!(decide(&looking, 1_060_000, 20, Lookup::Failed), Decision::GiveUp);
        // A resend that did not go through (a 5xx) goes on once Twilio again says it has none.
        assert_eq!(decide(&pending(Stage::Resending), 1_001_000, 20, Lookup::NotFound), Decision::Resend);
        assert_eq!(decide(&pending(Stage::Resending), 1_001_000, 20, Lookup::Failed), Decision::Wait);
        assert_eq!((lookup_interval_ms(20), lookup_interval_ms(0), lookup_interval_ms(600)), (5000, 250, 5000));
        let stored = serde_json::to_string(&pending(Stage::Resending)).unwrap();
        assert_eq!(stored, r#"{"started_ms":1000000,"stage":"resending"}"#);
    }
}
