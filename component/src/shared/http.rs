//! HTTP through `wasi:http/outgoing-handler`: the only way out of the sandbox.
//! Every call is bounded (connect, first byte, between bytes, answer size),
//! and a failure says whether the request may have reached Twilio.

use crate::platform::connector::types::SendError;
use crate::shared::body::{self, ReadError, WriteError};
use crate::shared::rest::{self, PreparedRequest, TransportFailure, Verb};
use crate::wasi::http::outgoing_handler;
use crate::wasi::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme};

/// Bounds on one REST call, in nanoseconds (the host may cap them further).
const CONNECT_TIMEOUT_NS: u64 = 5_000_000_000;
const FIRST_BYTE_TIMEOUT_NS: u64 = 15_000_000_000;
const BETWEEN_BYTES_TIMEOUT_NS: u64 = 10_000_000_000;
/// Twilio's answers are a few KiB; more is not a Twilio answer.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Makes one REST call whose answer is JSON (a lookup or an update of a
/// resource): the body of a 2xx answer, or what went wrong in one line, with
/// the credentials redacted.
pub fn rest(request: &PreparedRequest, credentials: &(String, String)) -> Result<Vec<u8>, String> {
    exchange(request)
        .and_then(|answer| match answer.status {
            200..=299 => Ok(answer.body),
            status => Err(rest::refusal(status, answer.retry_after.as_deref(), &answer.body)),
        })
        .map_err(|error| describe(&rest::redact_credentials(error, credentials)))
}

/// A failed call in one line, for the log.
pub fn describe(error: &SendError) -> String {
    let (kind, e) = match error {
        SendError::Retry(hint) => ("retry", &hint.reason),
        SendError::Reject(e) => ("reject", e),
        SendError::OptedOut(e) => ("opted out", e),
        SendError::Ambiguous(e) => ("ambiguous", e),
    };
    match e.code {
        Some(code) => format!("{kind}: Twilio {code}: {}", e.message),
        None => format!("{kind}: {}", e.message),
    }
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    /// Where a redirect points.
    pub location: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Makes one REST call, reading at most Twilio's answer size.
pub fn exchange(prepared: &PreparedRequest) -> Result<Answer, SendError> {
    exchange_bounded(prepared, MAX_RESPONSE_BYTES, FIRST_BYTE_TIMEOUT_NS)
}

/// Makes one HTTP call, reading an answer of at most `max_body` bytes that
/// starts within `first_byte_timeout_ns`.
pub fn exchange_bounded(
    prepared: &PreparedRequest,
    max_body: usize,
    first_byte_timeout_ns: u64,
) -> Result<Answer, SendError> {
    let url = url::Url::parse(&prepared.url)
        .map_err(|e| rest::classify_transport(TransportFailure::Denied, format!("invalid URL: {e}")))?;
    let entries: Vec<(String, Vec<u8>)> =
        prepared.headers.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
    let headers = Fields::from_list(&entries)
        .map_err(|e| rest::classify_transport(TransportFailure::Denied, format!("invalid header: {e:?}")))?;
    let request = OutgoingRequest::new(headers);
    let scheme = match url.scheme() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    let authority = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let path = &url[url::Position::BeforePath..];
    let method = match prepared.verb {
        Verb::Get => Method::Get,
        Verb::Post => Method::Post,
    };
    let set = request.set_method(&method).is_ok()
        && request.set_scheme(Some(&scheme)).is_ok()
        && request.set_authority(Some(&authority)).is_ok()
        && request.set_path_with_query(Some(path)).is_ok();
    if !set {
        return Err(rest::classify_transport(TransportFailure::Denied, format!("cannot address {}", prepared.url)));
    }
    let options = RequestOptions::new();
    // Setting a timeout the host does not support is not fatal: the host bounds every call anyway.
    let _ = options.set_connect_timeout(Some(CONNECT_TIMEOUT_NS));
    let _ = options.set_first_byte_timeout(Some(first_byte_timeout_ns));
    let _ = options.set_between_bytes_timeout(Some(BETWEEN_BYTES_TIMEOUT_NS));

    let body = request.body().map_err(|()| before_sending("request body already taken"))?;
    let pending = outgoing_handler::handle(request, Some(options)).map_err(transport_error)?;
    let form = match prepared.verb {
        Verb::Get => String::new(),
        Verb::Post => prepared.body(),
    };
    write_body(body, form.as_bytes())?;

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(transport_error(code)),
        Some(Err(())) | None => return Err(ambiguous("the answer was lost")),
    };
    let status = response.status();
    let headers = response.headers();
    let header = |name: &str| headers.get(name).into_iter().next().and_then(|v| String::from_utf8(v).ok());
    let (retry_after, location, content_type) = (header("retry-after"), header("location"), header("content-type"));
    drop(headers);
    let body = read_response_body(response, max_body)?;
    Ok(Answer { status, retry_after, location, content_type, body })
}

fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), SendError> {
    body::write_all(&body, bytes).map_err(|e| match e {
        WriteError::Unavailable => before_sending("request body stream unavailable"),
        WriteError::Failed(e) => before_sending(&format!("writing the request: {e}")),
    })?;
    OutgoingBody::finish(body, None).map_err(transport_error)
}

fn read_response_body(
    response: crate::wasi::http::types::IncomingResponse,
    max_body: usize,
) -> Result<Vec<u8>, SendError> {
    let incoming = response.consume().map_err(|()| ambiguous("response body unavailable"))?;
    body::read_all(incoming, max_body).map_err(|e| match e {
        ReadError::Unavailable => ambiguous("response body unavailable"),
        ReadError::TooLarge => ambiguous(&format!("the answer is larger than {max_body} bytes")),
        ReadError::Failed(e) => ambiguous(&format!("reading the answer: {e}")),
    })
}

fn before_sending(message: &str) -> SendError {
    rest::classify_transport(TransportFailure::BeforeSending, message.to_owned())
}

fn ambiguous(message: &str) -> SendError {
    rest::classify_transport(TransportFailure::AfterSending, message.to_owned())
}

/// Whether a transport error happened before the request could reach Twilio.
fn transport_error(code: ErrorCode) -> SendError {
    let failure = match &code {
        ErrorCode::DnsTimeout
        | ErrorCode::DnsError(_)
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionLimitReached
        | ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_) => TransportFailure::BeforeSending,
        ErrorCode::HttpRequestDenied
        | ErrorCode::DestinationIpProhibited
        | ErrorCode::HttpRequestUriInvalid
        | ErrorCode::HttpRequestMethodInvalid => TransportFailure::Denied,
        _ => TransportFailure::AfterSending,
    };
    rest::classify_transport(failure, format!("transport: {code:?}"))
}
