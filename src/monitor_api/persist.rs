//! Container state files under `pod_dir/containers/<id>/state.json`, written
//! by the monitor the moment something changes (create, start, reap), so a
//! restarted daemon finds every exit code even if the monitor is gone.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::RuntimeError;
use super::types::ContainerRuntimeState;

pub(crate) fn container_dir(pod_dir: &Path, id: &str) -> PathBuf {
    pod_dir.join("containers").join(id)
}

fn state_path(pod_dir: &Path, id: &str) -> PathBuf {
    container_dir(pod_dir, id).join("state.json")
}

/// Write the state atomically: a reader sees the old or the new file, never
/// a torn one (temp file, fsync, rename, fsync of the directory).
pub(crate) fn write_state(
    pod_dir: &Path,
    id: &str,
    state: &ContainerRuntimeState,
) -> Result<(), RuntimeError> {
    let dir = container_dir(pod_dir, id);
    fs::create_dir_all(&dir)
        .map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
    let body = serde_json::to_vec(state).map_err(|e| RuntimeError::Protocol(e.to_string()))?;
    let tmp = dir.join("state.json.tmp");
    let final_path = state_path(pod_dir, id);
    let io = |what: &str, e| RuntimeError::io(format!("{what} {}", tmp.display()), e);
    // The monitor runs with umask 022 (its containers inherit it): the
    // state file is made 0600 explicitly.
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("creating", e))?
    };
    f.write_all(&body).map_err(|e| io("writing", e))?;
    f.sync_all().map_err(|e| io("syncing", e))?;
    drop(f);
    fs::rename(&tmp, &final_path).map_err(|e| io("renaming", e))?;
    if let Ok(d) = fs::File::open(&dir) {
        // Best effort: the rename is durable once the directory is synced.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Read what the monitor last recorded about a container; works without a
/// running monitor (e.g. after a node reboot or a monitor crash).
pub fn read_persisted_state(
    pod_dir: &Path,
    id: &str,
) -> Result<ContainerRuntimeState, RuntimeError> {
    let path = state_path(pod_dir, id);
    let body = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RuntimeError::NotFound {
                container: id.to_string(),
            });
        }
        Err(e) => return Err(RuntimeError::io(format!("reading {}", path.display()), e)),
    };
    serde_json::from_slice(&body)
        .map_err(|e| RuntimeError::Protocol(format!("corrupt state file {}: {e}", path.display())))
}

pub(crate) fn remove_container_dir(pod_dir: &Path, id: &str) -> Result<(), RuntimeError> {
    let dir = container_dir(pod_dir, id);
    match fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::io(format!("removing {}", dir.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor_api::types::RuntimeStatus;

    #[test]
    fn state_survives_a_roundtrip_and_missing_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let st = ContainerRuntimeState {
            status: RuntimeStatus::Exited,
            pid: Some(7),
            exit_code: Some(1),
            started_at: Some(10),
            finished_at: Some(20),
            reason: Some("Error".into()),
            message: None,
        };
        write_state(dir.path(), "c1", &st).unwrap();
        assert_eq!(read_persisted_state(dir.path(), "c1").unwrap(), st);
        assert!(matches!(
            read_persisted_state(dir.path(), "c2"),
            Err(RuntimeError::NotFound { .. })
        ));
        remove_container_dir(dir.path(), "c1").unwrap();
        remove_container_dir(dir.path(), "c1").unwrap();
    }
}
