//! X-Twilio-Signature: the HMAC Twilio puts on every webhook.
//!
//! Follows Twilio's reference validators (twilio-python's `RequestValidator`,
//! twilio-node's `validateRequest`): the URL Twilio called, then every form
//! parameter name (byte order) followed by each of its distinct values (sorted),
//! keyed by the account's Auth Token (HMAC-SHA1), or by a shared key with the
//! algorithm its settings header names (HMAC-SHA256). Twilio is inconsistent
//! about default ports, so the URL is tried with the port and without it. A
//! JSON body is signed through the `bodySHA256` query parameter instead of its
//! parameters.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ingress::envelope::Param;

/// The HMAC a signature is computed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Keyed by the Auth Token: every webhook without a settings header.
    HmacSha1,
    /// Keyed by a shared key, when the settings header names it.
    HmacSha256,
}

/// Why a webhook's signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// The request carried no `X-Twilio-Signature` header (Twilio answers 400).
    Missing,
    /// The signature does not match (Twilio answers 403).
    Mismatch,
    /// The URL's `bodySHA256` does not match the body (Twilio answers 403).
    BodyHashMismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Missing => "missing X-Twilio-Signature header",
            Self::Mismatch => "X-Twilio-Signature does not match",
            Self::BodyHashMismatch => "bodySHA256 does not match the request body",
        })
    }
}

/// What Twilio signed besides the URL.
#[derive(Debug, Clone, Copy)]
pub enum SignedContent<'a> {
    /// A form-encoded POST: its decoded parameters, in any order.
    Form(&'a [Param<'a>]),
    /// Any other body (JSON): covered by the URL's `bodySHA256` parameter.
    Raw(&'a [u8]),
}

/// The parameters of a request that is not a form (JSON): none, its body's
/// hash is in the URL.
pub const NO_PARAMS: &[(&str, &str)] = &[];

/// Computes the signature Twilio would send for `url` and form `params`,
/// signed with the Auth Token.
pub fn compute(auth_token: &[u8], url: &str, params: &[(impl AsRef<str>, impl AsRef<str>)]) -> String {
    compute_with(Algorithm::HmacSha1, auth_token, url, params)
}

/// Computes the signature Twilio would send with `algorithm` keyed by `key`.
pub fn compute_with(
    algorithm: Algorithm,
    key: &[u8],
    url: &str,
    params: &[(impl AsRef<str>, impl AsRef<str>)],
) -> String {
    sign_sorted(algorithm, key, url, &sorted_params(params))
}

/// The parameters in the order Twilio signs them. Sorting whole pairs orders
/// names by bytes, then each name's values; `dedup` keeps a repeated value
/// once, as the reference libraries do.
fn sorted_params(params: &[(impl AsRef<str>, impl AsRef<str>)]) -> Vec<(&str, &str)> {
    let mut sorted: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
}

fn sign_sorted(algorithm: Algorithm, key: &[u8], url: &str, sorted: &[(&str, &str)]) -> String {
    match algorithm {
        Algorithm::HmacSha1 => sign_sorted_by::<Hmac<Sha1>>(key, url, sorted),
        Algorithm::HmacSha256 => sign_sorted_by::<Hmac<Sha256>>(key, url, sorted),
    }
}

fn sign_sorted_by<M: Mac + hmac::digest::KeyInit>(key: &[u8], url: &str, sorted: &[(&str, &str)]) -> String {
    let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    BASE64.encode(mac.finalize().into_bytes())
}

/// Checks a webhook's `X-Twilio-Signature`, signed with the Auth Token,
/// against the public `url` it was sent to.
pub fn validate(
    auth_token: &[u8],
    url: &str,
    content: SignedContent<'_>,
    signature: Option<&str>,
) -> Result<(), SignatureError> {
    validate_with(Algorithm::HmacSha1, auth_token, url, content, signature)
}

/// Checks a webhook's `X-Twilio-Signature` computed with `algorithm` keyed
/// by `key`.
pub fn validate_with(
    algorithm: Algorithm,
    key: &[u8],
    url: &str,
    content: SignedContent<'_>,
    signature: Option<&str>,
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing)?;
    let sorted = match content {
        SignedContent::Form(params) => sorted_params(params),
        SignedContent::Raw(body) => {
            let expected = query_param(url, "bodySHA256").ok_or(SignatureError::Mismatch)?;
            let actual = hex(&Sha256::digest(body));
            if !bool::from(actual.as_bytes().ct_eq(expected.to_ascii_lowercase().as_bytes())) {
                return Err(SignatureError::BodyHashMismatch);
            }
            Vec::new()
        }
    };
    let signed = |candidate: &str| {
        bool::from(sign_sorted(algorithm, key, candidate, &sorted).as_bytes().ct_eq(signature.as_bytes()))
    };
    // The URL as given first: in the common case one HMAC does. A signature
    // that fails is checked against every form, so its time does not depend
    // on the forms; one that verifies may end early, which its 200 says anyway.
    if signed(url) || url_variants(url).iter().skip(1).any(|candidate| signed(candidate)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The forms of `url` Twilio may have signed: the URL exactly as given; with
/// the default port and without any port; and, when the URL carries
/// credentials, the same without them.
fn url_variants(url: &str) -> Vec<String> {
    // Exactly as given first, whatever it looks like (the fuzzer found an
    // empty port, `host:/`, that no normalised form reproduced).
    let mut variants = vec![url.to_owned()];
    let Some(parts) = UrlParts::split(url) else {
        return variants;
    };
    let userinfo_choices: &[Option<&str>] = match parts.userinfo {
        Some(info) => &[None, Some(info)],
        None => &[None],
    };
    for userinfo in userinfo_choices {
        let with_port = parts.port.or(parts.default_port());
        for port in [None, with_port] {
            let variant = parts.join(*userinfo, port);
            if !variants.contains(&variant) {
                variants.push(variant);
            }
        }
    }
    variants
}

/// `scheme://[userinfo@]host[:port]rest`, split without normalising anything
/// (a URL library would drop default ports and re-encode the query).
struct UrlParts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    host: &'a str,
    port: Option<&'a str>,
    rest: &'a str,
}

