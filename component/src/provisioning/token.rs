//! Twilio Access Tokens for the Conversations SDK (a JWT with a Chat grant).
//!
//! The layout is twilio-python's `AccessToken.to_jwt`: header
//! `cty: twilio-fpa;v=1` (plus `twr` with a region), payload `jti`, `iss`,
//! `sub`, `exp`, `nbf` and `grants`, signed HS256 with the API key's secret.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// Twilio's default token lifetime.
pub const DEFAULT_TTL_SECONDS: u32 = 3600;
/// Twilio refuses longer-lived tokens (error 20157).
pub const MAX_TTL_SECONDS: u32 = 86_400;

/// Everything a token is made from.
#[derive(Debug)]
pub struct TokenRequest<'a> {
    pub account_sid: &'a str,
    pub api_key_sid: &'a str,
    pub api_secret: &'a [u8],
    pub chat_service_sid: Option<&'a str>,
    pub region: Option<&'a str>,
    pub identity: &'a str,
    pub ttl_seconds: u32,
    /// Issue time, unix seconds.
    pub now: u64,
}

/// A signed token and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub jwt: String,
    pub expires_at: u64,
}

/// Why no token was issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    MissingIdentity,
    TtlOutOfRange(u32),
    Signing(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MissingIdentity => f.write_str("an identity is required"),
            Self::TtlOutOfRange(ttl) => {
                write!(f, "ttl {ttl} s is out of range: 1 to {MAX_TTL_SECONDS} s (Twilio error 20157)")
            }
            Self::Signing(reason) => write!(f, "could not sign the token: {reason}"),
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    jti: String,
    iss: &'a str,
    sub: &'a str,
    nbf: u64,
    exp: u64,
    grants: Grants<'a>,
}

#[derive(Serialize)]
struct Grants<'a> {
    identity: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat: Option<ChatGrant<'a>>,
}

#[derive(Serialize)]
struct ChatGrant<'a> {
    service_sid: &'a str,
}

/// Signs an Access Token.
pub fn issue(request: &TokenRequest<'_>) -> Result<IssuedToken, TokenError> {
    if request.identity.trim().is_empty() {
        return Err(TokenError::MissingIdentity);
    }
    if request.ttl_seconds == 0 || request.ttl_seconds > MAX_TTL_SECONDS {
        return Err(TokenError::TtlOutOfRange(request.ttl_seconds));
    }
    let mut header = Header::new(Algorithm::HS256);
    header.cty = Some("twilio-fpa;v=1".to_owned());
    if let Some(region) = request.region {
        header.extras.insert("twr", region);
    }
    let expires_at = request.now + u64::from(request.ttl_seconds);
    let claims = Claims {
        jti: format!("{}-{}", request.api_key_sid, request.now),
        iss: request.api_key_sid,
        sub: request.account_sid,
        nbf: request.now,
        exp: expires_at,
        grants: Grants {
            identity: request.identity,
            chat: request.chat_service_sid.map(|service_sid| ChatGrant { service_sid }),
        },
    };
    let jwt = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(request.api_secret))
        .map_err(|e| TokenError::Signing(e.to_string()))?;
    Ok(IssuedToken { jwt, expires_at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{DecodingKey, Validation};
    use serde_json::{Value, json};

    const ACCOUNT: &str = "AC00000000000000000000000000000001";
    const KEY: &str = "SK00000000000000000000000000000002";
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const SERVICE: &str = "IS00000000000000000000000000000003";

    fn request(ttl: u32) -> TokenRequest<'static> {
        TokenRequest {
            account_sid: ACCOUNT,
            api_key_sid: KEY,
            api_secret: SECRET,
            chat_service_sid: Some(SERVICE),
            region: None,
            identity: "alice",
            ttl_seconds: ttl,
            now: 1_700_000_000,
        }
    }

    fn part(jwt: &str, index: usize) -> Value {
        let raw = jwt.split('.').nth(index).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(raw).unwrap()).unwrap()
    }

    #[test]
    fn token_has_twilio_structure_and_verifies() {
        let token = issue(&request(DEFAULT_TTL_SECONDS)).unwrap();
        assert_eq!(token.expires_at, 1_700_003_600);
        assert_eq!(part(&token.jwt, 0), json!({"alg": "HS256", "typ": "JWT", "cty": "twilio-fpa;v=1"}));
        assert_eq!(
            part(&token.jwt, 1),
            json!({
                "jti": format!("{KEY}-1700000000"),
                "iss": KEY,
                "sub": ACCOUNT,
                "nbf": 1_700_000_000u64,
                "exp": 1_700_003_600u64,
                "grants": {"identity": "alice", "chat": {"service_sid": SERVICE}},
            })
        );
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        let decoded = jsonwebtoken::decode::<Value>(&token.jwt, &DecodingKey::from_secret(SECRET), &validation);
        assert!(decoded.is_ok());
        let wrong = jsonwebtoken::decode::<Value>(&token.jwt, &DecodingKey::from_secret(b"other"), &validation);
        assert!(wrong.is_err());
    }

    #[test]
    fn region_adds_twr_header() {
        let mut req = request(60);
        req.region = Some("ie1");
        let token = issue(&req).unwrap();
        assert_eq!(part(&token.jwt, 0)["twr"], "ie1");
    }

    #[test]
    fn chat_grant_left_out_without_a_service() {
        let mut req = request(60);
        req.chat_service_sid = None;
        let token = issue(&req).unwrap();
        assert_eq!(part(&token.jwt, 1)["grants"], json!({"identity": "alice"}));
    }

    #[test]
    fn ttl_bounds_and_identity() {
        assert!(issue(&request(MAX_TTL_SECONDS)).is_ok());
        assert_eq!(issue(&request(MAX_TTL_SECONDS + 1)), Err(TokenError::TtlOutOfRange(86_401)));
        assert_eq!(issue(&request(0)), Err(TokenError::TtlOutOfRange(0)));
        let mut req = request(60);
        req.identity = " ";
        assert_eq!(issue(&req), Err(TokenError::MissingIdentity));
    }
}
