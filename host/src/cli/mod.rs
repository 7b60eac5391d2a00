//! The `ingress-egress` command line.

mod wiring;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::{self, ConfigError, Env, ServiceConfig};
use crate::connectors::{ConnectorSlot, Connectors};
use crate::messages::EgressMessage;
use crate::runtime::{CallFailure, Runtime};
use crate::telemetry::{self, LogFormat};

/// Messaging channels for the platform bus, each a sandboxed WebAssembly
/// connector.
///
/// Every command reads architecture.yaml and the same environment as `serve`
/// (secrets from NAME, NAME_FILE or the secrets directory).
#[derive(Debug, Parser)]
#[command(name = "ingress-egress", version, about, long_about, after_help = CONNECTOR_COMMANDS)]
pub struct Cli {
    /// The service definitions.
    #[arg(long, global = true, default_value = "architecture.yaml", env = "ARCHITECTURE")]
    pub architecture: PathBuf,
    /// KEY=VALUE lines read as environment variables (the real environment wins).
    #[arg(long, global = true)]
    pub env_file: Option<PathBuf>,
    /// How log lines are written (stderr).
    #[arg(long, global = true, value_enum, default_value = "human", env = "LOG_FORMAT")]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands a connector brings, listed under the built-in ones.
const CONNECTOR_COMMANDS: &str = "\
Connector commands (a connector named in architecture.yaml, e.g. twilio):
  <CONNECTOR> wire --public-url URL [--dry-run]  Point the provider's webhooks at this service
  <CONNECTOR> status [--public-url URL]          Show where they point now, and what will not verify";

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: webhooks on LISTEN_ADDR, admin on ADMIN_ADDR, egress from the bus.
    Serve,
    /// Validate architecture.yaml and the environment; name what is missing or malformed.
    Check(CheckArgs),
    /// Print an access token for a connector's client SDKs (e.g. Twilio Conversations).
    Token(TokenArgs),
    /// Publish one egress message on the bus (the running service sends it).
    Send(SendArgs),
    /// Follow a bus topic, one JSON message a line.
    Tail(TailArgs),
    /// Post a correctly signed webhook to a running service.
    Simulate(SimulateArgs),
    /// Ask a running service to hot-swap its connector(s) from their component files.
    Reload(ReloadArgs),
    /// Ask a running service to cancel a scheduled message (by the provider's id, e.g. SM…).
    Cancel(CancelArgs),
    /// Send dead letters again, once fixed what made them fail (never those whose recipient opted out).
    Redrive(crate::egress::redrive::RedriveRequest),
    /// Exit 0 when the service answers GET /healthz (a container's health check: no shell or curl needed).
    Health(HealthArgs),
    /// `<CONNECTOR> wire|status`: point the provider's webhooks at this service, or show where they point
    /// (e.g. `twilio wire --public-url https://hooks.example.com --dry-run`; `twilio status`).
    #[command(external_subcommand)]
    Connector(Vec<String>),
}

/// `check`: the configuration, and with `--online` the bus as `serve` would find it.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also connect to the bus: on NATS, the replicas `serve` would choose and each stream as found (nothing changes).
    #[arg(long)]
    pub online: bool,
}

/// `cancel`: cancel a scheduled message through a running service.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The provider's message id (Twilio: SM…).
    #[arg(long)]
    pub sid: String,
    /// The connector that sent it (default: the only one enabled).
    #[arg(long)]
    pub connector: Option<String>,
    /// The admin listener (default: ADMIN_ADDR).
    #[arg(long)]
    pub admin_url: Option<String>,
}

/// `health`: ask a running service whether it is alive.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Where the service listens (default: http://LISTEN_ADDR, 0.0.0.0 as 127.0.0.1).
    #[arg(long)]
    pub url: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
}

/// `reload`: swap connectors in a running service.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// Only this connector (default: all).
    #[arg(long)]
    pub connector: Option<String>,
    /// The admin listener (default: ADMIN_ADDR).
    #[arg(long)]
    pub admin_url: Option<String>,
}

