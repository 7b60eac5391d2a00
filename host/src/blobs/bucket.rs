//! Blobs as objects in an S3-compatible bucket (S3, MinIO, Ceph, R2…), keyed
//! `prefix/ab/abcdef…`, through `object_store`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore as _, ObjectStoreExt as _, PutOptions, RetryConfig,
};

use super::BlobError;
use crate::config::BucketConfig;

/// A store answers within this, retries included. It is waited on while a
/// webhook is handled, and Twilio gives a webhook 15 s in all.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One bucket (and key prefix) of content-addressed objects.
#[derive(Clone)]
pub(super) struct BucketStore {
    bucket: String,
    prefix: String,
    client: Arc<AmazonS3>,
}

/// Names the bucket only: the client holds credentials.
impl fmt::Debug for BucketStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BucketStore").field("bucket", &self.bucket).field("prefix", &self.prefix).finish()
    }
}

impl BucketStore {
    /// A client for `config`'s bucket. Its credentials are the configured
    /// keys or, without them, what AWS's own tools would find in the process
    /// environment (a web identity token, a container or instance role).
    pub(super) fn open(config: &BucketConfig) -> Result<Self, String> {
        use_ring_for_tls();
        let builder = match &config.credentials {
            Some(keys) => {
                let builder = AmazonS3Builder::new()
                    .with_access_key_id(keys.access_key_id.reveal())
                    .with_secret_access_key(keys.secret_access_key.reveal());
                match &keys.session_token {
                    Some(token) => builder.with_token(token.reveal()),
                    None => builder,
                }
            }
            None => AmazonS3Builder::from_env(),
        };
        let mut builder = builder
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_client_options(ClientOptions::new().with_connect_timeout(CONNECT_TIMEOUT).with_timeout(STORE_TIMEOUT))
            .with_retry(RetryConfig { max_retries: 2, retry_timeout: STORE_TIMEOUT, ..RetryConfig::default() });
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        Ok(Self { bucket: config.bucket.clone(), prefix: config.prefix.clone(), client: Arc::new(client) })
    }

    /// Puts `bytes` as `sha256` with their content type unless that object
    /// exists; its `s3://` URL.
    pub(super) async fn store(&self, sha256: &str, content_type: &str, bytes: Vec<u8>) -> Result<String, BlobError> {
        let name = super::sharded_name(sha256);
        let key = ObjectPath::from(if self.prefix.is_empty() { name } else { format!("{}/{name}", self.prefix) });
        let unavailable = |e: object_store::Error| BlobError::Unavailable(e.to_string());
        let put_once = async {
            match self.client.head(&key).await {
                Ok(_) => return Ok(()),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(unavailable(e)),
            }
            let mut attributes = Attributes::new();
            attributes.insert(Attribute::ContentType, content_type.to_owned().into());
            self.client.put_opts(&key, bytes.into(), PutOptions::from(attributes)).await.map(drop).map_err(unavailable)
        };
        tokio::time::timeout(STORE_TIMEOUT, put_once)
            .await
            .map_err(|_| BlobError::Unavailable(format!("the bucket did not answer within {STORE_TIMEOUT:?}")))??;
        Ok(format!("s3://{}/{key}", self.bucket))
    }
}

/// The bucket client's TLS (rustls) takes the process's default provider:
/// ring, the one this binary is built with (the NATS client's too).
fn use_ring_for_tls() {
    // Err means one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
