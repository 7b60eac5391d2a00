//! Connecting to NATS with the configured credentials, and the streams the
//! service needs: created when missing, checked when present.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};

use crate::config::{BusConfig, NatsConfig, Replicas, StreamRetention, StreamSpec};

/// Streams exist with other settings than configured. Never retried: what
/// to change under other services is an operator's decision.
#[derive(Debug, thiserror::Error)]
#[error("streams exist with other settings than architecture.yaml's (nothing was changed):\n  {0}")]
pub struct StreamsDiffer(String);

/// Whether a failure to open the bus may pass by itself (a cluster still
/// forming, a server not up yet), so that waiting makes sense; a refused
/// credential, a TLS setup, a bad address or a streams difference will not.
pub fn may_pass(error: &anyhow::Error) -> bool {
    use async_nats::ConnectErrorKind as Kind;
    let permanent = error.chain().any(|cause| {
        cause.is::<StreamsDiffer>()
            || cause.downcast_ref::<async_nats::ConnectError>().is_some_and(|e| {
                matches!(e.kind(), Kind::Authentication | Kind::AuthorizationViolation | Kind::Tls | Kind::ServerParse)
            })
    });
    !permanent
}

/// The replicas `wanted` means on the server `info` describes: `auto` is 1
/// on a server alone and 3 in a cluster (JetStream's own advice: R3
/// survives the loss of one server). A 2-server cluster, which cannot keep
/// JetStream's meta quorum through a loss anyway, needs an explicit count.
pub fn replicas_for(wanted: Replicas, info: &async_nats::ServerInfo) -> usize {
    match wanted {
        Replicas::Fixed(count) => count,
        Replicas::Auto if info.cluster.as_deref().is_some_and(|name| !name.is_empty()) => 3,
        Replicas::Auto => 1,
    }
}

