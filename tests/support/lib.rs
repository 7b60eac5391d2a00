//! Shared pieces of the harness: a service in a temporary directory with test
//! credentials, an independent X-Twilio-Signature, a plain HTTP client, and a
//! fake Twilio.

pub mod fake_console;
pub mod fake_twilio;
pub mod fixtures;
pub mod nats;
pub mod nats_cluster;
pub mod official;
pub mod otlp;
pub mod outage;
pub mod prism;
pub mod s3;
pub mod schemas;

pub use fixtures::{borrowed, free_addr, minimal_sms};

use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use ingress_egress::config::{self, Env, ServiceConfig};
use ingress_egress::service::RunningService;

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "fedcba9876543210fedcba9876543210";
pub const API_KEY: &str = "SK0123456789abcdef0123456789abcdef";
pub const API_SECRET: &str = "harness-api-secret-0123456789abcd";
pub const CHAT_SERVICE_SID: &str = "IS0123456789abcdef0123456789abcdef";

/// Borrowed name-value pairs as owned ones, as the fake Twilio records a form.
pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Every Twilio secret a harness service has, by name.
pub const TWILIO_SECRETS: [(&str, &str); 5] = [
    ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
    ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
    ("TWILIO_API_KEY", API_KEY),
    ("TWILIO_API_SECRET", API_SECRET),
    ("TWILIO_CHAT_SERVICE_SID", CHAT_SERVICE_SID),
];

/// The repository's architecture.yaml.
pub fn repo_architecture() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../architecture.yaml")).expect("architecture.yaml")
}

/// Logs to the test output, filtered by `RUST_LOG` (errors only by default).
/// Not for the binaries that capture logs themselves.
pub fn init_test_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Where the build put a fixture component.
pub fn fixture(name: &str) -> &'static str {
    ingress_egress::bundled::fixture(name).unwrap_or_else(|| panic!("no fixture {name}"))
}

/// A service definition and environment in a temporary directory.
#[derive(Debug)]
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub env: Env,
    architecture: String,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// The repository's architecture.yaml with every Twilio secret set, both
    /// listeners on free loopback ports and the bus in the temporary directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env = Env::default();
        for (name, value) in TWILIO_SECRETS {
            env.set(name, value);
        }
        env.set("LISTEN_ADDR", "127.0.0.1:0")
            .set("ADMIN_ADDR", "127.0.0.1:0")
            .set("DATA_DIR", dir.path().join("data").to_str().expect("utf-8 path"));
        let mut harness = Self { dir, env, architecture: repo_architecture() };
        // No load balancer routes to a test's service: stop at once.
        harness.set_setting("shutdown_drain_ms", "0");
        harness
    }

    /// Sets an existing `name: value` line of architecture.yaml (a limit, an
    /// egress setting) to `value`; panics when there is no such line.
    pub fn set_setting(&mut self, name: &str, value: &str) -> &mut Self {
        let key = format!(" {name}: ");
        let line = self.architecture.lines().find(|line| line.contains(&key)).unwrap_or_else(|| panic!("no {name}"));
        let indent = &line[..line.find(name).unwrap_or(0)];
        let replacement = format!("{indent}{name}: {value}");
        self.architecture = self.architecture.replacen(line, &replacement, 1);
        self
    }

    /// Changes the architecture text (a grant removed, a connector added).
    pub fn edit_architecture(&mut self, edit: impl FnOnce(String) -> String) -> &mut Self {
        self.architecture = edit(std::mem::take(&mut self.architecture));
        self
    }

    /// Adds the probe fixture as a second connector beside Twilio, with
    /// routes, topics and a secret of its own (`PROBE_KEY`, set).
    pub fn with_probe(&mut self, fixture_name: &str, outbound_hosts: &[&str]) -> &mut Self {
        let path = fixture(fixture_name);
        let hosts = outbound_hosts.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", ");
        self.env.set("PROBE_KEY", PROBE_KEY);
        self.edit_architecture(|text| format!("{text}{}", probe_entry(path, &hosts)))
    }

    pub fn architecture_path(&self) -> PathBuf {
        let path = self.dir.path().join("architecture.yaml");
        std::fs::write(&path, &self.architecture).expect("writing architecture.yaml");
        path
    }

    pub fn config(&self) -> ServiceConfig {
        config::load(&self.architecture_path(), &self.env).expect("valid configuration")
    }

    pub async fn start(&self) -> RunningService {
        ingress_egress::service::start(self.config(), None).await.expect("service starts")
    }

    /// The Twilio connector loaded on its own (no listeners), with its grants.
    pub async fn load_twilio(&self) -> ingress_egress::runtime::Connector {
        let config = self.config();
        let runtime = ingress_egress::runtime::Runtime::new(&config.limits, None).expect("runtime");
        let bus = ingress_egress::bus::open(&config.bus).await.expect("bus");
        let twilio = config.connectors.iter().find(|c| c.name == "twilio").expect("twilio connector");
        let grants = std::sync::Arc::new(ingress_egress::runtime::Grants::new(twilio, bus).expect("grants"));
        let bytes = ingress_egress::bundled::get("twilio").expect("bundled twilio component");
        runtime.load(bytes.to_vec(), grants).await.expect("the component loads")
    }

    /// Points every Twilio REST base URL at `base` (a fake Twilio or Prism).
    pub fn with_twilio_at(&mut self, base: &str) -> &mut Self {
        self.env
            .set("TWILIO_API_BASE_URL", base)
            .set("TWILIO_CONVERSATIONS_BASE_URL", base)
            .set("TWILIO_MESSAGING_BASE_URL", base)
            .set("TWILIO_EVENTS_BASE_URL", base);
        self
    }

    /// The directory of more accounts (`TWILIO_ACCOUNTS_DIR`), in the
    /// temporary directory; it does not exist until an account is added.
    pub fn accounts_dir(&mut self) -> PathBuf {
        let dir = self.dir.path().join("twilio-accounts");
        self.env.set("TWILIO_ACCOUNTS_DIR", dir.to_str().expect("utf-8 path"));
        dir
    }

    /// Adds (or changes) account `sid` in the accounts directory with `files`
    /// (name → content), as Kubernetes mounts a Secret.
    pub fn add_account(&mut self, sid: &str, files: &[(&str, &str)]) -> &mut Self {
        let folder = self.accounts_dir().join(sid);
        std::fs::create_dir_all(&folder).expect("account folder");
        for (name, value) in files {
            std::fs::write(folder.join(name), format!("{value}\n")).expect("account file");
        }
        self
    }

    /// Starts the service on another bus (a failing one, say).
    pub async fn start_with_bus(&self, bus: std::sync::Arc<dyn ingress_egress::bus::Bus>) -> RunningService {
        ingress_egress::service::start(self.config(), Some(bus)).await.expect("service starts")
    }
}

