//! Container lifecycle inside the monitor: create, start (with the execve
//! verdict), kill, stop, delete, and the per-container record with its log
//! pipes and exit.

use super::libcontainer_log::{Capture, error_chain, failure_message};
use super::*;
use crate::host::CgroupPath;

/// The exit code of a container whose build failed: containerd's for a
/// container whose task could not be created (kubelet shows it as the
/// last state's exit code).
const FAILED_BUILD_EXIT_CODE: i32 = 128;

/// `linux.cgroupsPath` of the container's spec.
fn cgroups_path(spec: &Spec) -> Option<PathBuf> {
    spec.linux().as_ref()?.cgroups_path().clone()
}

/// The container's cgroup directory, from its `cgroupsPath` (a cgroupfs
/// path, or systemd's `slice:prefix:name` for its scope).
fn cgroup_of(spec: &Spec) -> Option<CgroupPath> {
    let path = cgroups_path(spec)?;
    let dir = crate::util::cgroup_paths::cgroup_dir_of(path.to_str()?)?;
    Some(CgroupPath::new(Path::new(&dir)))
}

/// `process.oomScoreAdj` of the container's spec.
fn spec_oom_score_adj(spec: &Spec) -> Option<i32> {
    spec.process().as_ref()?.oom_score_adj()
}

pub(super) struct LogPipe {
    pub(super) fd: OwnedFd,
    pub(super) stream: CriLogStream,
    pub(super) splitter: LineSplitter,
}

pub(super) struct ContainerRecord {
    pub(super) pid: i32,
    pub(super) state: ContainerRuntimeState,
    pub(super) bundle: PathBuf,
    pub(super) log: Option<File>,
    pub(super) pipes: Vec<LogPipe>,
    /// Read end of the exec status pipe (see `executor.rs`), until EOF.
    pub(super) exec_status: Option<OwnedFd>,
    pub(super) exec_error: Vec<u8>,
    /// Held open so a container asking for stdin sees an open, idle stdin.
    pub(super) _stdin_writer: Option<OwnedFd>,
    /// The CRI log file's path, reopened on ReopenContainerLog.
    pub(super) log_path: Option<PathBuf>,
    /// The container's own cgroup, read at exit for OOM kills.
    pub(super) cgroup: Option<CgroupPath>,
    /// A systemd scope's pod slice and its OOM kill count at create: when
    /// the OOM killer ends a scope's last process, systemd removes the
    /// scope's cgroup as it empties, often before the exit is reaped, and
    /// its memory.events with it; the slice's count (hierarchical) is
    /// still there.
    pub(super) pod_oom: Option<(CgroupPath, u64)>,
    /// Attached clients: non-blocking write ends of their stdout and stderr
    /// pipes. The log is written first; a slow client loses output rather
    /// than ever blocking the monitor or the log.
    pub(super) attachers: Vec<Attacher>,
    /// stdin_once: the stdin write end goes to the first attacher.
    pub(super) stdin_once: bool,
    /// The master side of a `tty` container's terminal (see `console.rs`):
    /// lent to attach clients for input and resizes.
    pub(super) terminal: Option<OwnedFd>,
    /// The namespaces execs join, opened at create (see
    /// `tenant::ContainerNamespaces`); dropped at exit, so a stopped
    /// container's mounts are not kept alive by the monitor.
    pub(super) namespaces: Option<super::tenant::ContainerNamespaces>,
    /// The container's oom_score_adj, given to its exec'd processes.
    pub(super) oom_score_adj: Option<i32>,
    /// Its exec path: execs of a `dmz` container go through the trampoline.
    pub(super) exec_path: ExecPath,
    /// Why a build that ran after its create was answered failed
    /// (`build_after_answer`): the answer to the container's Start.
    pub(super) build_error: Option<String>,
}

/// A create request checked and answered, not yet built (see
/// [`Monitor::accept_create`]).
pub(super) struct AcceptedCreate {
    req: CreateContainer,
    /// The bundle's spec, read once for every step of the build.
    spec: Spec,
    log: Option<File>,
}

pub(super) struct Attacher {
    pub(super) stdout: OwnedFd,
    pub(super) stderr: OwnedFd,
}

impl ContainerRecord {
    /// A container whose build failed after its create was answered: it
    /// never had a process (pid 0, and every signal path checks `exited`
    /// first), and reads as containerd's container whose task could not
    /// be created at StartContainer: exited, 128, `StartError`.
    fn failed_build(
        bundle: PathBuf,
        log_path: Option<PathBuf>,
        exec_path: ExecPath,
        message: String,
    ) -> Self {
        ContainerRecord {
            pid: 0,
            state: ContainerRuntimeState {
                status: RuntimeStatus::Exited,
                pid: None,
                exit_code: Some(FAILED_BUILD_EXIT_CODE),
                started_at: None,
                finished_at: Some(now_nanos()),
                reason: Some("StartError".into()),
                message: Some(message.clone()),
            },
            bundle,
            log: None,
            pipes: Vec::new(),
            exec_status: None,
            exec_error: Vec::new(),
            _stdin_writer: None,
            log_path,
            cgroup: None,
            pod_oom: None,
            attachers: Vec::new(),
            stdin_once: false,
            terminal: None,
            namespaces: None,
            oom_score_adj: None,
            exec_path,
            build_error: Some(message),
        }
    }

