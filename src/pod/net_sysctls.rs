//! Writes the policies' network sysctls into a pod's network namespace at
//! RunPodSandbox (the I/O half of `policy::sysctls`).
//!
//! /proc/sys/net resolves to the network namespace of the task that opens
//! the file (`net_ctl_header_lookup` reads `current->nsproxy->net_ns`), and
//! a namespace change is per thread: a thread made for this alone joins the
//! pod's pinned namespace, writes, and exits, so no thread of the daemon's
//! pools ever lives in a pod's network (as `host::create_netns_at`).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::sched::{CloneFlags, setns};

use crate::capabilities::policy::PodDecision;
use crate::capabilities::policy::sysctls::SysctlOutcome;

/// A sysctl that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum NetSysctlError {
    #[error("cannot join the pod's network namespace {path}: {source}")]
    Join {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "cannot set {key} = {value:?} (from {rule}) in the pod's network namespace: {source}; fix or remove the rule (for ip_unprivileged_port_start the kernel also requires a value not above the low end of ip_local_port_range)"
    )]
    Write {
        key: String,
        value: String,
        rule: String,
        source: std::io::Error,
    },
}

/// `/proc/sys/<key with dots as slashes>`. The key was validated against
/// the pod-safe list when the policy loaded, so it holds no `..` or `/`.
fn proc_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// Writes every `applied` setting of `decision` into the network namespace
/// pinned at `netns`. On a failure the setting is marked `failed` with the
/// error, and the error is returned (the caller fails RunPodSandbox).
pub fn write_in_netns(netns: &Path, decision: &mut PodDecision) -> Result<(), NetSysctlError> {
    if decision.to_write().next().is_none() {
        return Ok(());
    }
    let writes: Vec<(String, String, String)> = decision
        .to_write()
        .map(|s| (s.key.clone(), s.value.clone(), s.source.clone()))
        .collect();
    let result = std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<(), NetSysctlError> {
                let ns = std::fs::File::open(netns).map_err(|source| NetSysctlError::Join {
                    path: netns.display().to_string(),
                    source,
                })?;
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| NetSysctlError::Join {
                    path: netns.display().to_string(),
                    source: e.into(),
                })?;
                for (key, value, rule) in &writes {
                    let write = || -> std::io::Result<()> {
                        let mut f = std::fs::OpenOptions::new()
                            .write(true)
                            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                            .open(proc_path(key))?;
                        f.write_all(value.as_bytes())
                    };
                    write().map_err(|source| NetSysctlError::Write {
                        key: key.clone(),
                        value: value.clone(),
                        rule: rule.clone(),
                        source,
                    })?;
                }
                Ok(())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NetSysctlError::Join {
                    path: netns.display().to_string(),
                    source: std::io::Error::other("the sysctl thread panicked"),
                })
            })
    });
    if let Err(NetSysctlError::Write { key, source, .. }) = &result {
        for s in decision.sysctls.iter_mut().filter(|s| &s.key == key) {
            s.outcome = SysctlOutcome::Failed;
            s.reason = format!("write failed: {source}");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_proc_sys() {
        assert_eq!(
            proc_path("net.ipv4.ip_unprivileged_port_start"),
            "/proc/sys/net/ipv4/ip_unprivileged_port_start"
        );
    }
}
