//! A content-addressed blob store on disk: what a connector fetched (inbound
//! media) kept under `DATA_DIR/media/ab/abcdef…`, named by the SHA-256 of its
//! bytes. The host computes the hash, so a connector cannot name a file; the
//! same bytes stored twice are one file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::config::BlobsConfig;

/// Where stored bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// Hex SHA-256 of the bytes: the file's name.
    pub sha256: String,
    /// Their length.
    pub size: u64,
    /// `file:///…/media/ab/abcdef…`.
    pub url: String,
}

/// Why bytes were not stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlobError {
    /// Over the store's limit, which it names.
    #[error("larger than the store takes ({0} bytes)")]
    TooLarge(u64),
    /// The disk refused (full, read-only, gone).
    #[error("the blob store cannot take it: {0}")]
    Unavailable(String),
}

/// One directory of content-addressed files.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    max_bytes: u64,
}

impl BlobStore {
    /// The store `config` grants.
    pub fn new(config: &BlobsConfig) -> Self {
        Self { dir: config.dir.clone(), max_bytes: config.max_bytes }
    }

    /// Stores `bytes` durably (written, synced, renamed into place) and says where.
    pub async fn store(&self, bytes: Vec<u8>) -> Result<StoredBlob, BlobError> {
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return Err(BlobError::TooLarge(self.max_bytes));
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write(&bytes))
            .await
            .map_err(|e| BlobError::Unavailable(e.to_string()))?
    }

    fn write(&self, bytes: &[u8]) -> Result<StoredBlob, BlobError> {
        let sha256 = hex::encode(sha2::Sha256::digest(bytes));
        let shard = self.dir.join(&sha256[..2]);
        let path = shard.join(&sha256);
        let unavailable = |what: &str, e: std::io::Error| BlobError::Unavailable(format!("{what}: {e}"));
        if !path.exists() {
            std::fs::create_dir_all(&shard).map_err(|e| unavailable("creating the media directory", e))?;
            let mut file = tempfile::NamedTempFile::new_in(&shard).map_err(|e| unavailable("creating a file", e))?;
            file.write_all(bytes).and_then(|()| file.as_file().sync_all()).map_err(|e| unavailable("writing", e))?;
            file.persist(&path).map_err(|e| unavailable("naming the file", e.error))?;
            sync_dir(&shard).map_err(|e| unavailable("syncing the directory", e))?;
        }
        Ok(StoredBlob { url: file_url(&path), size: bytes.len() as u64, sha256 })
    }
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn file_url(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    url::Url::from_file_path(&absolute).map_or_else(|()| format!("file://{}", absolute.display()), String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_are_named_by_their_hash_stored_once_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(&BlobsConfig { dir: dir.path().join("media"), max_bytes: 8 });
        let stored = store.store(b"abc".to_vec()).await.unwrap();
        assert_eq!(stored.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(stored.size, 3);
        let path = dir.path().join("media/ba").join(&stored.sha256);
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        assert_eq!(stored.url, url::Url::from_file_path(&path).unwrap().to_string());
        assert_eq!(store.store(b"abc".to_vec()).await.unwrap(), stored, "the same bytes, the same blob");
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary file left");
        assert_eq!(store.store(vec![0; 9]).await, Err(BlobError::TooLarge(8)));
    }
}
