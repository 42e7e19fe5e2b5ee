//! Validation of paths that come from CRI requests.

use std::path::{Component, Path, PathBuf};

/// Joins the pod's log directory and the container's relative log path the
/// way kubelet means it, refusing anything that would escape the directory.
pub fn log_file_path(log_directory: &str, log_path: &str) -> Result<Option<PathBuf>, String> {
    if log_directory.is_empty() || log_path.is_empty() {
        return Ok(None);
    }
    let dir = Path::new(log_directory);
    if !dir.is_absolute() {
        return Err(format!(
            "pod log_directory {log_directory:?} is not absolute: kubelet sends /var/log/pods/<ns>_<name>_<uid>"
        ));
    }
    let rel = Path::new(log_path);
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            _ => {
                return Err(format!(
                    "container log_path {log_path:?} must be a relative path without \"..\" inside the pod log directory"
                ));
            }
        }
    }
    Ok(Some(dir.join(rel)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths() {
        assert_eq!(
            log_file_path("/var/log/pods/x", "c/0.log").unwrap(),
            Some(PathBuf::from("/var/log/pods/x/c/0.log"))
        );
        assert_eq!(log_file_path("", "c/0.log").unwrap(), None);
        assert_eq!(log_file_path("/var/log/pods/x", "").unwrap(), None);
        assert!(log_file_path("/var/log/pods/x", "../../etc/passwd").is_err());
        assert!(log_file_path("/var/log/pods/x", "/etc/passwd").is_err());
        assert!(log_file_path("relative", "c.log").is_err());
    }
}
