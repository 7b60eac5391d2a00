//! The native baselines: the service's ingress work done in-process by plain
//! Rust, without the sandbox. Verify `X-Twilio-Signature`, parse the form,
//! drop a repeated `MessageSid`, build the platform's `IngressEnvelope` (the
//! host's own serde type) and keep it in a [`Sink`] before answering 200.

use std::borrow::Cow;
use std::collections::HashSet;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use ingress_egress::bus::Bus;
use ingress_egress::messages::{Attributes, Channel, IngressEnvelope};
use subtle::ConstantTimeEq;

/// The service's answer to a message webhook.
const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

/// Where a baseline keeps each envelope before its 200.
#[derive(Debug, Clone)]
pub enum Sink {
    /// The service's own bus: durable as the service is.
    Bus(Arc<dyn Bus>),
    /// A file, appended by one writer thread in batches: never synced, or
    /// `fdatasync`'d after each batch (the floor of any durable store).
    File(FileWriter),
    /// The newest envelopes in memory, nothing durable.
    Memory(Arc<Mutex<std::collections::VecDeque<Vec<u8>>>>),
}

/// A handle on a file writer thread, which writes what waits in one batch.
#[derive(Debug, Clone)]
pub struct FileWriter(std::sync::mpsc::Sender<(Vec<u8>, tokio::sync::oneshot::Sender<()>)>);

impl FileWriter {
    /// Starts the writer thread on `path`; with `sync`, each batch is on
    /// the disk (`fdatasync`) before its requests are answered.
    pub fn start(path: &std::path::Path, sync: bool) -> std::io::Result<Self> {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let (sender, receiver) = std::sync::mpsc::channel::<(Vec<u8>, tokio::sync::oneshot::Sender<()>)>();
        std::thread::spawn(move || {
            while let Ok(first) = receiver.recv() {
                let batch: Vec<_> = std::iter::once(first).chain(receiver.try_iter()).collect();
                let mut buffer = Vec::with_capacity(batch.iter().map(|(line, _)| line.len() + 1).sum());
                for (line, _) in &batch {
                    buffer.extend_from_slice(line);
                    buffer.push(b'\n');
                }
                if file.write_all(&buffer).and_then(|()| if sync { file.sync_data() } else { Ok(()) }).is_err() {
                    return; // The answers' senders drop: every waiting request fails.
                }
                for (_, done) in batch {
                    let _ = done.send(());
                }
            }
        });
        Ok(Self(sender))
    }

    async fn append(&self, line: Vec<u8>) -> bool {
        let (done, written) = tokio::sync::oneshot::channel();
        self.0.send((line, done)).is_ok() && written.await.is_ok()
    }
}

/// One baseline server's state.
#[derive(Debug)]
pub struct Baseline {
    auth_token: String,
    sink: Sink,
    seen: Mutex<HashSet<String>>,
}

impl Baseline {
    pub fn new(auth_token: &str, sink: Sink) -> Arc<Self> {
        Arc::new(Self { auth_token: auth_token.to_owned(), sink, seen: Mutex::default() })
    }

    /// Serves `POST /twilio/messaging` on `listener` until the process ends.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        serve(listener, move |request| self.clone().handle(request)).await;
    }

    async fn handle(
        self: Arc<Self>,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
        let url = match request.headers().get("host").and_then(|h| h.to_str().ok()) {
            Some(host) if request.uri().path() == "/twilio/messaging" => format!("http://{host}/twilio/messaging"),
            _ => return Ok(answer(404, "not found")),
        };
        let signature = request.headers().get("x-twilio-signature").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        // Borrowed where no escape needed decoding, as the connector reads a form.
        let params: Vec<(Cow<str>, Cow<str>)> = form_urlencoded::parse(&body).collect();
        let Some(signature) = signature else { return Ok(answer(400, "missing signature")) };
        if !self.signed(&url, &params, &signature) {
            return Ok(answer(403, "forged"));
        }
        let Some(sid) = params.iter().find(|(k, _)| k == "MessageSid").map(|(_, v)| v.to_string()) else {
            return Ok(answer(400, "no MessageSid"));
        };
        if !self.seen.lock().expect("seen").insert(sid.clone()) {
            return Ok(twiml()); // A repeat: already kept.
        }
        let envelope = serde_json::to_vec(&envelope(&sid, params)).expect("JSON");
        Ok(if self.keep(&sid, envelope).await { twiml() } else { answer(503, "not kept") })
    }

    /// Twilio's signature, computed by the connector's own code (natively).
    fn signed(&self, url: &str, params: &[(Cow<str>, Cow<str>)], signature: &str) -> bool {
        let expected = twilio_connector::ingress::signature::compute(self.auth_token.as_bytes(), url, params);
        expected.as_bytes().ct_eq(signature.as_bytes()).into()
    }

    async fn keep(&self, sid: &str, envelope: Vec<u8>) -> bool {
        match &self.sink {
            Sink::Bus(bus) => bus.publish("ingress.twilio.messaging", Some(sid), envelope.into(), None).await.is_ok(),
            Sink::File(writer) => writer.append(envelope).await,
            Sink::Memory(queue) => {
                let mut queue = queue.lock().expect("queue");
                if queue.len() >= 100_000 {
                    queue.pop_front();
                }
                queue.push_back(envelope);
                true
            }
        }
    }
}

/// The envelope the service publishes for an inbound SMS.
fn envelope(sid: &str, params: Vec<(Cow<str>, Cow<str>)>) -> IngressEnvelope {
    let field = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.to_string());
    IngressEnvelope {
        id: uuid::Uuid::new_v4().to_string(),
        source: "twilio".into(),
        channel: Channel::Sms,
        provider_message_id: sid.to_owned(),
        account_sid: field("AccountSid").unwrap_or_default(),
        conversation_sid: None,
        from: field("From").unwrap_or_default(),
        to: field("To"),
        body: field("Body").unwrap_or_default(),
        media: Vec::new(),
        segments: field("NumSegments").and_then(|n| n.parse().ok()).unwrap_or(1),
        received_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .expect("RFC 3339"),
        attributes: Attributes(params.into_iter().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()),
        metadata: None,
        profile: None,
        location: None,
        button: None,
        reply_to: None,
        referral: None,
    }
}

fn twiml() -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .header("content-type", "text/xml")
        .body(Full::new(Bytes::from(EMPTY_TWIML)))
        .expect("response")
}

fn answer(status: u16, body: &'static str) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder().status(status).body(Full::new(Bytes::from(body))).expect("response")
}

/// Serves HTTP/1 on `listener` with `handle` until the process ends: the
/// one accept loop of the benchmark's servers.
pub async fn serve<F, Fut>(listener: tokio::net::TcpListener, handle: F)
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<hyper::Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), hyper::service::service_fn(handle))
                .await;
        });
    }
}

/// Binds `addr` and serves `baseline` there in the background; the address.
pub async fn start(baseline: Arc<Baseline>, addr: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let bound = listener.local_addr().expect("addr");
    tokio::spawn(baseline.serve(listener));
    bound
}
