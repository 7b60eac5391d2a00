//! The spans of one call into a connector: the call's own (the webhook's or
//! the send's, made by the caller), the spans the connector opens through the
//! WIT `trace` interface, and the host's spans of what the connector does
//! meanwhile (outbound requests, publishes), which are children of the
//! innermost span open.
//!
//! Attributes a connector gives are bounded (key shape, value length, count):
//! a trace leaves the process, and a connector must not grow it without bound.

use std::sync::Arc;

use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::grants::Grants;
use crate::telemetry::spans;

/// Attributes a connector may set on one span.
const MAX_ATTRIBUTES: u32 = 16;
/// The longest attribute value, in bytes.
const MAX_VALUE: usize = 256;

/// A span the connector opened: the WIT `trace.span` resource.
#[derive(Debug)]
pub struct GuestSpan {
    span: tracing::Span,
    attributes: u32,
}

/// The open spans of the call under way.
#[derive(Debug)]
pub struct CallTrace {
    /// The caller's span, current when the call began.
    call: tracing::Span,
    call_attributes: u32,
    /// Spans the connector opened and has not dropped, by resource id, oldest first.
    open: Vec<(u32, tracing::Span)>,
}

impl Default for CallTrace {
    fn default() -> Self {
        Self { call: tracing::Span::none(), call_attributes: 0, open: Vec::new() }
    }
}

impl CallTrace {
    /// A new call begins in the caller's current span (kept only while
    /// traces are exported: nothing else reads it); what an earlier call on
    /// this instance left open is forgotten.
    pub fn begin(&mut self) {
        let call = if spans::exporting() { tracing::Span::current() } else { tracing::Span::none() };
        *self = Self { call, ..Self::default() };
    }

    /// Where the next span of this call goes: the innermost open one.
    pub fn innermost(&self) -> &tracing::Span {
        self.open.last().map_or(&self.call, |(_, span)| span)
    }

    /// Opens the connector's span `name` inside the innermost one.
    /// Made only in a sampled trace.
    pub fn open(&mut self, connector: &str, name: &str) -> GuestSpan {
        if !spans::sampled(self.innermost()) {
            return GuestSpan { span: tracing::Span::none(), attributes: 0 };
        }
        let name = if valid_name(name) { name } else { "connector-span" };
        let span = tracing::info_span!(
            parent: self.innermost(),
            "connector",
            connector,
            otel.name = tracing::field::Empty,
            otel.kind = tracing::field::Empty,
        );
        spans::describe(&span, spans::Kind::Internal, || name.to_owned(), Vec::new);
        GuestSpan { span, attributes: 0 }
    }

    /// Remembers `span` (resource `rep`) as open.
    pub fn opened(&mut self, rep: u32, span: tracing::Span) {
        self.open.push((rep, span));
    }

    /// Forgets span `rep`: the connector dropped it, so it ends.
    pub fn closed(&mut self, rep: u32) {
        self.open.retain(|(open, _)| *open != rep);
    }

    /// Sets an attribute on the call's own span, within the bounds.
    pub fn set_call_attribute(&mut self, grants: &Grants, key: &str, value: &str) {
        if spans::sampled(&self.call) && admit(grants, &mut self.call_attributes, key, value) {
            self.call.set_attribute(key.to_owned(), value.to_owned());
        }
    }
}

impl GuestSpan {
    /// The span itself, for [`CallTrace::opened`].
    pub fn clone_span(&self) -> tracing::Span {
        self.span.clone()
    }

    /// Sets an attribute on this span, within the bounds.
    pub fn set_attribute(&mut self, grants: &Arc<Grants>, key: &str, value: &str) {
        if spans::sampled(&self.span) && admit(grants, &mut self.attributes, key, value) {
            self.span.set_attribute(key.to_owned(), value.to_owned());
        }
    }
}

/// Whether an attribute may go on a span that already has `count` of the
/// connector's. Its value is the connector's to keep clean: the host cannot
/// tell a secret from an identifier (an account sid is granted as a secret).
fn admit(grants: &Grants, count: &mut u32, key: &str, value: &str) -> bool {
    if !valid_key(key) || value.len() > MAX_VALUE || *count >= MAX_ATTRIBUTES {
        tracing::debug!(connector = %grants.connector, key, "span attribute dropped: malformed or one too many");
        return false;
    }
    *count += 1;
    true
}

/// OpenTelemetry's attribute key shape: lowercase words joined by dots or underscores.
fn valid_key(key: &str) -> bool {
    (1..=64).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// A span name as the WIT says: lowercase letters, digits, dots and dashes, at most 48.
fn valid_name(name: &str) -> bool {
    (1..=48).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-".contains(&b))
}

/// A URL path as a span may show it: a phone number (7 or more digits that
/// begin a segment or follow `+`, `%2B` or `:`) becomes `{number}`, so
/// `/PhoneNumbers/+14155550100` shows none; the digits inside a sid
/// (`AC0123…`) stay.
pub fn masked_path(path: &str) -> String {
    let mut masked = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        let (before, from_digits) = rest.split_at(start);
        let run = from_digits.bytes().take_while(u8::is_ascii_digit).count();
        masked.push_str(before);
        let begins_number = [b'/', b'+', b':'].contains(&masked.as_bytes().last().copied().unwrap_or(b'/'))
            || masked.to_ascii_uppercase().ends_with("%2B");
        if run >= 7 && begins_number {
            masked.push_str("{number}");
        } else {
            masked.push_str(&from_digits[..run]);
        }
        rest = &from_digits[run..];
    }
    masked.push_str(rest);
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_leave_paths_and_api_versions_stay() {
        assert_eq!(
            masked_path("/2010-04-01/Accounts/ACx/IncomingPhoneNumbers/+14155550100.json"),
            "/2010-04-01/Accounts/ACx/IncomingPhoneNumbers/+{number}.json"
        );
        assert_eq!(
            masked_path("/v1/Services/MG1/PhoneNumbers/%2B4915112345678"),
            "/v1/Services/MG1/PhoneNumbers/%2B{number}"
        );
        assert_eq!(masked_path("/v2/Media/ME123"), "/v2/Media/ME123");
        let sids =
            "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages/MM00000000000000000000000000000007";
        assert_eq!(masked_path(sids), sids, "a sid's digits are no phone number");
        assert_eq!(masked_path("/Lookups/whatsapp:+14155550100"), "/Lookups/whatsapp:+{number}");
        assert_eq!(masked_path("/Numbers/14155550100/x"), "/Numbers/{number}/x");
    }

    #[test]
    fn keys_and_names_have_their_shape() {
        assert!(valid_key("connector.account_id") && valid_key("messaging.message.id"));
        assert!(!valid_key("") && !valid_key("Account") && !valid_key("a b") && !valid_key(&"a".repeat(65)));
        assert!(valid_name("reconcile") && valid_name("media.fetch"));
        assert!(!valid_name("Media Fetch") && !valid_name(&"a".repeat(49)));
    }
}
