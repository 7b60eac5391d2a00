//! Signed example webhooks, shaped as Twilio sends them, for local testing.

use crate::signature;

/// A webhook ready to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simulated {
    pub path_with_query: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// What a simulated webhook is signed and addressed with.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    pub account_sid: &'a str,
    pub auth_token: &'a str,
    pub chat_service_sid: Option<&'a str>,
    /// The URL Twilio would call: the public base when configured, else where it is posted.
    pub base_url: &'a str,
    /// 32 random hex digits, for fresh sids.
    pub random_hex: fn() -> String,
}

fn option<'a>(options: &'a [(String, String)], name: &str) -> Option<&'a str> {
    options.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn options_all<'a>(options: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
    options.iter().filter(move |(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A content type for a media URL, from its extension.
fn content_type(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    let ext = lower.rsplit('.').next().unwrap_or_default();
    match ext {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "mp4" => "video/mp4",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// Builds a signed webhook of `kind`: `sms`, `status` or `conversation`.
pub fn build(kind: &str, options: &[(String, String)], id: &Identity<'_>) -> Result<Simulated, String> {
    let sid = |prefix: &str| format!("{prefix}{}", (id.random_hex)());
    let from = option(options, "from");
    let to = option(options, "to");
    let body = option(options, "body").unwrap_or("Hello from ingress-egress simulate");
    let mut params: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: &str| params.push((k.to_owned(), v.to_owned()));
    let path_with_query = match kind {
        "sms" => {
            let message_sid = option(options, "message-sid").map_or_else(|| sid("SM"), str::to_owned);
            let media: Vec<&str> = options_all(options, "media-url").collect();
            push("ToCountry", "US");
            push("SmsMessageSid", &message_sid);
            push("NumMedia", &media.len().to_string());
            push("SmsSid", &message_sid);
            push("SmsStatus", "received");
            push("Body", body);
            push("To", to.unwrap_or("+15005550006"));
            push("NumSegments", &crate::segments::count(body).segments.to_string());
            push("MessageSid", &message_sid);
            push("AccountSid", id.account_sid);
            push("From", from.unwrap_or("+14155550100"));
            push("ApiVersion", "2010-04-01");
            for (index, url) in media.iter().enumerate() {
                push(&format!("MediaUrl{index}"), url);
                push(&format!("MediaContentType{index}"), content_type(url));
            }
            "/twilio/messaging".to_owned()
        }
        "status" => {
            let message_sid = option(options, "message-sid").map_or_else(|| sid("SM"), str::to_owned);
            push("SmsSid", &message_sid);
            push("SmsStatus", option(options, "status").unwrap_or("delivered"));
            push("MessageStatus", option(options, "status").unwrap_or("delivered"));
            push("To", to.unwrap_or("+14155550100"));
            push("MessageSid", &message_sid);
            push("AccountSid", id.account_sid);
            push("From", from.unwrap_or("+15005550006"));
            push("ApiVersion", "2010-04-01");
            if let Some(code) = option(options, "error-code") {
                push("ErrorCode", code);
            }
            match option(options, "egress-id") {
                Some(egress_id) => {
                    let encoded: String = form_urlencoded::byte_serialize(egress_id.as_bytes()).collect();
                    format!("/twilio/status?egress_id={encoded}")
                }
                None => "/twilio/status".to_owned(),
            }
        }
        "conversation" => {
            let author = from.unwrap_or("alice");
            let service = id.chat_service_sid.map_or_else(|| sid("IS"), str::to_owned);
            push("AccountSid", id.account_sid);
            push("EventType", "onMessageAdded");
            push("Source", "SDK");
            push("ClientIdentity", author);
            push("ConversationSid", &option(options, "conversation").map_or_else(|| sid("CH"), str::to_owned));
            push("MessageSid", &option(options, "message-sid").map_or_else(|| sid("IM"), str::to_owned));
            push("MessagingServiceSid", &sid("MG"));
            push("ChatServiceSid", &service);
            push("ParticipantSid", &sid("MB"));
            push("Index", "0");
            push("DateCreated", "2026-01-01T00:00:00.000Z");
            push("Body", body);
            push("Author", author);
            push("Attributes", "{}");
            push("RetryCount", "0");
            "/twilio/conversations".to_owned()
        }
        other => return Err(format!("unknown webhook kind {other:?} (sms, status, conversation)")),
    };
    let url = format!("{}{path_with_query}", id.base_url.trim_end_matches('/'));
    let signature = signature::compute(id.auth_token.as_bytes(), &url, &params);
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&params).finish();
    Ok(Simulated {
        path_with_query,
        headers: vec![
            ("content-type".to_owned(), "application/x-www-form-urlencoded".to_owned()),
            ("x-twilio-signature".to_owned(), signature),
            ("user-agent".to_owned(), "TwilioProxy/1.1".to_owned()),
        ],
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{SignedContent, validate};

    #[test]
    fn simulated_webhooks_verify() {
        let random: fn() -> String = || "0123456789abcdef0123456789abcdef".to_owned();
        let id = Identity {
            account_sid: "AC0123456789abcdef0123456789abcdef",
            auth_token: "tok",
            chat_service_sid: None,
            base_url: "http://127.0.0.1:8080/",
            random_hex: random,
        };
        for kind in ["sms", "status", "conversation"] {
            let options = vec![
                ("media-url".to_owned(), "https://e.com/a.png".to_owned()),
                ("egress-id".to_owned(), "e 1".to_owned()),
            ];
            let sim = build(kind, &options, &id).unwrap();
            let params: Vec<(String, String)> = form_urlencoded::parse(sim.body.as_bytes()).into_owned().collect();
            let url = format!("http://127.0.0.1:8080{}", sim.path_with_query);
            let sig = sim.headers.iter().find(|(k, _)| k == "x-twilio-signature").map(|(_, v)| v.as_str());
            assert_eq!(validate(b"tok", &url, SignedContent::Form(&params), sig), Ok(()), "{kind}");
        }
        assert!(build("fax", &[], &id).is_err());
    }
}
