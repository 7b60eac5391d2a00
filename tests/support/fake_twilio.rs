//! A local stand-in for Twilio's REST API: records every request exactly and
//! answers with scripted replies (201 by default). Messages it answered as
//! created (even when the answer then broke) are kept, and `GET …/Messages.json`
//! lists them with Twilio's filters, as the reconciliation of an ambiguous
//! send asks.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub form: Vec<(String, String)>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (a hang, when longer than the client's patience).
    pub delay: Duration,
    /// How the body ends.
    pub ending: Ending,
}

/// How a reply's body ends: whole, or broken after its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// All of it, as declared.
    Whole,
    /// The first bytes, then the connection is reset.
    ResetAfter(usize),
    /// The first bytes, then nothing more, ever.
    StallAfter(usize),
}

impl Reply {
    /// 201 with a created message, as the Messages API answers.
    pub fn created(sid: &str) -> Self {
        Self::json(
            201,
            &format!(
                r#"{{"sid":"{sid}","status":"queued","num_segments":"1","error_code":null,"error_message":null}}"#
            ),
        )
    }

    /// Twilio's error body.
    pub fn error(status: u16, code: u32, message: &str) -> Self {
        Self::json(
            status,
            &format!(
                r#"{{"code":{code},"message":"{message}","more_info":"https://www.twilio.com/docs/errors/{code}","status":{status}}}"#
            ),
        )
    }

    pub fn json(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_owned(),
            delay: Duration::ZERO,
            ending: Ending::Whole,
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The same reply, its body broken as `ending` says.
    pub fn ending(mut self, ending: Ending) -> Self {
        self.ending = ending;
        self
    }

    /// The same reply after `delay`.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn hang(duration: Duration) -> Self {
        Self::created("SMhang").after(duration)
    }
}

#[derive(Debug, Default)]
struct Shared {
    received: Vec<Recorded>,
    received_at: Vec<std::time::Instant>,
    script: VecDeque<Reply>,
    counter: u64,
    /// Messages answered as created, as Twilio's list shows them.
    created: Vec<serde_json::Value>,
    /// Lookups answered with this status instead of the list, while set.
    lookups_fail: Option<u16>,
    /// TCP connections accepted.
    connections: u64,
    /// The numbers, services and configuration `twilio wire` works on.
    console: crate::fake_console::Console,
    /// Subaccounts `GET /2010-04-01/Accounts/{Sid}.json` knows: sid → (owner, Auth Token).
    subaccounts: std::collections::BTreeMap<String, (String, String)>,
}

/// The fake; stops when dropped.
#[derive(Debug)]
pub struct FakeTwilio {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeTwilio {
    pub async fn start() -> Self {
        // A port from the harness's registry, never the OS's next free one: a
        // port another test was handed as "nothing listens here" must not
        // become this fake, which answers anything unscripted with 201.
        // The port was free when handed out; another process (an outgoing
        // connection's source port) may have taken it since: take another.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(crate::free_addr()).await {
                Ok(listener) => break listener,
                Err(error) if error.kind() == std::io::ErrorKind::AddrInUse && tries < 20 => tries += 1,
                Err(error) => panic!("bind: {error}"),
            }
        };
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                state.lock().expect("fake state").connections += 1;
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| answer(state.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, shared, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many TCP connections it has accepted.
    pub fn connections(&self) -> u64 {
        self.shared.lock().expect("fake state").connections
    }

    /// Queues replies; once they are used up every request gets a fresh 201.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.lock().expect("lock").script.extend(replies);
    }

    pub fn received(&self) -> Vec<Recorded> {
        self.shared.lock().expect("lock").received.clone()
    }

    /// The sends (every POST), leaving out lookups.
    pub fn posts(&self) -> Vec<Recorded> {
        self.received().into_iter().filter(|r| r.method == "POST").collect()
    }