    pub(super) fn exited(&self) -> bool {
        self.state.status == RuntimeStatus::Exited
    }

    pub(super) fn write_records(&mut self, idx: usize, data: &[u8], eof: bool) {
        let pipe = &mut self.pipes[idx];
        let mut records = pipe.splitter.feed(data);
        if eof {
            records.extend(pipe.splitter.finish());
        }
        if let Some(log) = &mut self.log {
            for (partial, content) in records {
                let line = format_cri_log_line(chrono::Utc::now(), pipe.stream, partial, &content);
                // One write(2) per record, straight to the file: nothing waits
                // in a buffer if the monitor dies.
                let _ = log.write_all(&line);
            }
        }
        let stream = pipe.stream;
        if !data.is_empty() {
            self.attachers.retain(|a| {
                let fd = match stream {
                    CriLogStream::Stdout => &a.stdout,
                    CriLogStream::Stderr => &a.stderr,
                };
                match nix::unistd::write(fd, data) {
                    Ok(_) | Err(nix::errno::Errno::EAGAIN) => true,
                    // The client is gone (EPIPE): forget it.
                    Err(_) => false,
                }
            });
        }
    }

    /// Drain the container's output pipes and exec status without blocking.
    pub(super) fn drain(&mut self, final_drain: bool) {
        let mut i = 0;
        while i < self.pipes.len() {
            let mut data = Vec::new();
            let eof = read_available(self.pipes[i].fd.as_raw_fd(), &mut data) || final_drain;
            self.write_records(i, &data, eof);
            if eof {
                self.pipes.remove(i);
            } else {
                i += 1;
            }
        }
        self.drain_exec_status();
    }

    pub(super) fn drain_exec_status(&mut self) {
        if let Some(fd) = &self.exec_status
            && read_available(fd.as_raw_fd(), &mut self.exec_error)
        {
            self.exec_status = None;
        }
    }

    pub(super) fn record_exit(&mut self, code: i32) {
        self.drain_exec_status();
        // Attached clients get EOF: the container's output has ended.
        self.attachers.clear();
        self.namespaces = None;
        self.state.status = RuntimeStatus::Exited;
        self.state.exit_code = Some(code);
        self.state.finished_at = Some(now_nanos());
        if !self.exec_error.is_empty() {
            self.state.reason = Some("StartError".into());
            self.state.message = Some(String::from_utf8_lossy(&self.exec_error).trim().to_string());
        } else if code == 0 {
            self.state.reason = Some("Completed".into());
        } else if self.cgroup.as_ref().is_some_and(CgroupPath::oom_killed)
            || (code == 128 + libc::SIGKILL
                && self.cgroup.as_ref().is_some_and(|c| !c.exists())
                && self
                    .pod_oom
                    .as_ref()
                    .is_some_and(|(pod, before)| pod.oom_kills().is_some_and(|n| n > *before)))
        {
            // critest "should terminate with exitCode 137 and reason
            // OOMKilled"; the group still exists (libcontainer removes it
            // at delete), so its OOM kill counter can be read.
            self.state.reason = Some("OOMKilled".into());
        } else {
            self.state.reason = Some("Error".into());
        }
    }
}

pub(super) struct PendingStop {
    pub(super) conn: u64,
    pub(super) container: String,
    pub(super) kill_at: Option<Instant>,
    /// The stop signal, when the kernel dropped it: the container's init is
    /// pid 1 of its pid namespace and had no handler for it yet. It is sent
    /// again the moment a handler appears (see [`signal_disposition`]).
    pub(super) redeliver: Option<i32>,
    pub(super) started: Instant,
    /// When the dropped signal's disposition is next read.
    pub(super) next_check: Instant,
}

/// How often a stop whose signal the kernel dropped looks for the handler:
/// often at first (a program installs its handler within milliseconds of
/// its start), seldom after a second (one that never does waits for its
/// kill anyway).
pub(super) fn recheck_interval(since_stop: Duration) -> Duration {
    if since_stop < Duration::from_secs(1) {
        Duration::from_millis(20)
    } else {
        Duration::from_millis(200)
    }
}

/// What a process does with one signal, from /proc/<pid>/status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Disposition {
    Default,
    Ignored,
    Caught,
}

