//! A connector's blob store (`blobs:`): `DATA_DIR/media`, or an S3-compatible
//! bucket with its keys.

use std::path::{Path, PathBuf};

use super::{Problems, Secret, SecretSource, read_secret, schema};

/// A granted blob store: content-addressed blobs in `place`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobsConfig {
    /// Where the blobs are kept.
    pub place: BlobPlace,
    /// The largest blob it takes.
    pub max_bytes: u64,
}

/// Where a blob store keeps its blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobPlace {
    /// Files under `DATA_DIR/media`.
    Dir(PathBuf),
    /// Objects in an S3-compatible bucket (`blobs.s3`).
    Bucket(BucketConfig),
}

/// An S3-compatible bucket (`blobs.s3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketConfig {
    /// The bucket's name.
    pub bucket: String,
    /// `https://…` of an S3-compatible service; none means AWS S3 itself.
    pub endpoint: Option<String>,
    /// Its region (`us-east-1` unless set).
    pub region: String,
    /// Keys start `prefix/` (none when empty).
    pub prefix: String,
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, when set; without
    /// them, the process environment's role (web identity, container, instance).
    pub credentials: Option<BucketCredentials>,
}

/// Static keys for a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketCredentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Secret,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Secret,
    /// `AWS_SESSION_TOKEN`, for temporary keys.
    pub session_token: Option<Secret>,
}

impl BlobsConfig {
    /// Twilio's own limit on an MMS: 5 MB.
    pub const DEFAULT_MAX_BYTES: u64 = 5 * 1024 * 1024;
}

/// A connector's blob store: its bucket, or `DATA_DIR/media`, shared (blobs
/// are named by their content, so connectors cannot overwrite each other's).
pub(super) fn resolve(
    name: &str,
    def: schema::BlobsDef,
    data_dir: &Path,
    secret_source: Option<SecretSource<'_>>,
    problems: &mut Problems,
) -> BlobsConfig {
    let max_bytes = problems.positive(format!("connectors.{name}.blobs.max_bytes"), def.max_bytes);
    let place = match def.s3 {
        Some(s3) => {
            BlobPlace::Bucket(resolve_bucket(&format!("connectors.{name}.blobs.s3"), s3, secret_source, problems))
        }
        None => BlobPlace::Dir(data_dir.join("media")),
    };
    BlobsConfig { place, max_bytes: max_bytes.unwrap_or(BlobsConfig::DEFAULT_MAX_BYTES) }
}

/// A bucket's settings, and its keys when the command needs secrets.
fn resolve_bucket(
    at: &str,
    def: schema::S3Def,
    secret_source: Option<SecretSource<'_>>,
    problems: &mut Problems,
) -> BucketConfig {
    if def.bucket.is_empty() {
        problems.add(format!("{at}.bucket"), "a bucket name is needed");
    }
    if let Some(endpoint) = &def.endpoint
        && !url::Url::parse(endpoint).is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
    {
        problems.add(format!("{at}.endpoint"), "expected an http:// or https:// URL");
    }
    BucketConfig {
        bucket: def.bucket,
        endpoint: def.endpoint,
        region: def.region.unwrap_or_else(|| "us-east-1".to_owned()),
        prefix: def.prefix.unwrap_or_default().trim_matches('/').to_owned(),
        credentials: secret_source.and_then(|source| bucket_credentials(source, problems)),
    }
}

/// `AWS_ACCESS_KEY_ID` with `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`),
/// from the environment or the secrets directory; none when neither is set.
fn bucket_credentials(source: SecretSource<'_>, problems: &mut Problems) -> Option<BucketCredentials> {
    let mut read = |name: &str| {
        read_secret(name, source.env, source.dir).unwrap_or_else(|problem| {
            problems.add(name, problem);
            None
        })
    };
    let (key_id, secret, session_token) =
        (read("AWS_ACCESS_KEY_ID"), read("AWS_SECRET_ACCESS_KEY"), read("AWS_SESSION_TOKEN"));
    match (key_id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => {
            Some(BucketCredentials { access_key_id, secret_access_key, session_token })
        }
        (None, None) => None,
        (Some(_), None) => {
            problems.add("AWS_SECRET_ACCESS_KEY", "is needed with AWS_ACCESS_KEY_ID");
            None
        }
        (None, Some(_)) => {
            problems.add("AWS_ACCESS_KEY_ID", "is needed with AWS_SECRET_ACCESS_KEY");
            None
        }
    }
}
