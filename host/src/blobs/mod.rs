//! Content-addressed blob stores: what a connector fetched (inbound media),
//! named by the SHA-256 of its bytes. The host computes the hash, so a
//! connector cannot name a blob, and the same bytes stored twice are one blob.
//! They are kept in `DATA_DIR/media` ([`dir`]) or, when configured, in an
//! S3-compatible bucket ([`bucket`]).

mod bucket;
mod dir;

use sha2::Digest as _;

use crate::config::{BlobPlace, BlobsConfig};

/// Where stored bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// Hex SHA-256 of the bytes: the blob's name.
    pub sha256: String,
    /// Their length.
    pub size: u64,
    /// `file:///…/media/ab/abcdef…` or `s3://bucket/prefix/ab/abcdef…`.
    pub url: String,
}

/// Why bytes were not stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlobError {
    /// Over the store's limit, which it names.
    #[error("larger than the store takes ({0} bytes)")]
    TooLarge(u64),
    /// The disk or the bucket refused (full, read-only, gone, not answering).
    #[error("the blob store cannot take it: {0}")]
    Unavailable(String),
}

/// Why a configured store cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("the blob store cannot be opened: {0}")]
pub struct OpenError(String);

/// A connector's blob store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    max_bytes: u64,
    place: Place,
}

#[derive(Debug, Clone)]
enum Place {
    Dir(dir::DirStore),
    Bucket(bucket::BucketStore),
}

impl BlobStore {
    /// Opens the store `config` grants. Nothing is contacted yet: a bucket
    /// that is away makes stores fail, not the start.
    pub fn open(config: &BlobsConfig) -> Result<Self, OpenError> {
        let place = match &config.place {
            BlobPlace::Dir(path) => Place::Dir(dir::DirStore::new(path.clone())),
            BlobPlace::Bucket(bucket) => Place::Bucket(bucket::BucketStore::open(bucket).map_err(OpenError)?),
        };
        Ok(Self { max_bytes: config.max_bytes, place })
    }

    /// Stores `bytes` durably and says where; `content_type` goes with them
    /// where the store keeps it (a bucket's object metadata).
    pub async fn store(&self, content_type: &str, bytes: Vec<u8>) -> Result<StoredBlob, BlobError> {
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return Err(BlobError::TooLarge(self.max_bytes));
        }
        let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
        let url = match &self.place {
            Place::Dir(dir) => dir.store(&sha256, bytes).await?,
            Place::Bucket(bucket) => bucket.store(&sha256, content_type, bytes).await?,
        };
        Ok(StoredBlob { sha256, size, url })
    }
}

/// `ab/abcdef…`: blobs spread over 256 directories (or key prefixes) by
/// their hash's first byte, so none grows without end.
fn sharded_name(sha256: &str) -> String {
    format!("{}/{sha256}", &sha256[..2])
}