/// Reads `signal`'s disposition and whether the process is pid 1 of its
/// pid namespace (its NSpid line ends in 1 below the monitor's namespace)
/// from the text of /proc/<pid>/status. Pure, so it is tested on samples.
pub(super) fn parse_status(status: &str, signal: i32) -> Option<(Disposition, bool)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let mask = |name: &str| field(name).and_then(|v| u64::from_str_radix(v, 16).ok());
    let bit = 1u64.checked_shl(u32::try_from(signal - 1).ok()?)?;
    let disposition = if mask("SigCgt:")? & bit != 0 {
        Disposition::Caught
    } else if mask("SigIgn:")? & bit != 0 {
        Disposition::Ignored
    } else {
        Disposition::Default
    };
    let nspids: Vec<&str> = field("NSpid:")?.split_whitespace().collect();
    let ns_init = nspids.len() > 1 && nspids.last() == Some(&"1");
    Some((disposition, ns_init))
}

/// `parse_status` of a live process; None once it is gone.
pub(super) fn signal_disposition(pid: i32, signal: i32) -> Option<(Disposition, bool)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&status, signal)
}

impl Monitor {
    pub(super) fn libcontainer_err(id: &str, e: &dyn std::error::Error) -> RuntimeError {
        RuntimeError::Libcontainer {
            container: id.to_string(),
            message: error_chain(e),
        }
    }

