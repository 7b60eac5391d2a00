//! The rest of `Messages.create`, typed and checked before anything is sent:
//! a template (WhatsApp's Content API), scheduling, a validity period, and
//! Twilio's own options by name. Each becomes the form field Twilio's
//! OpenAPI names, so a wrong value is refused here with a reason, not by
//! Twilio with an error code.

use crate::platform::connector::types::EgressMessage;

/// Twilio's bounds on `ValidityPeriod`, in seconds.
const VALIDITY_SECONDS: std::ops::RangeInclusive<u32> = 1..=36_000;

/// The options a message may carry by name, and what each takes.
const OPTIONS: &[(&str, Kind)] = &[
    ("ShortenUrls", Kind::Bool),
    ("SmartEncoded", Kind::Bool),
    ("ProvideFeedback", Kind::Bool),
    ("MaxPrice", Kind::Price),
    ("Attempt", Kind::Count),
    ("PersistentAction", Kind::Text),
    ("ContentRetention", Kind::OneOf(&["retain", "discard"])),
    ("AddressRetention", Kind::OneOf(&["retain", "obfuscate"])),
    ("RiskCheck", Kind::OneOf(&["enable", "disable"])),
];

#[derive(Debug, Clone, Copy)]
enum Kind {
    Bool,
    Price,
    Count,
    Text,
    OneOf(&'static [&'static str]),
}

impl Kind {
    fn accepts(self, value: &str) -> bool {
        match self {
            Self::Bool => matches!(value, "true" | "false"),
            Self::Price => value.parse::<f64>().is_ok_and(|p| p.is_finite() && p > 0.0),
            Self::Count => value.parse::<u32>().is_ok_and(|n| n >= 1),
            Self::Text => !value.trim().is_empty() && value.len() <= 2048,
            Self::OneOf(values) => values.contains(&value),
        }
    }
}

/// Whether Twilio needs a Messaging Service to honour what `message` asks:
/// scheduling and link shortening are Messaging Service features.
pub fn needs_messaging_service(message: &EgressMessage) -> Option<&'static str> {
    if message.send_at.is_some() {
        return Some("send_at (scheduling)");
    }
    message.options.iter().any(|(name, value)| name == "ShortenUrls" && value == "true").then_some("ShortenUrls")
}

/// The form fields for the template, schedule, validity and options, or why
/// one of them is wrong.
pub fn form_fields(message: &EgressMessage) -> Result<Vec<(String, String)>, String> {
    let mut form = Vec::new();
    if let Some(template) = &message.template {
        form.push(("ContentSid".to_owned(), template_sid(&template.id)?));
        if let Some(variables) = &template.variables_json {
            form.push(("ContentVariables".to_owned(), content_variables(variables)?));
        }
    }
    if let Some(at) = &message.send_at {
        form.push(("SendAt".to_owned(), send_at(at)?));
        form.push(("ScheduleType".to_owned(), "fixed".to_owned()));
    }
    if let Some(seconds) = message.validity_seconds {
        if !VALIDITY_SECONDS.contains(&seconds) {
            return Err(format!("validity_seconds must be 1 to {} (Twilio's ValidityPeriod)", VALIDITY_SECONDS.end()));
        }
        form.push(("ValidityPeriod".to_owned(), seconds.to_string()));
    }
    for (name, value) in &message.options {
        let Some((_, kind)) = OPTIONS.iter().find(|(known, _)| known == name) else {
            let known: Vec<&str> = OPTIONS.iter().map(|(n, _)| *n).collect();
            return Err(format!("unknown option {name} (known: {})", known.join(", ")));
        };
        if !kind.accepts(value) {
            return Err(format!("option {name}: {value:?} is not a valid {kind:?}"));
        }
        if *name != "PersistentAction" && form.iter().any(|(field, _)| field == name) {
            return Err(format!("option {name} is given twice"));
        }
        form.push((name.clone(), value.clone()));
    }
    Ok(form)
}

