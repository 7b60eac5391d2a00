//! A local stand-in for Twilio's REST API: records every request exactly and
//! answers with scripted replies (201 by default).

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
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
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

    /// Queues replies; once they are used up every request gets a fresh 201.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.lock().expect("lock").script.extend(replies);
    }

    pub fn received(&self) -> Vec<Recorded> {
        self.shared.lock().expect("lock").received.clone()
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
    let form = form_urlencoded::parse(&body).into_owned().collect();
    let reply = {
        let mut shared = state.lock().expect("lock");
        shared.received.push(Recorded { method, path, headers, form });
        shared.received_at.push(std::time::Instant::now());
        shared.counter += 1;
        let counter = shared.counter;
        shared.script.pop_front().unwrap_or_else(|| Reply::created(&format!("SM{counter:032x}")))
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
