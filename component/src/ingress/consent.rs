//! Consent: a recipient's STOP, START or HELP, and the sends Twilio refused
//! because of one, as consent events scoped to the sender (a number or a
//! Messaging Service) they concern. Pure: the caller supplies the time.

use crate::ingress::envelope::Params;
use crate::platform::connector::types::{ConsentAction, ConsentEvent};

/// Twilio's code for a send to a recipient who replied STOP.
pub const OPTED_OUT_CODE: u32 = 21610;

/// Twilio's default keywords when Advanced Opt-Out is off (whole message,
/// any case): what each one means.
const KEYWORDS: &[(&str, ConsentAction)] = &[
    ("STOP", ConsentAction::OptedOut),
    ("STOPALL", ConsentAction::OptedOut),
    ("UNSUBSCRIBE", ConsentAction::OptedOut),
    ("CANCEL", ConsentAction::OptedOut),
    ("END", ConsentAction::OptedOut),
    ("QUIT", ConsentAction::OptedOut),
    ("START", ConsentAction::OptedIn),
    ("YES", ConsentAction::OptedIn),
    ("UNSTOP", ConsentAction::OptedIn),
    ("HELP", ConsentAction::Help),
    ("INFO", ConsentAction::Help),
];

/// The sender a message concerns: its Messaging Service when it went
/// through one (Advanced Opt-Out is per service), else the number.
fn sender(params: Params<'_>, number_field: &str) -> Option<String> {
    params.get("MessagingServiceSid").or_else(|| params.get(number_field)).map(str::to_owned)
}

/// The consent an inbound message carries, if any. With Advanced Opt-Out,
/// Twilio says so in `OptOutType` (STOP, START, HELP), whatever the words;
/// without it, the message's whole text is one of Twilio's default keywords.
pub fn from_inbound(params: Params<'_>, occurred_at: &str) -> Option<ConsentEvent> {
    let (action, via, keyword) = match params.get("OptOutType") {
        Some(kind) => {
            let action = match kind.to_ascii_uppercase().as_str() {
                "STOP" => ConsentAction::OptedOut,
                "START" => ConsentAction::OptedIn,
                "HELP" => ConsentAction::Help,
                _ => return None,
            };
            (action, "advanced-opt-out", params.get("Body").map(|b| b.trim().to_owned()))
        }
        None => {
            let word = params.get("Body")?.trim().to_ascii_uppercase();
            let action = KEYWORDS.iter().find(|(keyword, _)| *keyword == word)?.1;
            (action, "keyword", Some(word))
        }
    };
    Some(ConsentEvent {
        user: params.get("From")?.to_owned(),
        sender: sender(params, "To")?,
        action,
        via: via.to_owned(),
        keyword,
        provider_message_id: params.get("MessageSid").map(str::to_owned),
        account: params.get("AccountSid").map(str::to_owned),
        occurred_at: occurred_at.to_owned(),
    })
}

/// A status callback saying a send was refused because the recipient opted
/// out (21610): the recipient is `To`, the sender the message's own.
pub fn from_status_callback(params: Params<'_>, occurred_at: &str) -> Option<ConsentEvent> {
    if params.get("ErrorCode")?.trim() != OPTED_OUT_CODE.to_string() {
        return None;
    }
    Some(ConsentEvent {
        user: params.get("To")?.to_owned(),
        sender: sender(params, "From")?,
        action: ConsentAction::OptedOut,
        via: "status-callback".to_owned(),
        keyword: None,
        provider_message_id: params.get("MessageSid").map(str::to_owned),
        account: params.get("AccountSid").map(str::to_owned),
        occurred_at: occurred_at.to_owned(),
    })
}

/// The key that makes a repeated webhook's consent event a duplicate.
pub fn dedup_key(event: &ConsentEvent) -> String {
    let message = event.provider_message_id.as_deref().unwrap_or_default();
    format!("{message}:consent:{}:{}", event.user, event.sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::envelope::Param;

    fn params<'a>(list: &[(&'a str, &'a str)]) -> Vec<Param<'a>> {
        list.iter().map(|&(k, v)| (k.into(), v.into())).collect()
    }

    const INBOUND: [(&str, &str); 4] =
        [("MessageSid", "SM1"), ("From", "+14155550100"), ("To", "+15005550006"), ("AccountSid", "AC1")];

    fn inbound(extra: &[(&str, &str)]) -> Option<ConsentEvent> {
        let mut list = params(&INBOUND);
        list.extend(params(extra));
        from_inbound(Params(&list), "now")
    }

    #[test]
    fn default_keywords_are_the_whole_message_in_any_case() {
        let stop = inbound(&[("Body", " stop ")]).expect("STOP");
        assert_eq!(
            (stop.action, stop.via.as_str(), stop.keyword.as_deref()),
            (ConsentAction::OptedOut, "keyword", Some("STOP"))
        );
        assert_eq!((stop.user.as_str(), stop.sender.as_str()), ("+14155550100", "+15005550006"));
        assert_eq!(inbound(&[("Body", "Unstop")]).expect("UNSTOP").action, ConsentAction::OptedIn);
        assert_eq!(inbound(&[("Body", "help")]).expect("HELP").action, ConsentAction::Help);
        assert!(inbound(&[("Body", "please stop texting me")]).is_none(), "only the whole message is a keyword");
        assert!(inbound(&[("Body", "hello")]).is_none());
    }

    #[test]
    fn advanced_opt_out_says_so_itself_and_scopes_to_the_messaging_service() {
        let event =
            inbound(&[("Body", "arrêt"), ("OptOutType", "STOP"), ("MessagingServiceSid", "MG1")]).expect("STOP");
        assert_eq!((event.action, event.via.as_str()), (ConsentAction::OptedOut, "advanced-opt-out"));
        assert_eq!(event.sender, "MG1", "scoped to the service, not every sender");
        // With Advanced Opt-Out on, a plain word Twilio did not flag is not consent.
        assert!(inbound(&[("Body", "STOP"), ("OptOutType", "OTHER")]).is_none());
    }

    #[test]
    fn a_21610_callback_is_an_opt_out_of_the_messages_sender() {
        let list = params(&[
            ("MessageSid", "SM9"),
            ("MessageStatus", "failed"),
            ("ErrorCode", "21610"),
            ("To", "+14155550100"),
            ("From", "+15005550006"),
        ]);
        let event = from_status_callback(Params(&list), "now").expect("an opt-out");
        assert_eq!(
            (event.user.as_str(), event.sender.as_str(), event.action),
            ("+14155550100", "+15005550006", ConsentAction::OptedOut)
        );
        let other = params(&[("MessageSid", "SM9"), ("ErrorCode", "30003"), ("To", "+1"), ("From", "+2")]);
        assert!(from_status_callback(Params(&other), "now").is_none());
    }
}