    /// The lookups in the Messages list (every GET).
    pub fn lookups(&self) -> Vec<Recorded> {
        self.received().into_iter().filter(|r| r.method == "GET").collect()
    }

    /// Answers lookups with `status` (None: with the list again).
    pub fn fail_lookups(&self, status: Option<u16>) {
        self.shared.lock().expect("lock").lookups_fail = status;
    }

    /// Changes the resources `twilio wire` works on.
    pub fn edit_console(&self, edit: impl FnOnce(&mut crate::fake_console::Console)) {
        edit(&mut self.shared.lock().expect("lock").console);
    }

    /// The resources `twilio wire` works on, as they are now.
    pub fn console(&self) -> crate::fake_console::Console {
        self.shared.lock().expect("lock").console.clone()
    }

    /// Makes `sid` a subaccount of `owner` with Auth Token `token`, as the
    /// Accounts API shows it to its owner (None: removes it, a closed one).
    pub fn set_subaccount(&self, sid: &str, owner: &str, token: Option<&str>) {
        let mut shared = self.shared.lock().expect("lock");
        match token {
            Some(token) => shared.subaccounts.insert(sid.to_owned(), (owner.to_owned(), token.to_owned())),
            None => shared.subaccounts.remove(sid),
        };
    }

    /// The account fetches it answered (every `GET /2010-04-01/Accounts/{Sid}.json`).
    pub fn account_fetches(&self) -> Vec<Recorded> {
        self.received()
            .into_iter()
            .filter(|r| {
                r.method == "GET" && r.path.starts_with("/2010-04-01/Accounts/") && r.path.matches('/').count() == 3
            })
            .collect()
    }

    /// When each request of [`Self::received`] arrived.
    pub fn received_at(&self) -> Vec<std::time::Instant> {
        self.shared.lock().expect("lock").received_at.clone()
    }
}

/// A reply's body: the bytes up to its break, then the end `Ending` says.
struct ScriptedBody {
    first: Option<Bytes>,
    ending: Ending,
}

impl hyper::body::Body for ScriptedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        use std::task::Poll;
        if let Some(bytes) = self.first.take() {
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(bytes))));
        }
        match self.ending {
            Ending::Whole => Poll::Ready(None),
            // An error from the body makes hyper drop the connection mid-body.
            Ending::ResetAfter(_) => Poll::Ready(Some(Err(std::io::Error::other("reset on purpose")))),
            Ending::StallAfter(_) => Poll::Pending,
        }
    }
}

