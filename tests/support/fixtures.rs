//! Test data shared by every test and benchmark: Twilio's webhooks as Twilio
//! posts them, the empty TwiML answer, egress messages, free loopback ports.

use std::net::SocketAddr;

use ingress_egress::runtime::bindings::EgressMessage;

use crate::ACCOUNT_SID;

/// The service's answer to a message webhook: acknowledge, send no reply.
pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

/// The `MessageSid` of [`inbound_sms`].
pub const SMS_SID: &str = "SM1234567890abcdef1234567890abcdef";

/// An inbound SMS webhook as Twilio posts it (its order, its extra fields,
/// and one Twilio may add tomorrow), with [`SMS_SID`].
pub fn inbound_sms() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ToCountry", "US"),
        ("SmsMessageSid", SMS_SID),
        ("NumMedia", "0"),
        ("SmsSid", SMS_SID),
        ("SmsStatus", "received"),
        ("Body", "Hello from a phone"),
        ("To", "+15005550006"),
        ("NumSegments", "1"),
        ("MessageSid", SMS_SID),
        ("AccountSid", ACCOUNT_SID),
        ("From", "+14155550100"),
        ("ApiVersion", "2010-04-01"),
        ("FromCity", "SAN FRANCISCO"),
        ("AddedByTwilioNextYear", "kept"),
    ]
}

/// [`inbound_sms`] with another sid (in all three sid fields) and body: the
/// load generators' unique webhooks.
pub fn inbound_sms_with(sid: &str, body: &str) -> Vec<(&'static str, String)> {
    inbound_sms()
        .into_iter()
        .map(|(name, value)| match name {
            "MessageSid" | "SmsSid" | "SmsMessageSid" => (name, sid.to_owned()),
            "Body" => (name, body.to_owned()),
            _ => (name, value.to_owned()),
        })
        .collect()
}

/// The fewest parameters an inbound SMS webhook has.
pub fn minimal_sms(sid: &str, body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MessageSid", sid.to_owned()),
        ("AccountSid", ACCOUNT_SID.to_owned()),
        ("From", "+14155550100".to_owned()),
        ("To", "+15005550006".to_owned()),
        ("Body", body.to_owned()),
    ]
}

/// Owned parameters as the borrowed pairs the request helpers take.
pub fn borrowed<'a>(params: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    params.iter().map(|(name, value)| (*name, value.as_str())).collect()
}

/// An egress SMS (with one media URL) from a fixed number, as a connector's
/// `check` and `send` take it.
pub fn egress_sms(id: &str) -> EgressMessage {
    EgressMessage {
        id: id.into(),
        to: Some("+14155550100".into()),
        conversation: None,
        body: Some("Your code is 1234".into()),
        media_urls: vec!["https://example.com/a.png".into()],
        from: Some("+15005550006".into()),
        sender_pool: None,
        status_callback: None,
        attributes_json: None,
        template: None,
        send_at: None,
        validity_seconds: None,
        options: vec![],
        account: None,
    }
}

/// An egress message into a conversation (no recipient, no sender).
pub fn egress_to_conversation(id: &str, conversation: &str, body: &str) -> EgressMessage {
    EgressMessage {
        id: id.into(),
        to: None,
        conversation: Some(conversation.into()),
        body: Some(body.into()),
        media_urls: vec![],
        from: None,
        sender_pool: None,
        status_callback: None,
        attributes_json: None,
        template: None,
        send_at: None,
        validity_seconds: None,
        options: vec![],
        account: None,
    }
}

/// A loopback address with a port free right now.
///
/// Never the same port twice in one test binary: the port is free when
/// handed out, but a child process binds it later, and two tests running at
/// once could otherwise be handed the same one (the second child then fails
/// to bind, and the test talks to the first test's service).
pub fn free_addr() -> SocketAddr {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let mut handed_out = HANDED_OUT.lock().expect("lock");
        if !handed_out.contains(&addr.port()) {
            handed_out.push(addr.port());
            return addr;
        }
    }
}

/// A server `scripts/setup --test` installs in a virtual environment under
/// `tests/` (`venv_binary` is relative to it), or the path in `override_var`.
pub fn installed_server(override_var: &str, venv_binary: &str) -> std::path::PathBuf {
    if let Some(path) = std::env::var_os(override_var) {
        return std::path::PathBuf::from(path);
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(venv_binary);
    assert!(path.exists(), "{venv_binary} is not installed: run scripts/setup --test");
    path
}
