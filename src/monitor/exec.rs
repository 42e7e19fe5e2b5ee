//! ExecSync inside the monitor: a process started in the container by
//! `tenant.rs` with the container's own process section and seccomp filter,
//! its output captured through pipes and its exit reaped by the poll loop,
//! so the monitor keeps serving meanwhile.

use super::container_ops::Attacher;
use super::*;

pub(super) struct ExecJob {
    pub(super) conn: u64,
    pub(super) pid: i32,
    pub(super) stdout: Option<OwnedFd>,
    pub(super) stderr: Option<OwnedFd>,
    pub(super) out: Vec<u8>,
    pub(super) err: Vec<u8>,
    pub(super) exit: Option<i32>,
    pub(super) exited_at: Option<Instant>,
    pub(super) deadline: Option<Instant>,
    pub(super) timed_out: bool,
}

impl Monitor {
    /// An exec needs a running container. Exits already pending are
    /// collected first, so a container whose init has just died is
    /// refused by name instead of being raced.
    fn check_exec_target(&mut self, id: &str) -> Result<(), RuntimeError> {
        self.reap();
        let rec = self.record(id)?;
        if rec.state.status != RuntimeStatus::Running || rec.namespaces.is_none() {
            return Err(RuntimeError::ExecFailed {
                container: id.to_string(),
                message: format!(
                    "container is {:?}, exec needs a running container",
                    rec.state.status
                ),
            });
        }
        Ok(())
    }

    /// Starts `spec` in container `id` (checked by `check_exec_target`).
    fn spawn_in(
        &mut self,
        id: &str,
        spec: &ExecSpec,
        stdio: tenant::TenantStdio,
    ) -> Result<i32, RuntimeError> {
        let trampoline = match self.record(id)?.exec_path {
            ExecPath::Dmz => Some(self.trampoline()?),
            ExecPath::Direct => None,
        };
        let rec = self.record(id)?;
        let Some(namespaces) = &rec.namespaces else {
            return Err(RuntimeError::ExecFailed {
                container: id.to_string(),
                message: "container has exited, exec needs a running container".into(),
            });
        };
        let target = tenant::TenantTarget {
            id,
            bundle: &rec.bundle,
            namespaces,
            oom_score_adj: rec.oom_score_adj,
            trampoline,
        };
        tenant::spawn_tenant(&target, spec, stdio)
    }

    pub(super) fn exec_sync(
        &mut self,
        conn: u64,
        id: &str,
        spec: ExecSpec,
    ) -> Result<Reply, RuntimeError> {
        if spec.args.is_empty() {
            return Err(RuntimeError::InvalidRequest(format!(
                "exec in container {id:?} needs a command"
            )));
        }
        self.check_exec_target(id)?;
        let (out_r, out_w) = cloexec_pipe()?;
        let (err_r, err_w) = cloexec_pipe()?;
        let stdio = tenant::TenantStdio {
            stdin: dev_null()?,
            stdout: out_w,
            stderr: err_w,
            tty: false,
        };
        let pid = self.spawn_in(id, &spec, stdio)?;
        set_nonblocking(out_r.as_raw_fd());
        set_nonblocking(err_r.as_raw_fd());
        self.execs.push(ExecJob {
            conn,
            pid,
            stdout: Some(out_r),
            stderr: Some(err_r),
            out: Vec::new(),
            err: Vec::new(),
            exit: None,
            exited_at: None,
            deadline: spec
                .timeout
                .filter(|t| !t.is_zero())
                .map(|t| Instant::now() + t),
            timed_out: false,
        });
        Ok(Reply::Deferred)
    }

    /// Interactive exec: the process's stdio goes to the daemon, which
    /// relays it to the streaming client; the monitor only reaps the
    /// process and reports its exit code on the same connection.
    pub(super) fn exec_stream(
        &mut self,
        conn: u64,
        id: &str,
        spec: ExecSpec,
        stdin: bool,
        tty: bool,
    ) -> Result<Reply, RuntimeError> {
        if spec.args.is_empty() {
            return Err(RuntimeError::InvalidRequest(format!(
                "exec in container {id:?} needs a command"
            )));
        }
        self.check_exec_target(id)?;
        let (stdio, passed) = if tty {
            let (master, slave) = open_pty()?;
            let dup = |fd: &OwnedFd| {
                fd.try_clone()
                    .map_err(|e| RuntimeError::io("duplicating the terminal", e))
            };
            let stdio = tenant::TenantStdio {
                stdin: dup(&slave)?,
                stdout: dup(&slave)?,
                stderr: slave,
                tty: true,
            };
            (stdio, vec![master])
        } else {
            let (stdin_r, stdin_w) = if stdin {
                let (r, w) = cloexec_pipe()?;
                (r, Some(w))
            } else {
                (dev_null()?, None)
            };
            let (out_r, out_w) = cloexec_pipe()?;
            let (err_r, err_w) = cloexec_pipe()?;
            let mut passed: Vec<OwnedFd> = stdin_w.into_iter().collect();
            passed.push(out_r);
            passed.push(err_r);
            let stdio = tenant::TenantStdio {
                stdin: stdin_r,
                stdout: out_w,
                stderr: err_w,
                tty: false,
            };
            (stdio, passed)
        };
        let pid = self.spawn_in(id, &spec, stdio)?;
        let raw: Vec<RawFd> = passed.iter().map(|f| f.as_raw_fd()).collect();
        let sent = self.send_with_fds(
            conn,
            &Response::Streams {
                pid: pid as u32,
                tty,
                stdin,
            },
            &raw,
        );
        drop(passed);
        if !sent {
            // Nobody holds the process's stdio any more: end it.
            let _ = Self::signal(pid, libc::SIGKILL);
        }
        self.execs.push(ExecJob {
            conn,
            pid,
            stdout: None,
            stderr: None,
            out: Vec::new(),
            err: Vec::new(),
            exit: None,
            exited_at: None,
            deadline: None,
            timed_out: false,
        });
        Ok(Reply::Deferred)
    }