/// `token`: an access token for the Conversations SDK.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Who the token is for (default: the connector's own identity).
    #[arg(long)]
    pub identity: Option<String>,
    /// Lifetime in seconds (1 to 86400; default 3600).
    #[arg(long)]
    pub ttl: Option<u32>,
    /// The provider account the token is for (default: the connector's default account).
    #[arg(long)]
    pub account: Option<String>,
    /// The connector to ask (default: the only one enabled).
    #[arg(long)]
    pub connector: Option<String>,
}

/// `send`: enqueue one egress message.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Recipient, E.164 (`+14155550100`) or `whatsapp:+…`.
    #[arg(long, conflicts_with = "conversation", required_unless_present = "conversation")]
    pub to: Option<String>,
    /// Send into this conversation (`CH…`) instead.
    #[arg(long)]
    pub conversation: Option<String>,
    /// The text.
    #[arg(long)]
    pub body: Option<String>,
    /// A media URL (repeat for several, up to 10).
    #[arg(long = "media-url")]
    pub media_urls: Vec<String>,
    /// The sender (overrides the connector's default).
    #[arg(long)]
    pub from: Option<String>,
    /// A sender pool such as a Messaging Service (overrides the default).
    #[arg(long)]
    pub messaging_service_sid: Option<String>,
    /// Your own id for the message (default: a new UUID); status events name it.
    #[arg(long)]
    pub id: Option<String>,
    /// The provider account that sends it (default: the connector's default account).
    #[arg(long)]
    pub account: Option<String>,
    /// Which connector; the only one when absent.
    #[arg(long)]
    pub connector: Option<String>,
}

/// `tail`: follow a topic of the bus.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The topic, e.g. ingress.twilio.messaging or events.twilio.status.
    #[arg(long)]
    pub topic: String,
    /// Replay what the bus retains before following.
    #[arg(long)]
    pub from_start: bool,
    /// Stop after this many messages.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Stop after this many seconds without a new message.
    #[arg(long)]
    pub idle_timeout: Option<u64>,
    /// Print each message with its headers (its W3C trace context):
    /// `{"headers":{"traceparent":"00-…"},"message":{…}}`.
    #[arg(long)]
    pub headers: bool,
}

/// `simulate`: post a signed sample webhook to a running service.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// sms, rcs, location, button (WhatsApp), status, conversation or event-streams (a batch;
    /// with --status, a status event too).
    pub kind: String,
    /// The sender of the sample message.
    #[arg(long)]
    pub from: Option<String>,
    /// The recipient of the sample message.
    #[arg(long)]
    pub to: Option<String>,
    /// The sample message's text.
    #[arg(long)]
    pub body: Option<String>,
    /// Media attached to the sample message.
    #[arg(long = "media-url")]
    pub media_urls: Vec<String>,
    /// For `status`: the status to report (default delivered).
    #[arg(long)]
    pub status: Option<String>,
    /// For `status`: the provider's error code.
    #[arg(long)]
    pub error_code: Option<String>,
    /// For `status`: the egress message id the callback is about.
    #[arg(long)]
    pub egress_id: Option<String>,
    /// Reuse a message sid (to see de-duplication).
    #[arg(long)]
    pub message_sid: Option<String>,
    /// For `conversation`: the conversation sid.
    #[arg(long)]
    pub conversation: Option<String>,
    /// Where the service listens (default: http://LISTEN_ADDR, 0.0.0.0 as 127.0.0.1).
    #[arg(long)]
    pub url: Option<String>,
    /// Which connector; the only one when absent.
    #[arg(long)]
    pub connector: Option<String>,
}

