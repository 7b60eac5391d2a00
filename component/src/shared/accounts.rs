//! The Twilio accounts the connector serves, and what each needs.
//!
//! - **The default account**: the `TWILIO_*` secrets and settings. They are
//!   fixed for an instance's life (the host grants them at load), so they are
//!   read once per instance, not per request.
//! - **Configured accounts**: one credential set each, named by its Account
//!   SID (`TWILIO_ACCOUNTS_DIR`); one host call reads the whole set.
//! - **Subaccounts of the default account** (`TWILIO_SUBACCOUNTS=true`): any
//!   other well-formed `AccountSid` is fetched with the parent's credentials
//!   (`GET /2010-04-01/Accounts/{Sid}.json` returns a subaccount's
//!   `auth_token` to its parent). What was found is kept in the host's
//!   in-memory cache only: a token for [`KNOWN_TTL_SECONDS`], "not ours" for
//!   [`UNKNOWN_TTL_SECONDS`]. Fetches are bounded by the host in rate and in
//!   number, so forged `AccountSid`s cost refusals, not API calls.

use std::sync::{Arc, OnceLock};

use crate::egress::message::SenderDefaults;
use crate::platform::connector::cache::{self, FetchRefused};
use crate::platform::connector::credential_sets;
use crate::platform::connector::log::{self, Level};
use crate::platform::connector::metrics;
use crate::shared::rest::{self, PreparedRequest, Verb};
use crate::shared::settings::{self, secret, setting};
use crate::shared::webhook_keys::{self, SharedKey};

/// How long a subaccount's token is used before it is fetched again.
pub const KNOWN_TTL_SECONDS: u32 = 900;
/// How long an `AccountSid` that is not a subaccount is remembered as such.
pub const UNKNOWN_TTL_SECONDS: u32 = 300;
/// A webhook from a subaccount whose cached token is at least this old, and
/// does not verify, fetches the token once more (it may have been rotated).
pub const REFRESH_AFTER_SECONDS: u32 = 60;

/// Where an account's credentials come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    /// The `TWILIO_*` secrets and settings.
    Default,
    /// A credential set of its own.
    Configured,
    /// A subaccount of the default account, found through it.
    Subaccount,
}

/// One account, with what verifying, sending and issuing tokens need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// `AC…`; empty for a default account whose sid is not set (commands
    /// that need no secrets).
    pub sid: String,
    pub kind: AccountKind,
    /// The Auth Tokens a webhook signature may verify with, primary first.
    pub auth_tokens: Vec<String>,
    /// The shared keys a webhook whose settings header names one verifies
    /// with (a subaccount's are its parent's: the parent can act for it).
    pub shared_keys: Vec<SharedKey>,
    /// HTTP Basic for REST: the account's API key, else its sid and Auth
    /// Token; a subaccount's parent's. None when neither is set.
    pub rest_credentials: Option<(String, String)>,
    /// The API key and secret that sign access tokens.
    pub api_key: Option<(String, String)>,
    pub chat_service_sid: Option<String>,
    pub senders: SenderDefaults,
    pub identity: Option<String>,
    pub region: Option<String>,
    pub edge: Option<String>,
    /// For a subaccount: how old its cached token is, in seconds.
    pub token_age_seconds: u32,
}

/// What looking an account up found. An account is shared, not copied:
/// the default one is handed out on every webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(Arc<Account>),
    /// Not an account this service serves.
    Unknown,
    /// Not looked up: lookups are at their bound (a flood of unknown sids).
    Refused(String),
    /// Cannot be told now (Twilio did not answer, another lookup is slow).
    Unavailable(String),
}

/// The account named `sid`, or the default account when none.
pub fn resolve(sid: Option<&str>) -> Lookup {
    let default = default_account();
    let Some(sid) = sid.filter(|sid| *sid != default.sid) else { return Lookup::Found(default.clone()) };
    if let Some(values) = credential_sets::reveal(sid) {
        return Lookup::Found(Arc::new(configured(sid, &values, default)));
    }
    if !subaccounts_enabled() || !rest::is_sid(sid, "AC") {
        return Lookup::Unknown;
    }
    subaccount(sid, default, false)
}

/// A subaccount's token fetched again, whatever the cache holds (a webhook
/// that did not verify with a token old enough to have been rotated).
pub fn refresh(stale: &Account) -> Lookup {
    subaccount(&stale.sid, default_account(), true)
}