    /// What a create request itself can get wrong, checked before it is
    /// answered: the id, the log file, the bundle's spec. The build follows
    /// ([`Self::build`]), after the answer with `build_after_answer`.
    pub(super) fn accept_create(
        &mut self,
        req: CreateContainer,
    ) -> Result<AcceptedCreate, RuntimeError> {
        let id = req.id.clone();
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(RuntimeError::InvalidRequest(format!(
                "container id {id:?} is not a plain name"
            )));
        }
        if self.containers.contains_key(&id) || self.args.runtime_root.join(&id).exists() {
            return Err(RuntimeError::AlreadyExists { container: id });
        }
        let log = match &req.log_path {
            Some(p) => {
                if let Some(parent) = p.parent() {
                    fs::create_dir_all(parent).map_err(|e| {
                        RuntimeError::io(format!("creating log directory {}", parent.display()), e)
                    })?;
                }
                Some(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .custom_flags(libc::O_CLOEXEC)
                        // CRI logs may hold secrets the application
                        // prints: not world-readable.
                        .mode(0o640)
                        .open(p)
                        .map_err(|e| {
                            RuntimeError::io(
                                format!("opening log file {} of container {id:?}", p.display()),
                                e,
                            )
                        })?,
                )
            }
            None => None,
        };
        // Read once: the cgroup, device rules, oom_score_adj and mount
        // propagation below all come from it (parsing it was a measurable
        // share of CreateContainer when each asked for its own copy).
        let spec_path = req.bundle.join("config.json");
        let spec: Spec = crate::util::json_file::read(&spec_path)
            .map_err(|e| RuntimeError::io(format!("reading {}", spec_path.display()), e))?;
        Ok(AcceptedCreate { req, spec, log })
    }

    /// Builds an accepted create whose answer was already sent: a failure
    /// cannot be answered any more, so it is kept as the container's state
    /// (exited, `StartError`, the build's report as the message) and is the
    /// answer to its Start. The container stays listed until it is deleted,
    /// as one whose command failed.
    pub(super) fn build_answered(&mut self, accepted: AcceptedCreate) {
        let id = accepted.req.id.clone();
        let bundle = accepted.req.bundle.clone();
        let log_path = accepted.req.log_path.clone();
        let exec_path = accepted.req.exec_path;
        let Err(e) = self.build(accepted) else {
            return;
        };
        let message = match &e {
            RuntimeError::Libcontainer { message, .. } => message.clone(),
            other => other.to_string(),
        };
        eprintln!("capcri monitor: building container {id:?} failed: {message}");
        // libcontainer removes what it made when its own steps fail, and the
        // steps after it delete the container; a failure before libcontainer
        // made its state leaves a directory no Container::load can read.
        // Either way nothing of it may be left for the delete to trip on.
        let root = self.args.runtime_root.join(&id);
        if root.exists() {
            match Container::load(root.clone()) {
                Ok(mut c) => {
                    let _ = c.delete(true);
                }
                Err(_) => {
                    let _ = fs::remove_dir_all(&root);
                }
            }
        }
        let record = ContainerRecord::failed_build(bundle, log_path, exec_path, message);
        if let Err(e) = write_state(&self.args.pod_dir, &id, &record.state) {
            eprintln!("capcri monitor: recording the failed build of container {id:?}: {e}");
        }
        self.containers.insert(id.clone(), record);
        // Told as an exit: the daemon serves a created container's record
        // from its cache while the pod's exit watch is live (it does not
        // wait on this build to answer ListContainers), and this is the
        // one change of a created container it would not otherwise hear of.
        self.notify_exit(&id, FAILED_BUILD_EXIT_CODE);
    }

    /// libcontainer's create of an accepted request, and what the monitor
    /// keeps of the container; the init's pid.
    pub(super) fn build(&mut self, accepted: AcceptedCreate) -> Result<u32, RuntimeError> {
        let AcceptedCreate { req, spec, log } = accepted;
        let id = req.id.clone();
        let (out_r, out_w) = cloexec_pipe()?;
        let (err_r, err_w) = cloexec_pipe()?;
        let (status_r, status_w) = cloexec_pipe()?;
        let (stdin_fd, stdin_writer) = if req.stdin && !req.tty {
            let (r, w) = cloexec_pipe()?;
            (r, Some(w))
        } else {
            (dev_null()?, None)
        };
        // With a terminal, the init's stdio is the pty libcontainer makes;
        // its master comes back over this socket.
        let console = if req.tty {
            Some(super::console::ConsoleSocket::bind(&self.args.pod_dir)?)
        } else {
            None
        };
        let mut executor = ReportingExecutor::new(status_w.as_raw_fd());
        if req.exec_path == ExecPath::Dmz {
            executor = executor.through_trampoline(self.trampoline()?);
        }
        let builder = ContainerBuilder::new(id.clone(), SyscallType::default())
            .with_root_path(self.args.runtime_root.clone())
            .map_err(|e| Self::libcontainer_err(&id, &e))?
            .with_executor(executor)
            .with_stdin(stdin_fd)
            .with_stdout(out_w)
            .with_stderr(err_w)
            .with_console_socket(console.as_ref().map(|c| c.path()))
            .as_init(&req.bundle)
            // The systemd driver's `slice:prefix:name`: libcontainer starts
            // the container's scope over D-Bus.
            .with_systemd(cgroups_path(&spec).is_some_and(|p| !p.starts_with("/")))
            .as_sibling(false)
            .with_detach(true);
        // libcontainer's build writes the spec's oom_score_adj into the
        // calling process, the monitor, so its children inherit it: put the
        // monitor's own back after, or the next exec or container of the
        // pod would inherit this container's.
        let monitor_oom = fs::read_to_string("/proc/self/oom_score_adj").ok();
        let capture = Capture::start();
        let built = builder.build();
        let report = capture.map(Capture::finish).unwrap_or_default();
        if let Some(v) = &monitor_oom {
            let _ = fs::write("/proc/self/oom_score_adj", v.trim());
        }
        // Our copy of the write end must go, or EOF (= exec succeeded) could
        // never be seen; the init holds its own copy.
        drop(status_w);
        set_nonblocking(status_r.as_raw_fd());
        let container = match built {
            Ok(c) => c,
            Err(e) => {
                let mut detail = Vec::new();
                read_available(status_r.as_raw_fd(), &mut detail);
                let detail = String::from_utf8_lossy(&detail).trim().to_string();
                let message = if detail.is_empty() {
                    failure_message("creating the container failed", &e, &report)
                } else {
                    format!("the container's process cannot be started: {detail}")
                };
                self.reap();
                return Err(RuntimeError::Libcontainer {
                    container: id,
                    message,
                });
            }
        };
        let pid = container.pid().map(|p| p.as_raw()).unwrap_or(0);
        if let Err(e) = Self::scope_devices(&spec) {
            if let Ok(mut c) = Container::load(self.args.runtime_root.join(&id)) {
                let _ = c.delete(true);
            }
            self.reap();
            return Err(RuntimeError::Libcontainer {
                container: id,
                message: format!("applying the container's device rules: {e}"),
            });
        }
        // libcontainer's state.json carries the container's annotations and
        // is made under the monitor's umask 022 (which the containers
        // inherit): root only, like every other state file. Later saves
        // truncate the same inode, so the mode stays.
        {
            use std::os::unix::fs::PermissionsExt;
            let dir = self.args.runtime_root.join(&id);
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
            let _ = fs::set_permissions(dir.join("state.json"), fs::Permissions::from_mode(0o600));
        }
        // Now, and only now, the init is known to be the container's own
        // process (libcontainer's code, waiting for Start): what its /proc
        // entries show is what the container was given.
        let oom_score_adj = spec_oom_score_adj(&spec).or_else(|| {
            fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        });
        let namespaces = match super::tenant::ContainerNamespaces::open(pid) {
            Ok(ns) => ns,
            Err(e) => {
                if let Ok(mut c) = Container::load(self.args.runtime_root.join(&id)) {
                    let _ = c.delete(true);
                }
                self.reap();
                return Err(RuntimeError::Libcontainer {
                    container: id,
                    message: format!("keeping the container's namespaces for exec: {e}"),
                });
            }
        };
        set_nonblocking(out_r.as_raw_fd());
        set_nonblocking(err_r.as_raw_fd());
        let terminal = match console.as_ref().map(|c| c.receive_master()) {
            None => None,
            Some(Ok(master)) => Some(master),
            Some(Err(e)) => {
                if let Ok(mut c) = Container::load(self.args.runtime_root.join(&id)) {
                    let _ = c.delete(true);
                }
                self.reap();
                return Err(RuntimeError::Libcontainer {
                    container: id,
                    message: e.to_string(),
                });
            }
        };
        drop(console);
        // Output: the terminal (one stream, logged as stdout) or the pipes.
        let pipes = match &terminal {
            Some(master) => vec![LogPipe {
                fd: master
                    .try_clone()
                    .map_err(|e| RuntimeError::io("duplicating the terminal", e))?,
                stream: CriLogStream::Stdout,
                splitter: LineSplitter::default(),
            }],
            None => vec![
                LogPipe {
                    fd: out_r,
                    stream: CriLogStream::Stdout,
                    splitter: LineSplitter::default(),
                },
                LogPipe {
                    fd: err_r,
                    stream: CriLogStream::Stderr,
                    splitter: LineSplitter::default(),
                },
            ],
        };
        let stdin_writer = match (&terminal, req.stdin) {
            (Some(master), true) => Some(
                master
                    .try_clone()
                    .map_err(|e| RuntimeError::io("duplicating the terminal", e))?,
            ),
            _ => stdin_writer,
        };
        let record = ContainerRecord {
            pid,
            state: ContainerRuntimeState {
                status: RuntimeStatus::Created,
                pid: Some(pid as u32),
                exit_code: None,
                started_at: None,
                finished_at: None,
                reason: None,
                message: None,
            },
            bundle: req.bundle.clone(),
            log,
            pipes,
            terminal,
            exec_status: Some(status_r),
            exec_error: Vec::new(),
            _stdin_writer: stdin_writer,
            attachers: Vec::new(),
            stdin_once: req.stdin_once,
            log_path: req.log_path.clone(),
            cgroup: cgroup_of(&spec),
            pod_oom: cgroups_path(&spec)
                .filter(|p| !p.starts_with("/"))
                .and_then(|_| cgroup_of(&spec)?.parent())
                .and_then(|pod| {
                    let n = pod.oom_kills()?;
                    Some((pod, n))
                }),
            namespaces: Some(namespaces),
            oom_score_adj,
            exec_path: req.exec_path,
            build_error: None,
        };
        write_state(&self.args.pod_dir, &id, &record.state)?;
        self.containers.insert(id.clone(), record);
        if let Err(e) = Self::apply_propagation(&spec, pid) {
            let _ = self.delete(&id);
            return Err(RuntimeError::Libcontainer {
                container: id,
                message: e.to_string(),
            });
        }
        Ok(pid as u32)
    }

    /// The device cgroup of a container in a systemd scope. libcgroups'
    /// systemd manager turns resources into unit properties but has no
    /// device rules (its controllers are cpu, cpuset, memory, pids, io):
    /// left alone, a root container with CAP_MKNOD could open the host's
    /// disk. The eBPF program its cgroupfs v2 manager attaches is attached
    /// here to the scope, before Start, so the init and every exec (which
    /// join the same cgroup) are under it. A no-op for cgroupfs paths.
    fn scope_devices(spec: &Spec) -> Result<(), String> {
        let Some(path) = cgroups_path(spec) else {
            return Ok(());
        };
        if path.starts_with("/") {
            return Ok(());
        }
        let dir = path
            .to_str()
            .and_then(crate::util::cgroup_paths::cgroup_dir_of)
            .ok_or_else(|| format!("{} is not a systemd cgroups path", path.display()))?;
        let devices = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.devices().clone());
        libcgroups::v2::devices::Devices::apply_devices(
            &Path::new("/sys/fs/cgroup").join(dir.trim_start_matches('/')),
            &devices,
        )
        .map_err(|e| e.to_string())
    }

    /// Finishes what libcontainer leaves out: the volumes' propagation
    /// options (see `propagation`), from the spec of the bundle it has
    /// just used, before the container's process can run.
    fn apply_propagation(spec: &Spec, pid: i32) -> Result<(), RuntimeError> {
        super::propagation::apply_in_container(pid, &super::propagation::propagation_changes(spec))
    }

    /// The sealed trampoline memfd, made once per monitor. Its fd is
    /// close-on-exec: the container's init (a clone) has it until its own
    /// exec, which is all `execveat` needs.
    pub(super) fn trampoline(&mut self) -> Result<RawFd, RuntimeError> {
        if let Some(fd) = &self.dmz_memfd {
            return Ok(fd.as_raw_fd());
        }
        let fd = sealed_trampoline()?;
        let raw = fd.as_raw_fd();
        self.dmz_memfd = Some(fd);
        Ok(raw)
    }

    /// Reopen the container's CRI log at its path (kubelet renamed the old
    /// file to rotate it). Output read so far goes to the old file first;
    /// partial lines stay in the splitters and continue in the new one.
    pub(super) fn reopen_log(&mut self, id: &str) -> Result<(), RuntimeError> {
        let rec = self.record(id)?;
        if rec.state.status != RuntimeStatus::Running {
            return Err(RuntimeError::InvalidRequest(format!(
                "container {id:?} is {:?}: only a running container's log can be reopened",
                rec.state.status
            )));
        }
        let Some(path) = rec.log_path.clone() else {
            return Ok(());
        };
        rec.drain(false);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_CLOEXEC)
            .mode(0o640)
            .open(&path)
            .map_err(|e| {
                RuntimeError::io(
                    format!("reopening log file {} of container {id:?}", path.display()),
                    e,
                )
            })?;
        rec.log = Some(file);
        Ok(())
    }

    /// The pod init's leaf (cgroupfs; a systemd scope goes with its last
    /// process). The pod's cgroup is the daemon's to remove, and only when
    /// capcri made it: kubelet's stays (`pod::cgroups`).
    pub(super) fn remove_init_cgroup(&mut self) {
        let Some(rel) = self.args.init_cgroup.clone() else {
            return;
        };
        let Some(rel) = rel.strip_prefix('/') else {
            return;
        };
        for dir in crate::util::cgroupfs::dirs_of(Path::new(rel)) {
            let _ = fs::remove_dir(dir);
        }
    }

    pub(super) fn record(&mut self, id: &str) -> Result<&mut ContainerRecord, RuntimeError> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::NotFound {
                container: id.to_string(),
            })
    }

    /// Start, answered as the request asks (see `Request::Start`): with
    /// `reply_state`, the state after the start, or the state the
    /// container is in when it cannot be started, so the daemon needs no
    /// `State` round trip before or after.
    pub(super) fn start_answering(
        &mut self,
        id: &str,
        reply_state: bool,
    ) -> Result<Response, RuntimeError> {
        // A build that failed after its answer: the answer to every Start,
        // whichever form it asks for.
        if let Some(message) = &self.record(id)?.build_error {
            return Err(RuntimeError::Libcontainer {
                container: id.to_string(),
                message: message.clone(),
            });
        }
        if !reply_state {
            return self.start_container(id).map(|()| Response::Ok);
        }
        let state = self.state(id)?;
        if state.status != RuntimeStatus::Created {
            return Ok(Response::State(state));
        }
        self.start_container(id)?;
        self.state(id).map(Response::Started)
    }

    pub(super) fn start_container(&mut self, id: &str) -> Result<(), RuntimeError> {
        let root = self.args.runtime_root.join(id);
        let pod_dir = self.args.pod_dir.clone();
        let rec = self.record(id)?;
        if rec.state.status != RuntimeStatus::Created {
            return Err(RuntimeError::InvalidRequest(format!(
                "container {id:?} is {:?}, only a created container can be started",
                rec.state.status
            )));
        }
        let mut container = Container::load(root).map_err(|e| Self::libcontainer_err(id, &e))?;
        let capture = Capture::start();
        let started = container.start();
        let report = capture.map(Capture::finish).unwrap_or_default();
        started.map_err(|e| RuntimeError::Libcontainer {
            container: id.to_string(),
            message: failure_message("starting the container failed", &e, &report),
        })?;
        rec.state.status = RuntimeStatus::Running;
        rec.state.started_at = Some(now_nanos());
        // Wait for the verdict of execve: EOF = the command runs; data = why
        // it does not (then the init exits 255 right away).
        let deadline = Instant::now() + EXEC_CONFIRM_TIMEOUT;
        while rec.exec_status.is_some() && Instant::now() < deadline {
            if let Some(fd) = &rec.exec_status {
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll on one pollfd we own.
                unsafe { libc::poll(&mut pfd, 1, 100) };
            }
            rec.drain_exec_status();
        }
        let failed = !rec.exec_error.is_empty();
        let mut exit = None;
        if failed {
            // The init is about to exit; wait for it so the state is final.
            let pid = Pid::from_raw(rec.pid);
            if let Ok(status) = waitpid(pid, None)
                && let Some((_, code)) = exit_code_of(status)
            {
                rec.drain(false);
                rec.record_exit(code);
                exit = Some(code);
            }
        }
        write_state(&pod_dir, id, &rec.state)?;
        if failed {
            let msg = rec.state.message.clone().unwrap_or_default();
            // Reaped here, not by `reap`: the watchers (the daemon's exit
            // tracking and event stream) hear of it all the same.
            if let Some(code) = exit {
                self.notify_exit(id, code);
            }
            return Err(RuntimeError::Libcontainer {
                container: id.to_string(),
                message: format!("the container's process could not be executed: {msg}"),
            });
        }
        Ok(())
    }

    pub(super) fn signal(pid: i32, signal: i32) -> Result<(), RuntimeError> {
        let sig = Signal::try_from(signal).map_err(|_| {
            RuntimeError::InvalidRequest(format!("{signal} is not a valid signal number"))
        })?;
        match nix::sys::signal::kill(Pid::from_raw(pid), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(RuntimeError::io(
                format!("sending signal {sig} to pid {pid}"),
                e.into(),
            )),
        }
    }

    pub(super) fn kill(&mut self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        let rec = self.record(id)?;
        if rec.exited() {
            return Ok(());
        }
        // The monitor has not reaped this pid, so it cannot have been reused.
        Self::signal(rec.pid, signal)
    }

    pub(super) fn stop(
        &mut self,
        conn: u64,
        id: &str,
        timeout: Duration,
        signal: i32,
    ) -> Result<Reply, RuntimeError> {
        let rec = self.record(id)?;
        if rec.exited() {
            return Ok(Reply::Now(Response::Ok));
        }
        let pid = rec.pid;
        let signal = if signal == 0 { libc::SIGTERM } else { signal };
        let before = signal_disposition(pid, signal);
        Self::signal(pid, signal)?;
        let kill_at = if timeout.is_zero() || signal == libc::SIGKILL {
            Self::signal(pid, libc::SIGKILL)?;
            None
        } else {
            Some(Instant::now() + timeout)
        };
        // The kernel discards a signal sent to a pid namespace's init that
        // has no handler for it (SIG_DFL; SIGNAL_UNKILLABLE), even from an
        // ancestor namespace. A stop right after the start (critest stops
        // `top` that way) lands before the program installed its handler:
        // the signal was lost and the stop would wait the whole timeout for
        // the kill. So it is sent again once a handler appears. Dropped for
        // sure when there was no handler after the send; when one appeared
        // between the two reads, it may have been delivered or not, and a
        // second signal is the lesser harm than a lost one.
        let after = signal_disposition(pid, signal);
        let redeliver = match (before, after) {
            _ if kill_at.is_none() => None,
            (_, Some((Disposition::Default, true))) => Some(signal),
            (Some((Disposition::Default, true)), Some((Disposition::Caught, true))) => {
                eprintln!(
                    "capcri monitor: container {id:?}: its handler for signal {signal} appeared while the stop signal was sent; sending it once more"
                );
                let _ = Self::signal(pid, signal);
                None
            }
            _ => None,
        };
        self.stops.push(PendingStop {
            conn,
            container: id.to_string(),
            kill_at,
            redeliver,
            started: Instant::now(),
            next_check: Instant::now() + recheck_interval(Duration::ZERO),
        });
        Ok(Reply::Deferred)
    }

    /// Pending stops whose signal the kernel dropped: send it again once
    /// the init handles it; forget it once the init ignores it on purpose.
    pub(super) fn redeliver_stop_signals(&mut self) {
        let now = Instant::now();
        for s in self.stops.iter_mut() {
            let Some(signal) = s.redeliver else {
                continue;
            };
            if now < s.next_check {
                continue;
            }
            s.next_check = now + recheck_interval(s.started.elapsed());
            let Some(rec) = self.containers.get(&s.container) else {
                s.redeliver = None;
                continue;
            };
            if rec.exited() {
                s.redeliver = None;
                continue;
            }
            match signal_disposition(rec.pid, signal) {
                Some((Disposition::Caught, _)) => {
                    eprintln!(
                        "capcri monitor: container {:?}: signal {signal} arrived before its handler and was dropped by the kernel; sent again {:?} after the stop began",
                        s.container,
                        s.started.elapsed()
                    );
                    let _ = Self::signal(rec.pid, signal);
                    s.redeliver = None;
                }
                Some((Disposition::Default, _)) => {}
                Some((Disposition::Ignored, _)) | None => s.redeliver = None,
            }
        }
    }

    pub(super) fn state(&mut self, id: &str) -> Result<ContainerRuntimeState, RuntimeError> {
        let rec = self.record(id)?;
        rec.drain(false);
        Ok(rec.state.clone())
    }

    /// Kill (if needed) and reap synchronously: used by delete and shutdown,
    /// where the answer must mean "gone".
    pub(super) fn kill_and_reap(&mut self, id: &str) {
        let pod_dir = self.args.pod_dir.clone();
        let Some(rec) = self.containers.get_mut(id) else {
            return;
        };
        if !rec.exited() {
            let _ = Self::signal(rec.pid, libc::SIGKILL);
            if let Ok(status) = waitpid(Pid::from_raw(rec.pid), None)
                && let Some((_, code)) = exit_code_of(status)
            {
                rec.record_exit(code);
                let _ = write_state(&pod_dir, id, &rec.state);
                rec.drain(true);
                self.notify_exit(id, code);
                return;
            }
        }
        rec.drain(true);
    }

    pub(super) fn delete(&mut self, id: &str) -> Result<(), RuntimeError> {
        let root = self.args.runtime_root.join(id);
        if !self.containers.contains_key(id) && !root.exists() {
            // Idempotent: deleting twice is fine.
            remove_container_dir(&self.args.pod_dir, id)?;
            return Ok(());
        }
        self.kill_and_reap(id);
        if let Some(cgroup) = self.containers.get(id).and_then(|r| r.cgroup.clone()) {
            cgroup.kill_all(Duration::from_secs(2));
        }
        if root.exists() {
            let mut container =
                Container::load(root).map_err(|e| Self::libcontainer_err(id, &e))?;
            if !Self::delete_directly(id, &mut container)? {
                container
                    .delete(true)
                    .map_err(|e| Self::libcontainer_err(id, &e))?;
            }
        }
        self.containers.remove(id);
        remove_container_dir(&self.args.pod_dir, id)?;
        self.answer_stops(id);
        Ok(())
    }

    /// What libcontainer's `delete` does for a stopped container on the
    /// cgroupfs driver, without its cgroup manager: remove the group from
    /// every hierarchy, then the container's state directory. On a v1 host
    /// libcgroups' manager parses the whole of `/proc/self/mountinfo` once
    /// per controller to find where it is mounted (and to its end for one
    /// that is not), and a node's mount table grows with its pods: at 250
    /// pods RemoveContainer took 58 ms against containerd's 32 (`capcri-bench
    /// --scale 250`), 4.5 ms at 10 pods. capcri knows the hierarchies
    /// (`util::cgroupfs`).
    ///
    /// false, and nothing done, for what only libcontainer's `delete`
    /// handles: the systemd driver (its scope is stopped over D-Bus), a
    /// container not yet stopped (it kills it), OCI poststop hooks (capcri's
    /// specs have none, but a bundle is not trusted to agree), a cgroup
    /// path capcri would not have written.
    fn delete_directly(id: &str, container: &mut Container) -> Result<bool, RuntimeError> {
        use libcontainer::config::YoukiConfig;
        use libcontainer::container::ContainerStatus;
        if container.systemd() {
            return Ok(false);
        }
        container
            .refresh_status()
            .map_err(|e| Self::libcontainer_err(id, &e))?;
        if container.status() != ContainerStatus::Stopped {
            return Ok(false);
        }
        let Ok(config) = YoukiConfig::load(&container.root) else {
            return Ok(false);
        };
        if config
            .hooks
            .as_ref()
            .is_some_and(|h| h.poststop().as_ref().is_some_and(|p| !p.is_empty()))
        {
            return Ok(false);
        }
        let Some(dir) = config
            .cgroup_path
            .to_str()
            .and_then(crate::util::cgroup_paths::cgroup_dir_of)
            .filter(|d| d.starts_with('/'))
        else {
            return Ok(false);
        };
        let group = CgroupPath::new(Path::new(&dir));
        group.kill_all(Duration::from_secs(2));
        group
            .remove(Duration::from_secs(2))
            .map_err(|message| RuntimeError::Libcontainer {
                container: id.to_string(),
                message,
            })?;
        fs::remove_dir_all(&container.root).map_err(|e| {
            RuntimeError::io(
                format!(
                    "removing the state of container {id:?} at {}",
                    container.root.display()
                ),
                e,
            )
        })?;
        Ok(true)
    }

    pub(super) fn shutdown_pod(&mut self) {
        for job in &self.execs {
            let _ = Self::signal(job.pid, libc::SIGKILL);
        }
        let ids: Vec<String> = self.containers.keys().cloned().collect();
        for id in ids {
            if let Err(e) = self.delete(&id) {
                eprintln!("capcri monitor: deleting container {id:?} at pod shutdown: {e}");
            }
        }
        self.reap();
        if let Some(pid) = self.pod_init.take() {
            // Ending the namespace's init also SIGKILLs anything left in it.
            let _ = Self::signal(pid, libc::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        self.remove_init_cgroup();
        if let Err(e) = unpin_namespaces(&self.args.pod_dir) {
            eprintln!("capcri monitor: {e}");
        }
        let _ = fs::remove_file(self.args.pod_dir.join(SOCKET_NAME));
        let _ = fs::remove_dir(self.args.pod_dir.join("containers"));
        self.shutdown = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsh\nUmask:\t0022\nState:\tS (sleeping)\nNSpid:\t4242\t1\n\
SigQ:\t0/63408\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n\
SigBlk:\t0000000000000000\nSigIgn:\t0000000000000004\nSigCgt:\t0000000000004002\n";

    #[test]
    fn dispositions_and_namespace_init_come_from_proc_status() {
        // SigCgt 0x4002: SIGINT (2) and SIGTERM (15); SigIgn 0x4: SIGQUIT.
        assert_eq!(
            parse_status(STATUS, libc::SIGTERM),
            Some((Disposition::Caught, true))
        );
        assert_eq!(
            parse_status(STATUS, libc::SIGQUIT),
            Some((Disposition::Ignored, true))
        );
        assert_eq!(
            parse_status(STATUS, libc::SIGUSR1),
            Some((Disposition::Default, true))
        );
        // Not pid 1 of a namespace below ours: a shared pod pid namespace,
        // or the host's.
        let shared = STATUS.replace("NSpid:\t4242\t1", "NSpid:\t4242\t7");
        assert_eq!(
            parse_status(&shared, libc::SIGUSR1),
            Some((Disposition::Default, false))
        );
        let host = STATUS.replace("NSpid:\t4242\t1", "NSpid:\t1");
        assert!(!parse_status(&host, libc::SIGTERM).unwrap().1);
        // A process name cannot forge a field: the kernel escapes it, and
        // the first line with the prefix wins.
        let named = format!("Name:\tSigCgt: ffffffffffffffff\n{STATUS}");
        assert_eq!(
            parse_status(&named, libc::SIGUSR1),
            Some((Disposition::Default, true))
        );
        assert_eq!(parse_status(STATUS, 0), None);
        assert_eq!(parse_status(STATUS, 65), None);
        assert_eq!(parse_status("garbage", libc::SIGTERM), None);
    }
}
