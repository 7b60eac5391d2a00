//! Blobs as files under `DATA_DIR/media/ab/abcdef…`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::BlobError;

/// One directory of content-addressed files.
#[derive(Debug, Clone)]
pub(super) struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Writes `bytes` as `sha256` (written, synced, renamed into place, the
    /// directory synced) unless that file exists; its `file://` URL.
    pub(super) async fn store(&self, sha256: &str, bytes: Vec<u8>) -> Result<String, BlobError> {
        let path = self.dir.join(super::sharded_name(sha256));
        tokio::task::spawn_blocking(move || write_once(&path, &bytes))
            .await
            .map_err(|e| BlobError::Unavailable(e.to_string()))?
    }
}

fn write_once(path: &Path, bytes: &[u8]) -> Result<String, BlobError> {
    let unavailable = |what: &str, e: std::io::Error| BlobError::Unavailable(format!("{what}: {e}"));
    if !path.exists() {
        let shard = path.parent().unwrap_or(path);
        std::fs::create_dir_all(shard).map_err(|e| unavailable("creating the media directory", e))?;
        let mut file = tempfile::NamedTempFile::new_in(shard).map_err(|e| unavailable("creating a file", e))?;
        file.write_all(bytes).and_then(|()| file.as_file().sync_all()).map_err(|e| unavailable("writing", e))?;
        file.persist(path).map_err(|e| unavailable("naming the file", e.error))?;
        sync_dir(shard).map_err(|e| unavailable("syncing the directory", e))?;
    }
    Ok(file_url(path))
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
    use crate::blobs::{BlobError, BlobStore};
    use crate::config::{BlobPlace, BlobsConfig};

    #[tokio::test]
    async fn bytes_are_named_by_their_hash_stored_once_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let config = BlobsConfig { place: BlobPlace::Dir(dir.path().join("media")), max_bytes: 8 };
        let store = BlobStore::open(&config).unwrap();
        let stored = store.store("text/plain", b"abc".to_vec()).await.unwrap();
        assert_eq!(stored.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(stored.size, 3);
        let path = dir.path().join("media/ba").join(&stored.sha256);
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        assert_eq!(stored.url, url::Url::from_file_path(&path).unwrap().to_string());
        assert_eq!(store.store("text/plain", b"abc".to_vec()).await.unwrap(), stored, "the same bytes, the same blob");
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary file left");
        assert_eq!(store.store("text/plain", vec![0; 9]).await, Err(BlobError::TooLarge(8)));
    }
}