/// The default account, read once per instance: its secrets and settings are
/// the host's grants, which do not change while an instance lives.
pub fn default_account() -> &'static Arc<Account> {
    static DEFAULT: OnceLock<Arc<Account>> = OnceLock::new();
    DEFAULT.get_or_init(|| {
        let sid = secret("TWILIO_ACCOUNT_SID").unwrap_or_default();
        let tokens = ["TWILIO_AUTH_TOKEN", "TWILIO_AUTH_TOKEN_SECONDARY"].into_iter().filter_map(|n| secret(n).ok());
        let api_key = secret("TWILIO_API_KEY").ok().zip(secret("TWILIO_API_SECRET").ok());
        let auth_tokens: Vec<String> = tokens.collect();
        Arc::new(Account {
            rest_credentials: rest_credentials(&sid, api_key.as_ref(), auth_tokens.first()),
            shared_keys: shared_keys(&sid, secret("TWILIO_WEBHOOK_SHARED_KEYS").ok().as_deref()),
            sid,
            kind: AccountKind::Default,
            auth_tokens,
            api_key,
            chat_service_sid: secret("TWILIO_CHAT_SERVICE_SID").ok(),
            senders: settings::sender_defaults(),
            identity: setting("TWILIO_IDENTITY"),
            region: setting("TWILIO_REGION"),
            edge: setting("TWILIO_EDGE"),
            token_age_seconds: 0,
        })
    })
}

/// Why a command or request naming account `sid` is refused.
pub fn not_served(sid: Option<&str>) -> String {
    format!("account {} is not one this service serves", sid.unwrap_or_default())
}

/// The shared keys listed in `text`; none, said in the log, when the list
/// is malformed (`check` refuses it first, by the setting's pattern).
fn shared_keys(sid: &str, text: Option<&str>) -> Vec<SharedKey> {
    webhook_keys::parse(text.unwrap_or_default()).unwrap_or_else(|problem| {
        let account = if sid.is_empty() { "the default account" } else { sid };
        log::log(Level::Error, &format!("TWILIO_WEBHOOK_SHARED_KEYS of {account}: {problem}; no shared key is used"));
        Vec::new()
    })
}

fn rest_credentials(
    sid: &str,
    api_key: Option<&(String, String)>,
    auth_token: Option<&String>,
) -> Option<(String, String)> {
    api_key.cloned().or_else(|| auth_token.filter(|_| !sid.is_empty()).map(|token| (sid.to_owned(), token.clone())))
}

/// A configured account from its credential set. Its identity falls back on
/// the default's (the service is the same); its senders, region and edge do
/// not (they belong to another account).
fn configured(sid: &str, values: &[(String, String)], default: &Account) -> Account {
    let value = |name: &str| {
        values.iter().find(|(key, _)| key == name).map(|(_, v)| v.trim().to_owned()).filter(|v| !v.is_empty())
    };
    let auth_tokens: Vec<String> =
        ["TWILIO_AUTH_TOKEN", "TWILIO_AUTH_TOKEN_SECONDARY"].into_iter().filter_map(value).collect();
    let api_key = value("TWILIO_API_KEY").zip(value("TWILIO_API_SECRET"));
    Account {
        sid: sid.to_owned(),
        kind: AccountKind::Configured,
        rest_credentials: rest_credentials(sid, api_key.as_ref(), auth_tokens.first()),
        auth_tokens,
        shared_keys: shared_keys(sid, value("TWILIO_WEBHOOK_SHARED_KEYS").as_deref()),
        api_key,
        chat_service_sid: value("TWILIO_CHAT_SERVICE_SID"),
        senders: SenderDefaults {
            messaging_service_sid: value("TWILIO_MESSAGING_SERVICE_SID"),
            from_number: value("TWILIO_FROM_NUMBER"),
        },
        identity: value("TWILIO_IDENTITY").or_else(|| default.identity.clone()),
        region: value("TWILIO_REGION"),
        edge: value("TWILIO_EDGE"),
        token_age_seconds: 0,
    }
}

/// A subaccount of `parent`: it verifies with its own token, and is sent
/// for with the parent's credentials on its own path.
fn as_subaccount(sid: &str, token: String, parent: &Account, age: u32) -> Account {
    Account {
        sid: sid.to_owned(),
        kind: AccountKind::Subaccount,
        auth_tokens: vec![token],
        shared_keys: parent.shared_keys.clone(),
        rest_credentials: parent.rest_credentials.clone(),
        api_key: None,
        chat_service_sid: None,
        senders: SenderDefaults::default(),
        identity: parent.identity.clone(),
        region: parent.region.clone(),
        edge: parent.edge.clone(),
        token_age_seconds: age,
    }
}

fn subaccounts_enabled() -> bool {
    setting("TWILIO_SUBACCOUNTS")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"))
}

/// What the cache remembers of an `AccountSid`.
const UNKNOWN: &str = "unknown";
const KNOWN_PREFIX: &str = "token:";