    /// Attach: hands the client fresh pipes fed with the container's live
    /// output from now on (the log keeps everything), and a copy of the
    /// container's stdin write end when it was created with stdin.
    pub(super) fn attach(
        &mut self,
        conn: u64,
        id: &str,
        want_stdin: bool,
    ) -> Result<Reply, RuntimeError> {
        let rec = self
            .containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound {
                container: id.into(),
            })?;
        if rec.exited() {
            return Err(RuntimeError::InvalidRequest(format!(
                "container {id} has exited: attach needs a running container"
            )));
        }
        let (out_r, out_w) = cloexec_pipe()?;
        let (err_r, err_w) = cloexec_pipe()?;
        for w in [&out_w, &err_w] {
            nix::fcntl::fcntl(
                w.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .map_err(|e| RuntimeError::io("making an attach pipe non-blocking", e.into()))?;
        }
        let (tty, has_stdin, passed): (bool, bool, Vec<OwnedFd>) = match &rec.terminal {
            // A terminal: the client writes into (and resizes) the master,
            // and reads the output the monitor fans out, since the master
            // has one reader, the log. A terminal has no stderr.
            Some(master) => {
                let master = master
                    .try_clone()
                    .map_err(|e| RuntimeError::io("duplicating the terminal", e))?;
                (true, want_stdin, vec![master, out_r])
            }
            None => {
                let stdin =
                    match (&rec._stdin_writer, want_stdin) {
                        // stdin_once: the client gets the only write end, so
                        // its EOF is the container's EOF.
                        (Some(_), true) if rec.stdin_once => rec._stdin_writer.take(),
                        (Some(w), true) => Some(w.try_clone().map_err(|e| {
                            RuntimeError::io("duplicating the container's stdin", e)
                        })?),
                        _ => None,
                    };
                let has_stdin = stdin.is_some();
                (
                    false,
                    has_stdin,
                    stdin.into_iter().chain([out_r, err_r]).collect(),
                )
            }
        };
        let pid = rec.pid;
        rec.attachers.push(Attacher {
            stdout: out_w,
            stderr: err_w,
        });
        let raw: Vec<RawFd> = passed.iter().map(|f| f.as_raw_fd()).collect();
        self.send_with_fds(
            conn,
            &Response::Streams {
                pid: pid as u32,
                tty,
                stdin: has_stdin,
            },
            &raw,
        );
        Ok(Reply::Deferred)
    }

    pub(super) fn finish_execs(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.execs.len() {
            let job = &mut self.execs[i];
            let pipes_done = job.stdout.is_none() && job.stderr.is_none();
            let grace_over = job.exited_at.is_some_and(|t| now >= t + EXEC_DRAIN_GRACE);
            if let Some(code) = job.exit
                && (pipes_done || grace_over)
            {
                for (slot, buf) in [
                    (&mut job.stdout, &mut job.out),
                    (&mut job.stderr, &mut job.err),
                ] {
                    if let Some(fd) = slot.take() {
                        read_available(fd.as_raw_fd(), buf);
                    }
                    buf.truncate(MAX_EXEC_OUTPUT);
                }
                let job = self.execs.remove(i);
                let out = ExecOutput {
                    stdout: job.out,
                    stderr: job.err,
                    exit_code: code,
                    timed_out: job.timed_out,
                };
                self.send(job.conn, &Response::Exec(out));
                continue;
            }
            i += 1;
        }
    }
}

/// A new pseudo-terminal, both ends close-on-exec (the slave reaches the
/// process through dup2, which clears the flag).
pub(super) fn open_pty() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    let pty = nix::pty::openpty(None, None)
        .map_err(|e| RuntimeError::io("opening a pseudo-terminal", e.into()))?;
    for fd in [&pty.master, &pty.slave] {
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((pty.master, pty.slave))
}

/// The exec'd process sees the container's environment with the caller's
/// entries added, a caller's `KEY=` replacing the container's (as CRI
/// ExecSync and `runc exec --env` behave).
pub(super) fn merge_env(container: &[String], extra: &[String]) -> Vec<String> {
    let key = |kv: &str| kv.split('=').next().unwrap_or_default().to_string();
    let mut env: Vec<String> = container
        .iter()
        .filter(|e| !extra.iter().any(|x| key(x) == key(e)))
        .cloned()
        .collect();
    env.extend(extra.iter().cloned());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_env_overrides_by_key() {
        let container = vec![
            "PATH=/bin".to_string(),
            "A=1".to_string(),
            "AB=2".to_string(),
        ];
        let extra = vec!["A=9".to_string(), "NEW=x".to_string()];
        assert_eq!(
            merge_env(&container, &extra),
            vec!["PATH=/bin", "AB=2", "A=9", "NEW=x"]
        );
        assert_eq!(merge_env(&container, &[]), container);
    }
}