/// Runs the command line; the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Only `serve` exports traces: the other commands are short and their own.
    let export = match cli.command {
        Command::Serve => telemetry::ExportSettings::from_env(|name| std::env::var(name).ok()),
        _ => Ok(None),
    };
    let traces = match export.and_then(|export| telemetry::init(cli.log_format, export.as_ref())) {
        Ok(traces) => traces,
        Err(e) => return fail(e.into()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    if let Some(traces) = traces {
        traces.flush_and_stop();
    }
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn fail(error: anyhow::Error) -> std::process::ExitCode {
    eprintln!("error: {error:#}");
    std::process::ExitCode::FAILURE
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut env = Env::from_process();
    if let Some(path) = &cli.env_file {
        env = Env::from_dotenv_file(path)?.merged_under(env);
    }
    if let Command::Check(args) = &cli.command {
        let config = check(&cli.architecture, &env)?;
        return if args.online { check_bus(&config).await } else { Ok(()) };
    }
    if let Command::Connector(words) = &cli.command {
        // Its usage, and a mistyped command, come before any missing secret.
        let Some(invocation) = wiring::parse(&cli.architecture, words)? else { return Ok(()) };
        let config = config::load_for(&cli.architecture, &env, config::Secrets::Required)?;
        return wiring::run(config, invocation).await;
    }
    let secrets = match cli.command {
        Command::Tail(_)
        | Command::Reload(_)
        | Command::Send(_)
        | Command::Cancel(_)
        | Command::Health(_)
        | Command::Redrive(_) => config::Secrets::NotNeeded,
        _ => config::Secrets::Required,
    };
    let config = config::load_for(&cli.architecture, &env, secrets)?;
    match cli.command {
        // Answered above, before the configuration's secrets are needed.
        Command::Check(_) | Command::Connector(_) => Ok(()),
        Command::Serve => crate::service::run(config).await,
        Command::Token(args) => token(config, args).await,
        Command::Send(args) => send(config, args).await,
        Command::Tail(args) => tail(config, args).await,
        Command::Simulate(args) => simulate(config, args).await,
        Command::Reload(args) => reload(config, args).await,
        Command::Cancel(args) => cancel(config, args).await,
        Command::Health(args) => health(config, args).await,
        Command::Redrive(args) => redrive(config, args).await,
    }
}

/// `check --online`: the bus as `serve` would find it.
async fn check_bus(config: &ServiceConfig) -> anyhow::Result<()> {
    match &config.bus.url {
        config::BusUrl::Nats(seeds) => {
            for line in crate::bus::nats::NatsBus::describe(seeds, &config.bus).await? {
                println!("{line}");
            }
        }
        config::BusUrl::Sqlite(_) => {
            crate::bus::open(&config.bus).await?;
            println!("bus {}: the embedded bus, one host", config.bus.url);
        }
    }
    Ok(())
}

/// Prints what `config` holds, or every problem; the configuration when valid.
fn check(path: &std::path::Path, env: &Env) -> anyhow::Result<ServiceConfig> {
    match config::load(path, env) {
        Ok(config) => {
            println!("{}: ok", path.display());
            for connector in &config.connectors {
                match (connector.enabled, &connector.enabled_by) {
                    (true, _) => println!("connector {}: enabled ({})", connector.name, connector.component),
                    (false, Some(var)) => println!("connector {}: disabled by {var}", connector.name),
                    (false, None) => println!("connector {}: disabled", connector.name),
                }
            }
            check_credential_sets(&config)?;
            match telemetry::ExportSettings::from_env(|name| std::env::var(name).ok())? {
                Some(export) => println!("traces: {export}"),
                None => println!("traces: not exported (no OTEL_EXPORTER_OTLP_ENDPOINT)"),
            }
            Ok(config)
        }
        Err(ConfigError::Invalid(problems)) => {
            for problem in &problems {
                println!("{problem}");
            }
            anyhow::bail!("{}: {} problem(s)", path.display(), problems.len())
        }
        Err(e) => Err(e.into()),
    }
}

/// Lists each enabled connector's credential sets by name (never a value),
/// and fails naming every malformed folder by path and setting.
fn check_credential_sets(config: &ServiceConfig) -> anyhow::Result<()> {
    let mut problems = 0;
    for connector in config.enabled_connectors() {
        let Some(sets_config) = &connector.credential_sets else { continue };
        let sets = crate::tenancy::CredentialSets::load(sets_config.clone());
        let names = sets.names();
        println!("connector {}: {} credential set(s) in {}", connector.name, names.len(), sets.dir().display());
        for name in names {
            println!("  {name}");
        }
        for problem in sets.summary().problems {
            println!("{problem}");
            problems += 1;
        }
    }
    if problems > 0 {
        anyhow::bail!("{problems} credential set problem(s); the other sets are usable");
    }
    Ok(())
}

/// Loads the connectors in this process, for commands that call one directly.
async fn local_connectors(config: &ServiceConfig) -> anyhow::Result<Connectors> {
    let bus = crate::bus::open(&config.bus).await?;
    let runtime = Runtime::new(&config.limits, Some(config.data_dir.join("compile-cache")))?;
    Connectors::load(config, runtime, bus).await
}

fn pick<'a>(connectors: &'a Connectors, name: Option<&str>) -> anyhow::Result<&'a Arc<ConnectorSlot>> {
    connectors.pick(name).map_err(|e| anyhow::anyhow!("{e} (with --connector)"))
}