/// A Content API template sid: `HX` and 32 hex digits.
fn template_sid(id: &str) -> Result<String, String> {
    if crate::shared::rest::is_sid(id, "HX") {
        Ok(id.to_owned())
    } else {
        Err(format!("template id {id:?} is not a Content sid (HX…)"))
    }
}

/// `ContentVariables`: a JSON object of placeholders (`"1"`, `"name"`) to
/// text, checked here because Twilio answers a malformed one only at send time.
fn content_variables(json: &str) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("template variables are not JSON: {e}"))?;
    let object = value.as_object().ok_or("template variables must be a JSON object")?;
    if let Some((name, _)) = object.iter().find(|(_, v)| !v.is_string()) {
        return Err(format!("template variable {name:?} must be text"));
    }
    Ok(value.to_string())
}

/// `SendAt`: an RFC 3339 time, sent to Twilio in UTC.
fn send_at(at: &str) -> Result<String, String> {
    let parsed = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("send_at {at:?} is not an RFC 3339 time: {e}"))?;
    let utc = parsed.to_offset(time::UtcOffset::UTC);
    utc.format(&time::format_description::well_known::Rfc3339).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::connector::types::Template;

    fn message() -> EgressMessage {
        let mut message = crate::egress::message::tests::sms("whatsapp:+14155550100", "");
        message.body = None;
        message.sender_pool = Some("MG00000000000000000000000000000001".into());
        message
    }

    #[test]
    fn a_template_schedule_and_options_become_twilios_fields() {
        let mut m = message();
        m.template = Some(Template {
            id: "HX0123456789abcdef0123456789abcdef".into(),
            variables_json: Some(r#"{"1": "Ada", "2": "12:00"}"#.into()),
        });
        m.send_at = Some("2026-12-01T10:00:00+01:00".into());
        m.validity_seconds = Some(600);
        m.options = vec![("ShortenUrls".into(), "true".into()), ("ContentRetention".into(), "discard".into())];
        let form = form_fields(&m).expect("valid");
        let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(get("ContentSid"), Some("HX0123456789abcdef0123456789abcdef"));
        assert_eq!(get("ContentVariables"), Some(r#"{"1":"Ada","2":"12:00"}"#));
        assert_eq!(get("SendAt"), Some("2026-12-01T09:00:00Z"));
        assert_eq!(get("ScheduleType"), Some("fixed"));
        assert_eq!(get("ValidityPeriod"), Some("600"));
        assert_eq!(get("ShortenUrls"), Some("true"));
        assert_eq!(needs_messaging_service(&m), Some("send_at (scheduling)"));
    }

    #[test]
    fn wrong_values_are_refused_with_the_reason() {
        type Change = Box<dyn Fn(&mut EgressMessage)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|m| m.template = Some(Template { id: "HXnope".into(), variables_json: None })), "Content sid"),
            (
                Box::new(|m| {
                    m.template = Some(Template {
                        id: "HX0123456789abcdef0123456789abcdef".into(),
                        variables_json: Some(r#"{"1": 5}"#.into()),
                    })
                }),
                "must be text",
            ),
            (Box::new(|m| m.send_at = Some("tomorrow".into())), "RFC 3339"),
            (Box::new(|m| m.validity_seconds = Some(36_001)), "validity_seconds"),
            (Box::new(|m| m.options = vec![("Bogus".into(), "1".into())]), "unknown option Bogus"),
            (Box::new(|m| m.options = vec![("MaxPrice".into(), "-1".into())]), "MaxPrice"),
            (Box::new(|m| m.options = vec![("AddressRetention".into(), "discard".into())]), "AddressRetention"),
        ];
        for (change, expected) in cases {
            let mut m = message();
            change(&mut m);
            let error = form_fields(&m).expect_err(expected);
            assert!(error.contains(expected), "{error}");
        }
    }
}