/// The probe's own secret.
pub const PROBE_KEY: &str = "probe-key-0123456789";

/// The probe's entry under `connectors:` in architecture.yaml.
fn probe_entry(path: &str, hosts: &str) -> String {
    format!(
        "      probe:
        component: {path}
        routes: [/probe/]
        secrets:
          PROBE_KEY: {{ required: true, pattern: \"^probe-key-[0-9]+$\" }}
        topics:
          events: ingress.probe.events
          egress: egress.probe
          status: events.probe.status
          deadletter: deadletter.probe
        outbound:
          hosts: [{hosts}]
        egress:
          initial_backoff_ms: 10
        credential_sets:
          dir: probe-tenants
          dir_variable: PROBE_TENANTS_DIR
          values: [PROBE_KEY]
          required: [PROBE_KEY]
        cache:
          max_entries: 100
          fetches_per_second: 1
          fetch_burst: 2
          concurrent_fetches: 1
        variables:
          PROBE_TENANTS_DIR: {{ format: text }}
"
    )
}

/// What the connector answered: its own error kept, a broken call a panic.
pub fn answer<T, E: std::fmt::Debug>(result: Result<T, ingress_egress::runtime::CallFailure<E>>) -> Result<T, E> {
    match result {
        Ok(value) => Ok(value),
        Err(ingress_egress::runtime::CallFailure::Refused(error)) => Err(error),
        Err(other) => panic!("the call failed: {other}"),
    }
}

/// X-Twilio-Signature computed here, independently of the component.
pub fn sign(url: &str, params: &[(&str, &str)]) -> String {
    sign_with(AUTH_TOKEN, url, params)
}

/// [`sign`] with another Auth Token.
pub fn sign_with(auth_token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<_> = params.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Form-encodes parameters.
pub fn form(params: &[(&str, &str)]) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish().into_bytes()
}

/// POSTs to a listener; returns status and body text.
pub async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
    let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let (status, body) =
        ingress_egress::client::post(&format!("http://{addr}"), path, &headers, body).await.expect("request");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// POSTs a form webhook signed for `http://{addr}{path}` (or unsigned, or with `signature`).
pub async fn post_webhook(
    addr: SocketAddr,
    path: &str,
    params: &[(&str, &str)],
    signature: Signature<'_>,
) -> (u16, String) {
    let url = format!("http://{addr}{path}");
    let sig = match signature {
        Signature::Valid => Some(sign(&url, params)),
        Signature::Missing => None,
        Signature::Given(s) => Some(s.to_owned()),
    };
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(sig) = &sig {
        headers.push(("x-twilio-signature", sig.as_str()));
    }
    post(addr, path, &headers, form(params)).await
}

/// How a webhook is signed.
#[derive(Debug, Clone, Copy)]
pub enum Signature<'a> {
    Valid,
    Missing,
    Given(&'a str),
}

/// Every message on `topic`, parsed, each checked against its topic's schema.
pub async fn messages(service: &RunningService, topic: &str) -> Vec<serde_json::Value> {
    let stored = service.state.bus.read(topic, 0, 10_000).await.expect("bus read");
    let messages: Vec<serde_json::Value> =
        stored.iter().map(|m| serde_json::from_slice(&m.payload).expect("JSON on the bus")).collect();
    for message in &messages {
        schemas::assert_valid(topic, message);
    }
    messages
}

/// Waits (bounded) until `topic` holds at least `count` messages; returns them.
pub async fn wait_for_messages(service: &RunningService, topic: &str, count: usize) -> Vec<serde_json::Value> {
    wait_for_messages_within(service, topic, count, std::time::Duration::from_secs(20)).await
}

/// Waits until `topic` holds at least `count` messages or `bound` passes; returns them.
pub async fn wait_for_messages_within(
    service: &RunningService,
    topic: &str,
    count: usize,
    bound: std::time::Duration,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let found = messages(service, topic).await;
        if found.len() >= count || tokio::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until the service on `public` answers `/readyz` with 200:
/// its public address listens (answering 503) from the start of `serve`,
/// before its bus and connectors are there.
pub async fn wait_until_ready(public: SocketAddr) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let ready =
            ingress_egress::client::get(&format!("http://{public}"), "/readyz", std::time::Duration::from_secs(2))
                .await
                .is_ok_and(|(status, _)| status == 200);
        if ready {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{public} was not ready after 60 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until something accepts connections on `addr`.
pub async fn wait_for_listener(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "nothing listens on {addr} after 60 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The harness package's build of the real command line. Cargo builds it
/// beside the test binaries' `deps/` folder for every integration test.
fn cli_binary() -> PathBuf {
    let test_binary = std::env::current_exe().expect("current exe");
    let profile_dir = test_binary.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let binary = profile_dir.join("ingress-egress-under-test");
    assert!(binary.exists(), "{} is missing: it is built with the harness tests", binary.display());
    binary
}

/// Every variable the harness sets, for a child process.
pub const SERVICE_VARS: &[&str] = &[
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_API_KEY",
    "TWILIO_API_SECRET",
    "TWILIO_CHAT_SERVICE_SID",
    "TWILIO_API_BASE_URL",
    "TWILIO_CONVERSATIONS_BASE_URL",
    "TWILIO_MESSAGING_BASE_URL",
    "TWILIO_EVENTS_BASE_URL",
    "TWILIO_MESSAGING_SERVICE_SID",
    "LISTEN_ADDR",
    "ADMIN_ADDR",
    "DATA_DIR",
    "CONNECTOR_TWILIO_COMPONENT",
    "PROBE_KEY",
    "BUS_URL",
    "TWILIO_WEBHOOK_BASE_URL",
    "TWILIO_WEBHOOK_OVERRIDES",
    "TWILIO_WEBHOOK_SHARED_KEYS",
    "ADMIN_TOKEN",
    "METRICS_ADDR",
    "NATS_TOKEN",
    "TWILIO_ACCOUNTS_DIR",
    "TWILIO_SUBACCOUNTS",
    "PROBE_TENANTS_DIR",
    "TWILIO_MEDIA_FETCH",
    "TWILIO_RECONCILE_SECONDS",
    "LOG_FORMAT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
];

impl Harness {
    /// The real command line as a child process, with `args` and an environment
    /// holding only the harness's variables (or only `vars`, when given).
    pub fn command(&self, args: &[&str], vars: Option<&[&str]>) -> std::process::Command {
        let mut command = std::process::Command::new(cli_binary());
        command.env_clear().arg("--architecture").arg(self.architecture_path()).args(args);
        for name in vars.unwrap_or(SERVICE_VARS) {
            if let Some(value) = self.env.get(name) {
                command.env(name, value);
            }
        }
        command
    }

    /// `Bearer <token>` for a `serve` child process of this harness without
    /// ADMIN_TOKEN: the token it wrote to its DATA_DIR.
    pub fn admin_bearer(&self) -> String {
        let data_dir = std::path::Path::new(self.env.get("DATA_DIR").expect("DATA_DIR"));
        let token = config::admin_token::read(data_dir).expect("readable").expect("serve wrote its admin token");
        format!("Bearer {}", token.reveal())
    }

    /// `serve` as a child process on fresh loopback ports; returns once it listens.
    pub async fn spawn_serve(&mut self) -> (std::process::Child, SocketAddr, SocketAddr) {
        self.spawn_serve_with(std::process::Stdio::null()).await
    }

    /// [`Self::spawn_serve`], its log (stderr) written to `log`.
    pub async fn spawn_serve_logging(
        &mut self,
        log: &std::path::Path,
    ) -> (std::process::Child, SocketAddr, SocketAddr) {
        let file = std::fs::File::create(log).expect("the log file");
        self.spawn_serve_with(file.into()).await
    }

    async fn spawn_serve_with(&mut self, stderr: std::process::Stdio) -> (std::process::Child, SocketAddr, SocketAddr) {
        let (public, admin) = (free_addr(), free_addr());
        self.env.set("LISTEN_ADDR", public.to_string()).set("ADMIN_ADDR", admin.to_string());
        let child = self
            .command(&["serve"], None)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawning serve");
        wait_for_listener(public).await;
        wait_for_listener(admin).await;
        (child, public, admin)
    }
}

/// The value of the first sample in Prometheus text `metrics` whose name and
/// labels start with `series` (`name` or `name{label="value"`); 0 when absent.
pub fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|line| line.starts_with(series) && !line.starts_with('#'))
        .and_then(|line| line.rsplit(' ').next())
        .map_or(0.0, |value| value.parse().expect("a number"))
}

/// A service whose egress sends to `twilio_base` and retries quickly.
pub fn fast_retry_harness(twilio_base: &str) -> Harness {
    let mut harness = Harness::new();
    harness.with_twilio_at(twilio_base).set_setting("initial_backoff_ms", "20");
    harness
}

/// `Bearer <token>`: the admin credential of a service started in this
/// process (ADMIN_TOKEN, or the one it generated in its data directory).
pub fn admin_bearer(service: &RunningService) -> String {
    let token = service.state.config.server.admin_token.as_ref().expect("a running service has an admin token");
    format!("Bearer {}", token.reveal())
}

/// GETs an admin route of `service` with its credential.
pub async fn admin_get(service: &RunningService, path: &str) -> (u16, String) {
    get_with(service.admin_addr, path, &[("authorization", &admin_bearer(service))]).await
}

/// POSTs to an admin route of `service` with its credential.
pub async fn admin_post(
    service: &RunningService,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String) {
    let bearer = admin_bearer(service);
    let headers: Vec<(&str, &str)> = headers.iter().copied().chain([("authorization", bearer.as_str())]).collect();
    post(service.admin_addr, path, &headers, body).await
}

/// Enqueues an egress message (JSON) through the admin API; returns its id.
pub async fn enqueue(service: &RunningService, body: &str) -> String {
    let (status, answer) =
        admin_post(service, "/v1/messages", &[("content-type", "application/json")], body.as_bytes().to_vec()).await;
    assert_eq!(status, 202, "{answer}");
    serde_json::from_str::<serde_json::Value>(&answer).expect("JSON")["id"].as_str().expect("an id").to_owned()
}

/// GETs a path; returns status and body text.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    get_with(addr, path, &[]).await
}

/// GETs a path with `headers`; returns status and body text.
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    bodiless(addr, hyper::Method::GET, path, headers).await
}

/// A request without a body (GET, PUT of nothing); returns status and body text.
pub async fn bodiless(addr: SocketAddr, method: hyper::Method, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(connection);
    let mut request = hyper::Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(http_body_util::Empty::<bytes::Bytes>::new()).expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Posts a correctly signed minimal SMS webhook; returns the status.
pub async fn signed_sms(addr: SocketAddr, sid: &str) -> u16 {
    let params = minimal_sms(sid, "hello");
    post_webhook(addr, "/twilio/messaging", &borrowed(&params), Signature::Valid).await.0
}