/// A refused call's own reason, or what went wrong calling.
fn refusal<E: std::fmt::Debug>(failure: CallFailure<E>, reason: impl FnOnce(E) -> String) -> anyhow::Error {
    match failure {
        CallFailure::Refused(e) => anyhow::anyhow!(reason(e)),
        other => anyhow::anyhow!(other.to_string()),
    }
}

async fn token(config: ServiceConfig, args: TokenArgs) -> anyhow::Result<()> {
    use crate::runtime::bindings::{TokenError, TokenRequest};
    let connectors = local_connectors(&config).await?;
    let slot = pick(&connectors, args.connector.as_deref())?;
    let request = TokenRequest { identity: args.identity, ttl_seconds: args.ttl, account: args.account };
    let token = slot.current().issue_token(&request).await.map_err(|failure| {
        refusal(failure, |e| match e {
            TokenError::InvalidRequest(reason) => format!("invalid request: {reason}"),
            TokenError::NotConfigured(reason) => format!("not configured: {reason}"),
        })
    })?;
    println!("{}", token.jwt);
    Ok(())
}

async fn send(config: ServiceConfig, args: SendArgs) -> anyhow::Result<()> {
    let connectors = local_connectors(&config).await?;
    let slot = pick(&connectors, args.connector.as_deref())?;
    let message = EgressMessage {
        id: args.id,
        to: args.to,
        conversation_sid: args.conversation,
        body: args.body,
        media_urls: args.media_urls,
        from: args.from,
        messaging_service_sid: args.messaging_service_sid,
        status_callback: None,
        attributes: None,
        template: None,
        send_at: None,
        validity_seconds: None,
        options: Default::default(),
        account_sid: args.account,
        redriven_from: None,
    };
    let id = crate::egress::enqueue(slot, message, None).await?;
    println!("{id}");
    Ok(())
}

async fn tail(config: ServiceConfig, args: TailArgs) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    use std::io::Write as _;
    let bus = crate::bus::open(&config.bus).await?;
    let cursor = if args.from_start { 0 } else { bus.last_seq(&args.topic).await? };
    let batches = crate::bus::follow(bus, args.topic.clone(), cursor);
    let mut batches = std::pin::pin!(batches);
    let idle = args.idle_timeout.map_or(Duration::MAX, Duration::from_secs);
    let mut printed = 0usize;
    while let Ok(Some(batch)) = tokio::time::timeout(idle, batches.next()).await {
        let mut out = std::io::stdout().lock();
        for message in batch? {
            if args.headers {
                out.write_all(&message.with_headers())?;
            } else {
                out.write_all(&message.payload)?;
            }
            out.write_all(b"\n")?;
            printed += 1;
            if args.limit.is_some_and(|limit| printed >= limit) {
                out.flush()?;
                return Ok(());
            }
        }
        out.flush()?;
    }
    Ok(())
}

async fn simulate(config: ServiceConfig, args: SimulateArgs) -> anyhow::Result<()> {
    let base_url = args.url.clone().unwrap_or_else(|| format!("http://{}", loopback(config.server.listen_addr)));
    let mut options: Vec<(String, String)> = Vec::new();
    let mut add = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            options.push((k.to_owned(), v.clone()));
        }
    };
    add("from", &args.from);
    add("to", &args.to);
    add("body", &args.body);
    add("status", &args.status);
    add("error-code", &args.error_code);
    add("egress-id", &args.egress_id);
    add("message-sid", &args.message_sid);
    add("conversation", &args.conversation);
    for url in &args.media_urls {
        options.push(("media-url".to_owned(), url.clone()));
    }
    let connectors = local_connectors(&config).await?;
    let slot = pick(&connectors, args.connector.as_deref())?;
    let simulated = slot
        .current()
        .simulate_webhook(&args.kind, &options, &base_url)
        .await
        .map_err(|failure| refusal(failure, |reason| reason))?;
    let (status, body) = crate::client::post(&base_url, &simulated.path_with_query, &simulated.headers, simulated.body)
        .await
        .with_context(|| format!("posting to {base_url}"))?;
    println!("{status} {}", String::from_utf8_lossy(&body).trim());
    if status >= 300 {
        anyhow::bail!("the service answered {status}");
    }
    Ok(())
}