/// Connects to the first seed that answers, with the credentials
/// architecture.yaml grants the bus: a token, a user and password, or a creds
/// file's content; TLS files by path.
pub async fn connect(seeds: &[String], config: &NatsConfig) -> anyhow::Result<async_nats::Client> {
    let secret = |name: &str| config.secrets.get(name).and_then(Option::as_ref).map(|s| s.reveal().to_owned());
    let variable = |name: &str| config.variables.get(name).cloned();
    let mut options = async_nats::ConnectOptions::new()
        .name(crate::config::SERVICE_NAME)
        .connection_timeout(config.connect_timeout)
        .request_timeout(Some(config.connect_timeout));
    if let Some(token) = secret("NATS_TOKEN") {
        options = options.token(token);
    }
    if let (Some(user), Some(password)) = (variable("NATS_USER"), secret("NATS_PASSWORD")) {
        options = options.user_and_password(user, password);
    }
    if let Some(creds) = secret("NATS_CREDS") {
        // The error would quote the file; say only which setting is wrong.
        options = options.credentials(&creds).map_err(|_| anyhow::anyhow!("NATS_CREDS is not a NATS creds file"))?;
    }
    if let Some(ca) = variable("NATS_TLS_CA") {
        options = options.add_root_certificates(ca.into()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (variable("NATS_TLS_CERT"), variable("NATS_TLS_KEY")) {
        options = options.add_client_certificate(cert.into(), key.into()).require_tls(true);
    }
    // Each seed is a server of its own (the client takes a joined string as
    // one URL); it keeps the servers the cluster announces beside them.
    options.connect(seeds).await.with_context(|| format!("connecting to {}", seeds.join(",")))
}

/// The stream `spec` asks for, with the bus's retention.
fn desired(spec: &StreamSpec, bus: &BusConfig, replicas: usize) -> stream::Config {
    let (policy, max_age) = match spec.retention {
        StreamRetention::Limits => (stream::RetentionPolicy::Limits, bus.retention),
        // Work-queue messages stay until acknowledged, however long that is.
        StreamRetention::WorkQueue => (stream::RetentionPolicy::WorkQueue, Duration::ZERO),
    };
    stream::Config {
        name: spec.name.clone(),
        subjects: spec.subjects.clone(),
        retention: policy,
        max_age,
        num_replicas: replicas,
        duplicate_window: bus.duplicate_window,
        storage: stream::StorageType::File,
        allow_direct: true,
        ..Default::default()
    }
}

/// What differs between a stream as it exists and as configured, by setting.
fn differences(found: &stream::Config, wanted: &stream::Config) -> Vec<String> {
    let mut found_subjects = found.subjects.clone();
    let mut wanted_subjects = wanted.subjects.clone();
    found_subjects.sort();
    wanted_subjects.sort();
    let mut out = Vec::new();
    let mut compare = |name: &str, found: String, wanted: String| {
        if found != wanted {
            out.push(format!("{name} is {found}, configured {wanted}"));
        }
    };
    compare("subjects", format!("{found_subjects:?}"), format!("{wanted_subjects:?}"));
    compare("retention", format!("{:?}", found.retention), format!("{:?}", wanted.retention));
    compare("max_age", format!("{:?}", found.max_age), format!("{:?}", wanted.max_age));
    compare("replicas", found.num_replicas.to_string(), wanted.num_replicas.to_string());
    compare("duplicate_window", format!("{:?}", found.duplicate_window), format!("{:?}", wanted.duplicate_window));
    out
}

fn is_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(e) if e.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// What was found of one configured stream.
enum Found {
    AsConfigured,
    Created,
    Missing,
    Differs(Vec<String>),
}

/// Looks up the stream `wanted` describes; creates it when missing and `create`.
async fn survey(jetstream: &jetstream::Context, wanted: stream::Config, create: bool) -> anyhow::Result<Found> {
    let name = wanted.name.clone();
    match jetstream.get_stream(&name).await {
        Ok(mut existing) => {
            let found = existing.info().await.with_context(|| format!("reading stream {name}"))?;
            let differs = differences(&found.config, &wanted);
            Ok(if differs.is_empty() { Found::AsConfigured } else { Found::Differs(differs) })
        }
        Err(error) if is_not_found(&error) && create => {
            jetstream.create_stream(wanted).await.with_context(|| format!("creating stream {name}"))?;
            Ok(Found::Created)
        }
        Err(error) if is_not_found(&error) => Ok(Found::Missing),
        Err(error) => Err(anyhow::anyhow!("looking up stream {name}: {error}")),
    }
}

/// Creates the configured streams that are missing. One that exists with
/// other settings is reported by name and left as it is: changing a stream
/// under other services is an operator's decision, not a start-up's.
pub async fn ensure_streams(jetstream: &jetstream::Context, bus: &BusConfig, replicas: usize) -> anyhow::Result<()> {
    let mut mismatched = Vec::new();
    for spec in &bus.streams {
        match survey(jetstream, desired(spec, bus, replicas), true).await? {
            Found::Created => {
                tracing::info!(stream = %spec.name, subjects = ?spec.subjects, replicas, "stream created")
            }
            Found::Differs(differs) => mismatched.push(format!("stream {}: {}", spec.name, differs.join("; "))),
            Found::AsConfigured | Found::Missing => {}
        }
    }
    if mismatched.is_empty() { Ok(()) } else { Err(StreamsDiffer(mismatched.join("\n  ")).into()) }
}

/// `check --online`: the server, the replicas chosen for it, and each
/// configured stream as found (nothing is created or changed); one line each.
pub async fn describe(client: &async_nats::Client, bus: &BusConfig) -> anyhow::Result<Vec<String>> {
    let info = client.server_info();
    let replicas = replicas_for(bus.nats.replicas, &info);
    let place = match info.cluster.as_deref().filter(|name| !name.is_empty()) {
        Some(cluster) => format!("server {} of cluster {cluster}", info.server_name),
        None => format!("server {}, alone", info.server_name),
    };
    let mut lines =
        vec![format!("bus {}: {place}; streams with {replicas} replica(s) (replicas: {})", bus.url, bus.nats.replicas)];
    let mut jetstream = jetstream::new(client.clone());
    jetstream.set_timeout(bus.nats.connect_timeout);
    for spec in &bus.streams {
        let line = match survey(&jetstream, desired(spec, bus, replicas), false).await? {
            Found::AsConfigured | Found::Created => "as configured".to_owned(),
            Found::Missing => "missing (serve creates it)".to_owned(),
            Found::Differs(differs) => format!("differs, serve will not start: {}", differs.join("; ")),
        };
        lines.push(format!("stream {}: {line}", spec.name));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a forming cluster answers is waited out; a streams difference,
    /// however wrapped, is not.
    #[test]
    fn only_what_may_pass_is_waited_for() {
        let forming =
            anyhow::anyhow!("creating stream INGRESS: insufficient resources / no suitable peers for placement");
        assert!(may_pass(&forming.context("the bus nats://a:4222")));
        let differs = anyhow::Error::from(StreamsDiffer("stream INGRESS: max_age is 1h, configured 168h".into()));
        assert!(!may_pass(&differs.context("the bus nats://a:4222")));
    }

    #[test]
    fn auto_replicas_fit_the_server() {
        let alone = async_nats::ServerInfo::default();
        let clustered = async_nats::ServerInfo { cluster: Some("nats".into()), ..Default::default() };
        assert_eq!(replicas_for(Replicas::Auto, &alone), 1);
        assert_eq!(replicas_for(Replicas::Auto, &clustered), 3);
        assert_eq!(replicas_for(Replicas::Fixed(2), &clustered), 2);
        assert_eq!(replicas_for(Replicas::Fixed(5), &alone), 5);
    }
}
