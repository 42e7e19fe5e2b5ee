//! Running one plugin binary: lookup in the bin dirs, stdin/stdout, timeout.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::error::CniError;
use super::invocation::CniCommand;
use super::result::parse_error_report;

/// Find plugin `ty` in `bin_dirs`, first dir first (libcni `FindInPath`).
pub fn find_plugin(ty: &str, bin_dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    for dir in bin_dirs {
        let candidate = dir.join(ty);
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(CniError::PluginNotFound {
        plugin: ty.to_string(),
        searched: bin_dirs.to_vec(),
    })
}

/// Run `binary` with `env` and `stdin`; Ok(stdout JSON or Null when empty).
///
/// The plugin runs in its own process group so that on timeout the whole
/// group (e.g. the IPAM plugin a main plugin delegates to) is killed, not
/// only the direct child.
pub async fn run_plugin(
    binary: &Path,
    command: CniCommand,
    env: &[(String, String)],
    stdin: &Value,
    timeout: Duration,
) -> Result<Value, CniError> {
    let plugin = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| binary.display().to_string());
    let input = serde_json::to_vec(stdin).map_err(|e| CniError::InvalidConfig {
        file: binary.to_path_buf(),
        reason: format!("cannot encode the plugin config: {e}"),
    })?;

    let mut child = spawn(binary, env).await?;
    let pgid = child.id();
    if let Some(mut pipe) = child.stdin.take() {
        // Written in its own task so a plugin that prints before reading all
        // of stdin cannot dead-lock against us on full pipes. A plugin that
        // exits without reading makes this fail with EPIPE, which is its
        // business: its exit status tells what happened.
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
        });
    }
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out.map_err(|e| CniError::io("waiting for CNI plugin", binary, e))?,
        Err(_) => {
            if let Some(pid) = pgid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(CniError::PluginTimeout {
                plugin,
                command: command.as_str().to_string(),
                timeout,
            });
        }
    };

    let stdout = output.stdout.as_slice();
    if !output.status.success() {
        if let Some(report) = parse_error_report(stdout) {
            return Err(CniError::Plugin {
                plugin,
                command: command.as_str().to_string(),
                code: report.code,
                msg: report.msg,
                details: report.details,
            });
        }
        let mut text = String::from_utf8_lossy(stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !stderr.trim().is_empty() {
            text.push_str(" stderr: ");
            text.push_str(stderr.trim());
        }
        text.truncate(4096);
        return Err(CniError::PluginFailed {
            plugin,
            command: command.as_str().to_string(),
            status: output.status.to_string(),
            output: text,
        });
    }
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(stdout).map_err(|e| CniError::InvalidResult {
        plugin,
        command: command.as_str().to_string(),
        reason: format!("stdout is not JSON: {e}"),
    })
}

async fn spawn(binary: &Path, env: &[(String, String)]) -> Result<tokio::process::Child, CniError> {
    let mut attempt = 0;
    loop {
        let mut cmd = tokio::process::Command::new(binary);
        // The rest of the daemon's environment is kept: plugins such as
        // portmap find iptables through PATH.
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if !env.iter().any(|(k, _)| k == "CNI_NETNS") {
            cmd.env_remove("CNI_NETNS");
        }
        match cmd.spawn() {
            Ok(child) => return Ok(child),
            // ETXTBSY: a just-installed plugin whose writer's fd was inherited
            // by a concurrent fork elsewhere in the process; it clears quickly.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => return Err(CniError::io("starting CNI plugin", binary, e)),
        }
    }
}