impl<'a> UrlParts<'a> {
    fn split(url: &'a str) -> Option<Self> {
        let (scheme, after) = url.split_once("://")?;
        let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(authority_end);
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((info, host_port)) => (Some(info), host_port),
            None => (None, authority),
        };
        // An IPv6 literal keeps its colons inside the brackets.
        let port_sep = match host_port.rfind(']') {
            Some(bracket) => host_port[bracket..].find(':').map(|i| bracket + i),
            None => host_port.rfind(':'),
        };
        let (host, port) = match port_sep {
            Some(i) => (&host_port[..i], Some(&host_port[i + 1..]).filter(|p| !p.is_empty())),
            None => (host_port, None),
        };
        Some(Self { scheme, userinfo, host, port, rest })
    }

    fn default_port(&self) -> Option<&'static str> {
        match self.scheme.to_ascii_lowercase().as_str() {
            "https" => Some("443"),
            "http" => Some("80"),
            _ => None,
        }
    }

    fn join(&self, userinfo: Option<&str>, port: Option<&str>) -> String {
        let mut out = String::with_capacity(self.scheme.len() + self.host.len() + self.rest.len() + 16);
        out.push_str(self.scheme);
        out.push_str("://");
        if let Some(info) = userinfo {
            out.push_str(info);
            out.push('@');
        }
        out.push_str(self.host);
        if let Some(port) = port {
            out.push(':');
            out.push_str(port);
        }
        out.push_str(self.rest);
        out
    }
}

