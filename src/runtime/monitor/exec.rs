//! ExecSync inside the monitor: a libcontainer tenant process built from the
//! container's own process section, its output captured through pipes and
//! its exit reaped by the poll loop, so the monitor keeps serving meanwhile.

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
    /// Build the exec'd process from the container's own process section so
    /// it gets the container's capabilities and no_new_privs, with the
    /// caller's user, env and cwd (libcontainer would run it as uid 0
    /// otherwise).
    pub(super) fn exec_process_file(
        &mut self,
        id: &str,
        bundle: &Path,
        spec: &ExecSpec,
    ) -> Result<PathBuf, RuntimeError> {
        let config = bundle.join("config.json");
        let oci = Spec::load(&config).map_err(|e| {
            RuntimeError::io(
                format!("reading {} of container {id:?}", config.display()),
                std::io::Error::other(e.to_string()),
            )
        })?;
        let base = oci.process().clone().unwrap_or_default();
        let env = merge_env(base.env().as_deref().unwrap_or_default(), &spec.env);
        let user = UserBuilder::default()
            .uid(spec.uid)
            .gid(spec.gid)
            .additional_gids(spec.additional_gids.clone())
            .build()
            .map_err(|e| RuntimeError::InvalidRequest(e.to_string()))?;
        // Start from the container's own process so everything the exec
        // does not override (capabilities, no_new_privs, rlimits, apparmor)
        // is the container's. Building from `ProcessBuilder::default()`
        // would inherit oci-spec's defaults instead, notably
        // `noNewPrivileges: true`, which silently disables file
        // capabilities in the exec'd process.
        let mut process = base.clone();
        process.set_terminal(Some(false));
        process.set_args(Some(spec.args.clone()));
        process.set_env(Some(env));
        process.set_cwd(
            spec.cwd
                .clone()
                .map(PathBuf::from)
                .unwrap_or_else(|| base.cwd().clone()),
        );
        process.set_user(user);
        process.set_console_size(None);
        self.exec_seq += 1;
        let dir = container_dir(&self.args.pod_dir, id);
        fs::create_dir_all(&dir)
            .map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
        let path = dir.join(format!("exec-{}.json", self.exec_seq));
        let body =
            serde_json::to_vec(&process).map_err(|e| RuntimeError::Protocol(e.to_string()))?;
        fs::write(&path, body)
            .map_err(|e| RuntimeError::io(format!("writing {}", path.display()), e))?;
        Ok(path)
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
        let rec = self.record(id)?;
        if rec.state.status != RuntimeStatus::Running {
            return Err(RuntimeError::ExecFailed {
                container: id.to_string(),
                message: format!(
                    "container is {:?}, exec needs a running container",
                    rec.state.status
                ),
            });
        }
        let bundle = rec.bundle.clone();
        let process_file = self.exec_process_file(id, &bundle, &spec)?;
        let (out_r, out_w) = cloexec_pipe()?;
        let (err_r, err_w) = cloexec_pipe()?;
        let built = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(self.args.runtime_root.clone())
            .map_err(|e| Self::libcontainer_err(id, e))
            .map(|b| {
                b.with_executor(ReportingExecutor::new(-1))
                    .with_stdout(out_w)
                    .with_stderr(err_w)
            });
        let built = match built {
            Ok(b) => match dev_null() {
                Ok(null) => b
                    .with_stdin(null)
                    .as_tenant()
                    .with_process(Some(&process_file))
                    .as_sibling(false)
                    .with_detach(true)
                    .build()
                    .map_err(|e| RuntimeError::ExecFailed {
                        container: id.to_string(),
                        message: e.to_string(),
                    }),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let _ = fs::remove_file(&process_file);
        let pid = match built {
            Ok(pid) => pid.as_raw(),
            Err(e) => {
                self.reap();
                return Err(e);
            }
        };
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

/// The exec'd process sees the container's environment with the caller's
/// entries added, a caller's `KEY=` replacing the container's (as CRI
/// ExecSync and `runc exec --env` behave).
fn merge_env(container: &[String], extra: &[String]) -> Vec<String> {
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
