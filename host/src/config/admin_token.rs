//! The admin listener's credential when `ADMIN_TOKEN` is not set: a random
//! token that `serve` writes to `DATA_DIR/admin-token` (mode 0600) at its
//! first start and the CLI reads from there. So the admin listener is never
//! open, on loopback neither (anything that reaches loopback, a sidecar or
//! an SSRF, would otherwise mint tokens and send billed messages), and the
//! commands of a second terminal work unchanged.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::Secret;

/// The token file in the data directory.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin-token")
}

/// For `serve`: the token in `data_dir`, or a new one written there first.
/// Two starts racing on one data directory agree: the file is created
/// exclusively, and the loser reads the winner's.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Secret> {
    if let Some(token) = read(data_dir)? {
        return Ok(token);
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let file = path(data_dir);
    let token = hex::encode(rand::random::<[u8; 32]>());
    let created = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&file);
    match created {
        Ok(mut handle) => {
            handle
                .write_all(format!("{token}\n").as_bytes())
                .and_then(|()| handle.sync_all())
                .with_context(|| format!("writing {}", file.display()))?;
            tracing::info!(file = %file.display(), "admin token generated (the CLI reads it from this file)");
            Ok(Secret::new(token))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(data_dir)?.with_context(|| format!("{} is empty", file.display()))
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", file.display())),
    }
}

/// For the CLI: the token `serve` wrote to `data_dir`, if there is one. A
/// file that others may read is refused, as ssh refuses such a key.
pub fn read(data_dir: &Path) -> anyhow::Result<Option<Secret>> {
    use std::os::unix::fs::PermissionsExt as _;
    let file = path(data_dir);
    let metadata = match std::fs::metadata(&file) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    anyhow::ensure!(
        metadata.permissions().mode() & 0o077 == 0,
        "{} can be read by other users; make it mode 0600 (chmod 600) or delete it for a new one",
        file.display()
    );
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let token = text.trim();
    Ok((!token.is_empty()).then(|| Secret::new(token)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generated_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        assert!(read(&data).unwrap().is_none());
        let token = load_or_create(&data).unwrap();
        assert_eq!(token.reveal().len(), 64);
        assert_eq!(std::fs::metadata(path(&data)).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load_or_create(&data).unwrap(), token, "a restart keeps the token");
        assert_eq!(read(&data).unwrap().unwrap(), token);
        assert_ne!(load_or_create(dir.path()).unwrap(), token, "another data directory, another token");

        std::fs::set_permissions(path(&data), std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = read(&data).unwrap_err().to_string();
        assert!(error.contains("can be read by other users") && !error.contains(token.reveal()), "{error}");
    }
}