/// The first value of query parameter `name` in `url`, decoded.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOKEN: &[u8] = b"12345";

    fn pairs<'a>(list: &[(&'a str, &'a str)]) -> Vec<Param<'a>> {
        list.iter().map(|&(k, v)| (k.into(), v.into())).collect()
    }

    fn voice_params(caller: &str) -> Vec<Param<'_>> {
        pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", caller),
            ("Digits", "1234"),
            ("From", caller),
            ("To", "+18005551212"),
        ])
    }

    #[test]
    fn reference_answer_example_com() {
        let url = "https://example.com/myapp.php?foo=1&bar=2";
        let params = voice_params("+14158675310");
        assert_eq!(compute(TOKEN, url, &params), "L/OH5YylLD5NRKLltdqwSvS0BnU=");
        assert_eq!(validate(TOKEN, url, SignedContent::Form(&params), Some("L/OH5YylLD5NRKLltdqwSvS0BnU=")), Ok(()));
    }

    #[test]
    fn reference_answer_mycompany_both_port_forms() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        let params = voice_params("+14158675309");
        assert_eq!(compute(TOKEN, url, &params), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert_eq!(compute(TOKEN, with_port, &params), "kvajT1Ptam85bY51eRf/AJRuM3w=");
        // Either signature validates against either form of the URL.
        for seen in [url, with_port] {
            for sig in ["RSOYDt4T1cUTdK1PDd93/VVr8B8=", "kvajT1Ptam85bY51eRf/AJRuM3w="] {
                assert_eq!(validate(TOKEN, seen, SignedContent::Form(&params), Some(sig)), Ok(()), "{seen} {sig}");
            }
        }
    }

    #[test]
    fn reference_answer_json_body() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        let body = br#"{"property": "value", "boolean": true}"#;
        let sig = "a9nBmqA0ju/hNViExpshrM61xv4=";
        assert_eq!(compute(TOKEN, url, NO_PARAMS), sig);
        assert_eq!(validate(TOKEN, url, SignedContent::Raw(body), Some(sig)), Ok(()));
        let tampered = br#"{"property": "value", "boolean": false}"#;
        assert_eq!(
            validate(TOKEN, url, SignedContent::Raw(tampered), Some(sig)),
            Err(SignatureError::BodyHashMismatch)
        );
    }

    /// Answers of the official `twilio` npm package 6.3.1:
    /// `getExpectedTwilioSignature("12345", url, params, "HMAC_SHA256")`.
    #[test]
    fn reference_answers_hmac_sha256() {
        let url = "https://example.com/myapp.php?foo=1&bar=2";
        let params = voice_params("+14158675310");
        let sig = "qMztBq0IANMH/q0K9sCfKQJLylezvRdRzRS647SAVow=";
        assert_eq!(compute_with(Algorithm::HmacSha256, TOKEN, url, &params), sig);
        assert_eq!(validate_with(Algorithm::HmacSha256, TOKEN, url, SignedContent::Form(&params), Some(sig)), Ok(()));
        // The same key under the other algorithm does not verify it.
        assert_eq!(validate(TOKEN, url, SignedContent::Form(&params), Some(sig)), Err(SignatureError::Mismatch));
        let json_url = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        let body = br#"{"property": "value", "boolean": true}"#;
        let json_sig = "+UOCWf84gdgo/5Hpg4m5/EgKnJA2/TbOw5sPNVr3bPk=";
        assert_eq!(
            validate_with(Algorithm::HmacSha256, TOKEN, json_url, SignedContent::Raw(body), Some(json_sig)),
            Ok(())
        );
    }

    #[test]
    fn json_body_without_hash_parameter_is_refused() {
        let url = "https://mycompany.com/myapp.php";
        let sig = compute(TOKEN, url, NO_PARAMS);
        assert_eq!(validate(TOKEN, url, SignedContent::Raw(b"{}"), Some(&sig)), Err(SignatureError::Mismatch));
    }

    #[test]
    fn missing_and_wrong_signatures() {
        let url = "https://example.com/myapp.php?foo=1&bar=2";
        let params = voice_params("+14158675310");
        assert_eq!(validate(TOKEN, url, SignedContent::Form(&params), None), Err(SignatureError::Missing));
        assert_eq!(
            validate(TOKEN, url, SignedContent::Form(&params), Some("L/OH5YylLD5NRKLltdqwSvS0BnX=")),
            Err(SignatureError::Mismatch)
        );
        // The right signature under another token fails.
        assert_eq!(
            validate(b"54321", url, SignedContent::Form(&params), Some("L/OH5YylLD5NRKLltdqwSvS0BnU=")),
            Err(SignatureError::Mismatch)
        );
        // A changed parameter fails.
        let mut changed = params.clone();
        changed[2].1 = "1235".into();
        assert_eq!(
            validate(TOKEN, url, SignedContent::Form(&changed), Some("L/OH5YylLD5NRKLltdqwSvS0BnU=")),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn repeated_parameters_contribute_each_distinct_value_sorted() {
        let url = "https://example.com/hook";
        let params = pairs(&[("MediaUrl", "b"), ("Body", "x"), ("MediaUrl", "a"), ("MediaUrl", "b")]);
        let expected = {
            let mut mac = Hmac::<Sha1>::new_from_slice(TOKEN).unwrap();
            mac.update(b"https://example.com/hookBodyxMediaUrlaMediaUrlb");
            BASE64.encode(mac.finalize().into_bytes())
        };
        assert_eq!(compute(TOKEN, url, &params), expected);
    }

    #[test]
    fn names_sort_by_bytes_case_sensitively() {
        let url = "https://example.com/hook";
        let params = pairs(&[("a", "1"), ("B", "2")]);
        let mut mac = Hmac::<Sha1>::new_from_slice(TOKEN).unwrap();
        mac.update(b"https://example.com/hookB2a1");
        assert_eq!(compute(TOKEN, url, &params), BASE64.encode(mac.finalize().into_bytes()));
    }

    #[test]
    fn credentials_in_the_url_are_dropped_and_the_port_kept() {
        let params = pairs(&[("Body", "hi")]);
        let signed = compute(TOKEN, "https://example.com:8443/sms", &params);
        let seen = "https://user:pass@example.com:8443/sms";
        assert_eq!(validate(TOKEN, seen, SignedContent::Form(&params), Some(&signed)), Ok(()));
    }

    #[test]
    fn http_default_port_and_ipv6_hosts() {
        let params = pairs(&[("Body", "hi")]);
        let signed = compute(TOKEN, "http://example.com:80/sms", &params);
        assert_eq!(validate(TOKEN, "http://example.com/sms", SignedContent::Form(&params), Some(&signed)), Ok(()));
        let v6 = compute(TOKEN, "http://[::1]/sms", &params);
        assert_eq!(validate(TOKEN, "http://[::1]:80/sms", SignedContent::Form(&params), Some(&v6)), Ok(()));
    }

    proptest! {
        #[test]
        fn any_parameter_order_gives_the_same_signature(
            params in proptest::collection::vec(("[A-Za-z0-9]{1,6}", "\\PC{0,8}"), 0..12),
            seed in any::<u64>(),
        ) {
            let url = "https://example.com/hook?x=1";
            let original = compute(TOKEN, url, &params);
            let mut shuffled = params.clone();
            // A deterministic shuffle driven by the seed.
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(compute(TOKEN, url, &shuffled), original.clone());
            let shuffled: Vec<Param<'_>> = shuffled.iter().map(|(k, v)| (k.into(), v.into())).collect();
            prop_assert_eq!(validate(TOKEN, url, SignedContent::Form(&shuffled), Some(&original)), Ok(()));
        }
    }
}