async fn answer(
    state: Arc<Mutex<Shared>>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<ScriptedBody>, Infallible> {
    let method = request.method().to_string();
    let path = request.uri().path_and_query().map(ToString::to_string).unwrap_or_default();
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let reply = {
        let mut shared = state.lock().expect("lock");
        shared.received.push(Recorded { method: method.clone(), path: path.clone(), headers, form: form.clone() });
        shared.received_at.push(std::time::Instant::now());
        if method == "GET" && path.contains("/Messages.json") {
            list(&shared, &path)
        } else if let Some(reply) = account(&shared, &method, &path) {
            reply
        } else if let Some(reply) = shared.console.answer(&method, &path, &form) {
            reply
        } else {
            shared.counter += 1;
            let counter = shared.counter;
            let reply = shared.script.pop_front().unwrap_or_else(|| Reply::created(&format!("SM{counter:032x}")));
            if path.ends_with("/Messages.json") {
                remember_created(&mut shared, &reply, &form);
            }
            reply
        }
    };
    tokio::time::sleep(reply.delay).await;
    let mut response = hyper::Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    let body = Bytes::from(reply.body);
    // The whole length is declared, so a client knows a broken body is short.
    response = response.header("content-length", body.len());
    let first = match reply.ending {
        Ending::Whole => body,
        Ending::ResetAfter(n) | Ending::StallAfter(n) => body.slice(..n.min(body.len())),
    };
    Ok(response.body(ScriptedBody { first: Some(first), ending: reply.ending }).expect("response"))
}

/// `GET /2010-04-01/Accounts/{Sid}.json`: a known subaccount as Twilio shows
/// it to its owner (`auth_token` included), else Twilio's 404 (20404).
fn account(shared: &Shared, method: &str, path: &str) -> Option<Reply> {
    let sid = path.strip_prefix("/2010-04-01/Accounts/")?.strip_suffix(".json")?;
    if method != "GET" || sid.contains('/') {
        return None;
    }
    Some(match shared.subaccounts.get(sid) {
        Some((owner, token)) => Reply::json(
            200,
            &serde_json::json!({
                "sid": sid, "owner_account_sid": owner, "auth_token": token, "status": "active",
                "type": "Full", "friendly_name": "a customer", "uri": path,
                "date_created": "Thu, 30 Jul 2015 20:00:00 +0000", "date_updated": "Thu, 30 Jul 2015 20:00:00 +0000",
            })
            .to_string(),
        ),
        None => Reply::error(404, 20404, "The requested resource was not found"),
    })
}

/// Keeps a message the reply says was created, as Twilio's list would show it.
fn remember_created(shared: &mut Shared, reply: &Reply, form: &[(String, String)]) {
    let Ok(created) = serde_json::from_str::<serde_json::Value>(&reply.body) else { return };
    let Some(sid) = created["sid"].as_str().filter(|_| (200..300).contains(&reply.status)) else { return };
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let now = rfc2822(std::time::SystemTime::now());
    shared.created.push(serde_json::json!({
        "sid": sid,
        "status": created["status"].as_str().unwrap_or("queued"),
        "to": field("To"),
        "from": field("From"),
        "messaging_service_sid": field("MessagingServiceSid"),
        "body": field("Body").unwrap_or_default(),
        "num_media": form.iter().filter(|(k, _)| k == "MediaUrl").count().to_string(),
        "num_segments": "1",
        "direction": "outbound-api",
        "date_created": now,
        "date_sent": if field("SendAt").is_some() { serde_json::Value::Null } else { now.into() },
    }));
}

/// `GET …/Messages.json` with Twilio's filters: `To`, `From`, `DateSent>`
/// (on or after; messages without a `date_sent` never pass it), newest first.
fn list(shared: &Shared, path: &str) -> Reply {
    if let Some(status) = shared.lookups_fail {
        return Reply::error(status, 20500, "Internal Server Error");
    }
    let query: Vec<(String, String)> =
        url::Url::parse(&format!("http://fake{path}")).expect("path").query_pairs().into_owned().collect();
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let sent_after = param("DateSent>").map(|value| {
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
            .expect("DateSent> is RFC 3339")
    });
    let messages: Vec<&serde_json::Value> = shared
        .created
        .iter()
        .rev()
        .filter(|m| param("To").is_none_or(|to| m["to"] == to))
        .filter(|m| param("From").is_none_or(|from| m["from"] == from))
        .filter(|m| {
            sent_after.is_none_or(|after| {
                m["date_sent"].as_str().is_some_and(|sent| {
                    let rfc2822 = &time::format_description::well_known::Rfc2822;
                    time::OffsetDateTime::parse(sent, rfc2822).expect("date") >= after
                })
            })
        })
        .collect();
    let page = serde_json::json!({
        "messages": messages, "next_page_uri": null, "page": 0, "page_size": messages.len(),
        "start": 0, "end": messages.len(), "uri": path, "first_page_uri": path, "previous_page_uri": null,
    });
    Reply::json(200, &page.to_string())
}

/// A time as Twilio writes it: RFC 2822 with `+0000`.
fn rfc2822(at: std::time::SystemTime) -> String {
    let at = time::OffsetDateTime::from(at).replace_nanosecond(0).expect("whole seconds");
    at.format(&time::format_description::well_known::Rfc2822).expect("RFC 2822")
}
