//! Connecting to NATS with the configured credentials, and the streams the
//! service needs: created when missing, checked when present.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};

use crate::config::{BusConfig, NatsConfig, StreamRetention, StreamSpec};

/// Connects with the credentials architecture.yaml grants the bus: a token,
/// a user and password, or a creds file's content; TLS files by path.
pub async fn connect(addr: &str, config: &NatsConfig) -> anyhow::Result<async_nats::Client> {
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
    options.connect(addr).await.with_context(|| format!("connecting to nats://{addr}"))
}

/// The stream `spec` asks for, with the bus's retention.
fn desired(spec: &StreamSpec, config: &NatsConfig, retention: Duration) -> stream::Config {
    let (policy, max_age) = match spec.retention {
        StreamRetention::Limits => (stream::RetentionPolicy::Limits, retention),
        // Work-queue messages stay until acknowledged, however long that is.
        StreamRetention::WorkQueue => (stream::RetentionPolicy::WorkQueue, Duration::ZERO),
    };
    stream::Config {
        name: spec.name.clone(),
        subjects: spec.subjects.clone(),
        retention: policy,
        max_age,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
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

/// Creates the configured streams that are missing. One that exists with
/// other settings is reported by name and left as it is: changing a stream
/// under other services is an operator's decision, not a start-up's.
pub async fn ensure_streams(jetstream: &jetstream::Context, bus: &BusConfig) -> anyhow::Result<()> {
    let mut mismatched = Vec::new();
    for spec in &bus.streams {
        let wanted = desired(spec, &bus.nats, bus.retention);
        match jetstream.get_stream(&spec.name).await {
            Ok(mut existing) => {
                let found = existing.info().await.with_context(|| format!("reading stream {}", spec.name))?;
                let differs = differences(&found.config, &wanted);
                if !differs.is_empty() {
                    mismatched.push(format!("stream {}: {}", spec.name, differs.join("; ")));
                }
            }
            Err(error) if is_not_found(&error) => {
                jetstream.create_stream(wanted).await.with_context(|| format!("creating stream {}", spec.name))?;
                tracing::info!(stream = %spec.name, subjects = ?spec.subjects, "stream created");
            }
            Err(error) => return Err(anyhow::anyhow!("looking up stream {}: {error}", spec.name)),
        }
    }
    if mismatched.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "streams exist with other settings than architecture.yaml's (nothing was changed):\n  {}",
            mismatched.join("\n  ")
        )
    }
}