fn cache_key(sid: &str) -> String {
    format!("subaccount.{sid}")
}

/// The subaccount `sid` of `parent`: from the cache, else fetched (once per
/// key at a time, within the host's bounds).
fn subaccount(sid: &str, parent: &Account, refetch: bool) -> Lookup {
    let key = cache_key(sid);
    if !refetch && let Some(found) = remembered(sid, &key, parent) {
        return found;
    }
    match cache::begin_fetch(&key) {
        Ok(leave) => {
            let found = fetch(sid, &key, parent);
            drop(leave);
            found
        }
        // Another instance is fetching it: what it finds is in the cache shortly.
        Err(FetchRefused::InFlight) => wait_for_fetch(sid, &key, parent),
        Err(FetchRefused::Exhausted) => {
            metrics::count("account-lookup-refused", 1);
            Lookup::Refused("account lookups are at their bound".to_owned())
        }
    }
}

/// What the cache holds for `key`, as a lookup.
fn remembered(sid: &str, key: &str, parent: &Account) -> Option<Lookup> {
    let cached = cache::get(key)?;
    Some(match cached.value.strip_prefix(KNOWN_PREFIX) {
        Some(token) => Lookup::Found(Arc::new(as_subaccount(sid, token.to_owned(), parent, cached.age_seconds))),
        None => Lookup::Unknown,
    })
}

/// Waits a bounded time for another instance's fetch of `key`.
fn wait_for_fetch(sid: &str, key: &str, parent: &Account) -> Lookup {
    for _ in 0..40 {
        crate::wasi::clocks::monotonic_clock::subscribe_duration(50_000_000).block();
        if let Some(found) = remembered(sid, key, parent) {
            return found;
        }
    }
    Lookup::Unavailable("another lookup of this account did not finish in time".to_owned())
}

/// Twilio's answer to an account fetch (what is used of it).
#[derive(serde::Deserialize)]
struct FetchedAccount {
    sid: String,
    #[serde(default)]
    auth_token: Option<String>,
    #[serde(default)]
    owner_account_sid: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// Fetches `sid` with the parent's credentials and remembers the outcome.
fn fetch(sid: &str, key: &str, parent: &Account) -> Lookup {
    let Some(credentials) = parent.rest_credentials.clone() else {
        return Lookup::Unavailable("the default account's credentials are not set".to_owned());
    };
    metrics::count("account-lookup", 1);
    let request = account_request(sid, &settings::api_base(parent), &credentials);
    let answer = crate::shared::http::exchange(&request);
    let (status, body) = match answer {
        Ok(answer) => (answer.status, answer.body),
        Err(error) => {
            return Lookup::Unavailable(crate::shared::http::describe(&rest::redact_credentials(error, &credentials)));
        }
    };
    match decide(status, &body, sid, &parent.sid) {
        Decided::Subaccount(token) => {
            metrics::count("account-discovered", 1);
            cache::put(key, &format!("{KNOWN_PREFIX}{token}"), KNOWN_TTL_SECONDS);
            Lookup::Found(Arc::new(as_subaccount(sid, token, parent, 0)))
        }
        Decided::NotOurs(why) => {
            metrics::count("account-unknown", 1);
            log::log(Level::Info, &format!("{sid} is not a subaccount of the default account ({why})"));
            cache::put(key, UNKNOWN, UNKNOWN_TTL_SECONDS);
            Lookup::Unknown
        }
        Decided::Unanswered(why) => Lookup::Unavailable(why),
    }
}

/// `GET /2010-04-01/Accounts/{Sid}.json` on the parent's API base `base`,
/// with the parent's `credentials`.
pub fn account_request(sid: &str, base: &str, credentials: &(String, String)) -> PreparedRequest {
    PreparedRequest {
        verb: Verb::Get,
        url: format!("{base}/2010-04-01/Accounts/{}.json", rest::path_segment(sid)),
        headers: rest::rest_headers(credentials),
        form: Vec::new(),
    }
}

/// What an answer to an account fetch says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// A subaccount of the parent, with its Auth Token.
    Subaccount(String),
    /// Not a subaccount of the parent (or closed): why.
    NotOurs(String),
    /// No answer that says either way: why.
    Unanswered(String),
}