async fn reload(config: ServiceConfig, args: ReloadArgs) -> anyhow::Result<()> {
    let path = format!("/admin/reload{}", connector_query(args.connector.as_deref()));
    let (status, body) = admin_post(&config, args.admin_url, &path).await?;
    println!("{}", String::from_utf8_lossy(&body).trim());
    if status >= 300 {
        anyhow::bail!("reload refused ({status})");
    }
    Ok(())
}

async fn cancel(config: ServiceConfig, args: CancelArgs) -> anyhow::Result<()> {
    let sid = url::form_urlencoded::byte_serialize(args.sid.as_bytes()).collect::<String>();
    let path = format!("/v1/messages/{sid}/cancel{}", connector_query(args.connector.as_deref()));
    let (status, body) = admin_post(&config, args.admin_url, &path).await?;
    println!("{}", String::from_utf8_lossy(&body).trim());
    if status >= 300 {
        anyhow::bail!("not canceled ({status})");
    }
    Ok(())
}

async fn redrive(config: ServiceConfig, request: crate::egress::redrive::RedriveRequest) -> anyhow::Result<()> {
    use crate::egress::redrive;
    let egress_topic = redrive::egress_topic_of(&config.connectors, &request.topic)?.to_owned();
    let bus = crate::bus::open(&config.bus).await?;
    let report = redrive::redrive(bus.as_ref(), &egress_topic, &request).await?;
    let verb = if report.dry_run { "would be sent again" } else { "sent again" };
    println!(
        "{} dead letter(s) read on {}; {} {verb} on {egress_topic}",
        report.examined, request.topic, report.redriven
    );
    println!("  already sent again: {}", report.already_redriven);
    println!("  opted out (never sent again): {}", report.opted_out);
    println!("  outcome unknown, maybe sent (--include-unknown sends them): {}", report.maybe_sent);
    println!("  outside --since/--error-class: {}", report.not_matching);
    println!("  unreadable: {}", report.unreadable);
    Ok(())
}

async fn health(config: ServiceConfig, args: HealthArgs) -> anyhow::Result<()> {
    let base = args.url.unwrap_or_else(|| format!("http://{}", loopback(config.server.listen_addr)));
    let (status, body) = crate::client::get(&base, "/healthz", Duration::from_secs(args.timeout))
        .await
        .with_context(|| format!("asking {base}"))?;
    println!("{status} {}", String::from_utf8_lossy(&body).trim());
    anyhow::ensure!(status == 200, "not healthy ({status})");
    Ok(())
}

/// `?connector=NAME`, or nothing.
fn connector_query(connector: Option<&str>) -> String {
    connector.map_or_else(String::new, |name| {
        format!("?connector={}", url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>())
    })
}

/// POSTs to the running service's admin listener (`admin_url`, else
/// ADMIN_ADDR), with ADMIN_TOKEN, else the token `serve` wrote to DATA_DIR.
async fn admin_post(
    config: &ServiceConfig,
    admin_url: Option<String>,
    path: &str,
) -> anyhow::Result<(u16, bytes::Bytes)> {
    let base = admin_url.unwrap_or_else(|| format!("http://{}", loopback(config.server.admin_addr)));
    let token = match &config.server.admin_token {
        Some(token) => Some(token.clone()),
        None => config::admin_token::read(&config.data_dir)?,
    };
    let headers: Vec<(String, String)> =
        token.iter().map(|token| ("authorization".to_owned(), format!("Bearer {}", token.reveal()))).collect();
    crate::client::post(&base, path, &headers, Vec::new()).await.with_context(|| format!("asking {base}"))
}

/// An address to connect to: a listener on 0.0.0.0 is reached on 127.0.0.1.
fn loopback(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() { std::net::SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr }
}
