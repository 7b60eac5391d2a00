//! Room on the disk that holds a bus or spool file: readiness says "not
//! ready" before a write fails for lack of it.

use std::path::Path;

/// Below this much free space a store says it has no room: enough for the
/// WAL to checkpoint and a burst of webhooks to land while an operator reacts.
pub const MIN_FREE_BYTES: u64 = 16 << 20;

/// Bytes free to an unprivileged writer on the file system holding `file`, or
/// why there are too few (under [`MIN_FREE_BYTES`]) or none could be read.
pub fn room(file: &Path) -> Result<u64, String> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stat = rustix::fs::statvfs(dir).map_err(|e| format!("cannot read free space of {}: {e}", dir.display()))?;
    if stat.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
        return Err(format!("{} is on a read-only file system", dir.display()));
    }
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if free < MIN_FREE_BYTES {
        return Err(format!("{} bytes free on the disk of {}; at least {MIN_FREE_BYTES} needed", free, dir.display()));
    }
    Ok(free)
}