/// Reads Twilio's answer to `GET /Accounts/{sid}.json` made by `parent_sid`.
pub fn decide(status: u16, body: &[u8], sid: &str, parent_sid: &str) -> Decided {
    match status {
        200 => match serde_json::from_slice::<FetchedAccount>(body) {
            Ok(account) if account.sid != sid => Decided::NotOurs("Twilio answered for another account".into()),
            Ok(account) if account.owner_account_sid.as_deref() != Some(parent_sid) => {
                Decided::NotOurs("its owner is another account".into())
            }
            Ok(account) if account.status.as_deref() == Some("closed") => Decided::NotOurs("it is closed".into()),
            Ok(FetchedAccount { auth_token: Some(token), .. }) if !token.is_empty() => Decided::Subaccount(token),
            Ok(_) => Decided::NotOurs("Twilio did not return its Auth Token".into()),
            Err(e) => Decided::Unanswered(format!("unreadable account answer: {e}")),
        },
        // 404 (20404): not a subaccount of the parent. 401/403: the parent may not see it.
        401 | 403 | 404 => Decided::NotOurs(format!("Twilio answered {status}")),
        status => Decided::Unanswered(format!("Twilio answered {status}")),
    }
}

/// Names a verified (or sending) account on the trace of the request or
/// send under way; the default account has no sid of its own to show.
pub fn mark_on_trace(account: &Account) {
    if !account.sid.is_empty() {
        crate::platform::connector::trace::set_attribute("twilio.account_sid", &account.sid);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An account of `kind` for unit tests.
    pub(crate) fn account(kind: AccountKind, sid: &str) -> Account {
        Account {
            sid: sid.into(),
            kind,
            auth_tokens: vec!["a".into()],
            shared_keys: Vec::new(),
            rest_credentials: None,
            api_key: None,
            chat_service_sid: Some("IS1".into()),
            senders: SenderDefaults { messaging_service_sid: Some("MG1".into()), from_number: None },
            identity: Some("bot".into()),
            region: Some("ie1".into()),
            edge: None,
            token_age_seconds: 0,
        }
    }

    const PARENT: &str = "AC00000000000000000000000000000001";
    const SUB: &str = "AC00000000000000000000000000000002";

    fn answer(owner: &str, status: &str, token: Option<&str>) -> Vec<u8> {
        serde_json::json!({"sid": SUB, "owner_account_sid": owner, "status": status, "auth_token": token})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_subaccount_of_the_parent_gives_its_token() {
        let token = "0123456789abcdef0123456789abcdef";
        assert_eq!(decide(200, &answer(PARENT, "active", Some(token)), SUB, PARENT), Decided::Subaccount(token.into()));
        assert_eq!(
            decide(200, &answer(PARENT, "suspended", Some(token)), SUB, PARENT),
            Decided::Subaccount(token.into()),
            "a suspended subaccount's webhooks still verify"
        );
    }

    #[test]
    fn anything_else_is_not_ours_or_unanswered() {
        let token = Some("0123456789abcdef0123456789abcdef");
        assert!(matches!(decide(200, &answer(SUB, "active", token), SUB, PARENT), Decided::NotOurs(_)));
        assert!(matches!(decide(200, &answer(PARENT, "closed", token), SUB, PARENT), Decided::NotOurs(_)));
        assert!(matches!(decide(200, &answer(PARENT, "active", None), SUB, PARENT), Decided::NotOurs(_)));
        assert!(matches!(decide(404, b"{\"code\":20404}", SUB, PARENT), Decided::NotOurs(_)));
        assert!(matches!(decide(200, b"<html>", SUB, PARENT), Decided::Unanswered(_)));
        assert!(matches!(decide(503, b"", SUB, PARENT), Decided::Unanswered(_)));
        assert!(matches!(decide(429, b"", SUB, PARENT), Decided::Unanswered(_)));
    }

    #[test]
    fn a_configured_account_keeps_its_own_senders_and_takes_the_default_identity() {
        let default = account(AccountKind::Default, PARENT);
        let values = vec![
            ("TWILIO_AUTH_TOKEN".to_owned(), "tok".to_owned()),
            ("TWILIO_FROM_NUMBER".to_owned(), "+15005550006".to_owned()),
        ];
        let account = configured(SUB, &values, &default);
        assert_eq!(account.auth_tokens, vec!["tok".to_owned()]);
        assert_eq!(account.rest_credentials, Some((SUB.to_owned(), "tok".to_owned())));
        assert_eq!(account.senders.from_number.as_deref(), Some("+15005550006"));
        assert_eq!(account.senders.messaging_service_sid, None, "never the default account's sender");
        assert_eq!((account.chat_service_sid, account.region), (None, None));
        assert_eq!(account.identity.as_deref(), Some("bot"));
        let sub = as_subaccount(SUB, "t".into(), &default, 5);
        assert_eq!(sub.rest_credentials, default.rest_credentials, "the parent's credentials");
        assert_eq!(sub.region.as_deref(), Some("ie1"));
    }
}
