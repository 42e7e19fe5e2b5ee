//! Processes started inside a running container (exec), by the monitor
//! itself rather than by libcontainer's tenant builder.
//!
//! Why: libcontainer 0.7's tenant builder rebuilds the `linux` section
//! without `seccomp`, so exec'd processes ran unfiltered (`Seccomp: 0` in
//! /proc/self/status) next to a filtered init (`Seccomp: 2`), the critest
//! specs "should support seccomp default which is runtime/default on the
//! container" and "... localhost/profile" fail, and an exec escapes the
//! profile the container was given. Here the child joins the container's
//! namespaces and cgroups and applies the container's process section
//! (user, capabilities, rlimits, no_new_privs) and its seccomp filter in
//! the order libcontainer's init uses for the container itself.
//!
//! The child is a copy of the monitor until its execve: it holds host fds,
//! the host's root and cwd, and every capability. The order of its steps
//! ([`plan`]) is what keeps the container from reaching any of that, so it
//! is a pure function with its own tests.
//!
//! The monitor is single-threaded, so the forked child may allocate.

use std::cell::Cell;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;

use libcontainer::oci_spec::runtime::{LinuxSeccomp, Process};

use super::dmz::{probe_filesystem, resolve_program};
use super::*;

/// The descriptors the process gets as 0, 1 and 2. With `tty`, all three
/// are the terminal's slave side, which becomes the controlling terminal
/// of a new session (as `runc exec -t` does).
pub(super) struct TenantStdio {
    pub(super) stdin: OwnedFd,
    pub(super) stdout: OwnedFd,
    pub(super) stderr: OwnedFd,
    pub(super) tty: bool,
}

/// The namespaces an exec joins, opened from the container's init right
/// after create, while that init is still libcontainer's code waiting for
/// Start: nothing of the container's has run yet, so these are the
/// namespaces the container was given. The monitor keeps the fds until the
/// container exits; an exec never reads `/proc/<init_pid>/ns` again,
/// because by then the container controls what that path names (its init
/// can `unshare` a new mount or user namespace, and a dead init's pid can
/// be reused).
pub(super) struct ContainerNamespaces {
    /// Namespaces other than user and pid that differ from the monitor's,
    /// in the order they are joined (see [`JOIN_ORDER`]).
    joins: Vec<(OwnedFd, libc::c_int)>,
    user: Option<OwnedFd>,
    pid: Option<OwnedFd>,
}

/// Order of `setns` for everything but the user namespace, which comes
/// after all of them (see [`Step::JoinUserNamespace`]): the mount namespace
/// first, so the child's root and cwd are the container's before anything
/// else changes.
const JOIN_ORDER: [(&str, libc::c_int); 5] = [
    ("mnt", libc::CLONE_NEWNS),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
];

impl ContainerNamespaces {
    /// Opens the namespaces of `init_pid` that differ from the monitor's.
    /// Call only while the init is known to be the container's own,
    /// unstarted process (see the type's docs).
    pub(super) fn open(init_pid: i32) -> Result<Self, RuntimeError> {
        let theirs = PathBuf::from(format!("/proc/{init_pid}/ns"));
        let own = Path::new("/proc/self/ns");
        let differs = |name: &str| {
            theirs.join(name).exists() && !same_file(&theirs.join(name), &own.join(name))
        };
        let mut joins = Vec::new();
        for (name, flag) in JOIN_ORDER {
            if differs(name) {
                joins.push((open_ns(&theirs.join(name))?, flag));
            }
        }
        let optional = |name: &str| -> Result<Option<OwnedFd>, RuntimeError> {
            if differs(name) {
                open_ns(&theirs.join(name)).map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(ContainerNamespaces {
            joins,
            user: optional("user")?,
            pid: optional("pid")?,
        })
    }

    fn join_fd(&self, flag: libc::c_int) -> Option<&OwnedFd> {
        self.joins
            .iter()
            .find(|(_, f)| *f == flag)
            .map(|(fd, _)| fd)
    }
}

/// What an exec needs from the container's record besides its spec.
pub(super) struct TenantTarget<'a> {
    pub(super) id: &'a str,
    pub(super) bundle: &'a Path,
    pub(super) namespaces: &'a ContainerNamespaces,
    /// The container's oom_score_adj (its spec's, else what its init had
    /// at create), so the exec does not keep the monitor's.
    pub(super) oom_score_adj: Option<i32>,
    /// The sealed trampoline when the container runs on the `dmz` exec
    /// path: its execs take the same two execves as its init, so the
    /// capabilities the policy predicted hold for them too.
    pub(super) trampoline: Option<RawFd>,
}

/// Everything the child needs, prepared before fork so the child only
/// makes system calls.
struct Prepared<'a> {
    ns: &'a ContainerNamespaces,
    oom_score_adj: Option<i32>,
    trampoline: Option<RawFd>,
    cgroup_procs: Vec<PathBuf>,
    cwd: CString,
    args: Vec<String>,
    c_args: Vec<CString>,
    env: Vec<CString>,
    path_var: Option<Vec<u8>>,
    process: Process,
    seccomp: Option<LinuxSeccomp>,
}

/// One step of the child between fork and execve. The order is the
/// security argument, so it is computed by [`plan`], a pure function the
/// unit tests check, and the child only runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// PR_SET_DUMPABLE 0. The fork already inherited it (the parent clears
    /// it around the fork); set again so the child never depends on the
    /// parent's state. A non-dumpable process cannot be ptraced, nor its
    /// /proc/<pid>/{root,cwd,fd,mem} opened, by anything without
    /// CAP_SYS_PTRACE in the monitor's user namespace, so the container
    /// cannot reach into the child while it still holds host resources.
    /// execve resets it for the user's program.
    NonDumpable,
    ResetSignals,
    /// Through the host's /proc, before the mount namespace changes, and
    /// while the child may still lower it (CAP_SYS_RESOURCE).
    OomScoreAdj,
    /// Through the host's /sys/fs/cgroup, before the mount namespace
    /// changes (the container's may not show it).
    JoinCgroups,
    /// `setns` of `JOIN_ORDER[i]`.
    JoinNamespace(usize),
    /// Last of the namespaces: joining the container's user namespace
    /// makes the child a process of that namespace, so it happens once its
    /// root and cwd are already the container's. The monitor holds
    /// CAP_SYS_ADMIN over every namespace its containers have (it created
    /// their user namespaces), so the kernel lets it join the others from
    /// outside first; where it does not (EPERM on the mount namespace, a
    /// monitor that is itself in a foreign user namespace), [`run_step`]
    /// joins the user namespace first, the order runc's nsexec uses.
    JoinUserNamespace,
    /// KEYCTL_JOIN_SESSION_KEYRING with no name, as runc does: the exec'd
    /// process gets a new session keyring, owned by the container's root,
    /// instead of the monitor's.
    NewSessionKeyring,
    Stdio,
    /// Every fd above 2 closed but the error pipe (close-on-exec) and the
    /// trampoline memfd (close-on-exec, needed by execveat): no monitor fd
    /// can be reached through /proc/self/fd by the chdir below
    /// (CVE-2024-21626) or survive into the container.
    CloseFds,
    Rlimits,
    /// Without no_new_privs, a filter needs CAP_SYS_ADMIN: installed while
    /// the child still has every capability (as libcontainer's init does).
    SeccompPrivileged,
    Identity,
    NoNewPrivs,
    Seccomp,
    /// Inside the container's mount namespace and root, as the container's
    /// user, with no monitor fd left.
    Chdir,
    /// getcwd must name a path inside the container's root: a cwd reached
    /// through a magic link to an outside directory reads as unreachable
    /// (ENOENT or a path not starting with '/').
    VerifyCwd,
    Exec,
}

/// The child's steps, in order.
fn plan(p: &Prepared) -> Vec<Step> {
    let nnp = p.process.no_new_privileges() == Some(true);
    let mut steps = vec![Step::NonDumpable, Step::ResetSignals];
    if p.oom_score_adj.is_some() {
        steps.push(Step::OomScoreAdj);
    }
    steps.push(Step::JoinCgroups);
    for (i, (_, flag)) in JOIN_ORDER.iter().enumerate() {
        if p.ns.join_fd(*flag).is_some() {
            steps.push(Step::JoinNamespace(i));
        }
    }
    if p.ns.user.is_some() {
        steps.push(Step::JoinUserNamespace);
    }
    steps.extend([
        Step::NewSessionKeyring,
        Step::Stdio,
        Step::CloseFds,
        Step::Rlimits,
    ]);
    if !nnp && p.seccomp.is_some() {
        steps.push(Step::SeccompPrivileged);
    }
    steps.push(Step::Identity);
    if nnp {
        steps.push(Step::NoNewPrivs);
        if p.seccomp.is_some() {
            steps.push(Step::Seccomp);
        }
    }
    steps.extend([Step::Chdir, Step::VerifyCwd, Step::Exec]);
    steps
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn open_ns(path: &Path) -> Result<OwnedFd, RuntimeError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| RuntimeError::io(format!("opening namespace {}", path.display()), e))
}

/// `cgroup.procs` of the container's cgroup in every hierarchy where it
/// exists: each v1 controller mount and the unified one on a hybrid host
/// (`/sys/fs/cgroup/unified`), or `/sys/fs/cgroup` itself on a v2-only one.
/// A systemd `slice:prefix:name` is its scope's directory (a scope is
/// delegated: joining it directly is allowed, as runc's exec does).
fn cgroup_procs_files(cgroups_path: &Path) -> Vec<PathBuf> {
    let Some(dir) = cgroups_path
        .to_str()
        .and_then(crate::util::cgroup_paths::cgroup_dir_of)
    else {
        return Vec::new();
    };
    // One entry per hierarchy: the cpu/cpuacct aliases are not listed, so
    // the pid is written once to each.
    crate::util::cgroupfs::dirs_of(Path::new(&dir))
        .into_iter()
        .map(|d| d.join("cgroup.procs"))
        .filter(|p| p.exists())
        .collect()
}

fn cstring(what: &str, s: &[u8]) -> Result<CString, RuntimeError> {
    CString::new(s).map_err(|_| RuntimeError::InvalidRequest(format!("{what} contains a NUL byte")))
}

fn prepare<'a>(target: &TenantTarget<'a>, spec: &ExecSpec) -> Result<Prepared<'a>, RuntimeError> {
    let id = target.id;
    let config = target.bundle.join("config.json");
    let oci: Spec = crate::util::json_file::read(&config).map_err(|e| {
        RuntimeError::io(
            format!("reading {} of container {id:?}", config.display()),
            e,
        )
    })?;
    let base = oci.process().clone().unwrap_or_default();
    let linux = oci.linux().clone().unwrap_or_default();
    let cgroup_procs = linux
        .cgroups_path()
        .as_deref()
        .map(cgroup_procs_files)
        .unwrap_or_default();
    let env = exec::merge_env(base.env().as_deref().unwrap_or_default(), &spec.env);
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .map(|p| p.as_bytes().to_vec());
    let cwd = spec
        .cwd
        .clone()
        .map(PathBuf::from)
        .unwrap_or_else(|| base.cwd().clone());
    Ok(Prepared {
        ns: target.namespaces,
        oom_score_adj: target.oom_score_adj,
        trampoline: target.trampoline,
        cgroup_procs,
        cwd: cstring("the working directory", cwd.as_os_str().as_bytes())?,
        args: spec.args.clone(),
        c_args: spec
            .args
            .iter()
            .map(|a| cstring("an argument", a.as_bytes()))
            .collect::<Result<_, _>>()?,
        env: env
            .iter()
            .map(|e| cstring("an environment entry", e.as_bytes()))
            .collect::<Result<_, _>>()?,
        path_var,
        process: {
            let mut p = base;
            let user = UserBuilder::default()
                .uid(spec.uid)
                .gid(spec.gid)
                .additional_gids(spec.additional_gids.clone())
                .build()
                .map_err(|e| RuntimeError::InvalidRequest(e.to_string()))?;
            p.set_user(user);
            p
        },
        seccomp: linux.seccomp().clone(),
    })
}

fn get_dumpable() -> libc::c_int {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }
}

fn set_dumpable(value: libc::c_int) -> libc::c_int {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, value as libc::c_ulong, 0, 0, 0) }
}

/// Starts `spec` in the container `target` names; returns the pid, a
/// direct child of the monitor. Fails, with the child's reason, when the
/// process could not be set up or its program could not be executed.
pub(super) fn spawn_tenant(
    target: &TenantTarget,
    spec: &ExecSpec,
    stdio: TenantStdio,
) -> Result<i32, RuntimeError> {
    let id = target.id;
    let prepared = prepare(target, spec)?;
    let (err_r, err_w) = cloexec_pipe()?;
    // The child is non-dumpable from its first instruction: the flag
    // belongs to the mm, which fork copies.
    let was_dumpable = get_dumpable();
    if was_dumpable != 0 && set_dumpable(0) != 0 {
        return Err(RuntimeError::io(
            "PR_SET_DUMPABLE before an exec",
            std::io::Error::last_os_error(),
        ));
    }
    // A pid namespace only applies to children: switch the monitor's
    // pid_for_children for the one fork, and back right after.
    let own_pid_ns = match &prepared.ns.pid {
        Some(ns) => {
            let own = open_ns(Path::new("/proc/self/ns/pid"))?;
            // SAFETY: setns with a namespace fd we own.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
                let e = std::io::Error::last_os_error();
                set_dumpable(was_dumpable);
                return Err(RuntimeError::io(
                    format!("joining the pid namespace of container {id:?}"),
                    e,
                ));
            }
            Some(own)
        }
        None => None,
    };
    // SAFETY: the monitor is single-threaded, so the child is a full copy.
    let pid = unsafe { libc::fork() };
    let fork_err = std::io::Error::last_os_error();
    if pid == 0 {
        drop(err_r);
        let msg = child(&prepared, &stdio, err_w.as_raw_fd());
        let bytes = msg.as_bytes();
        // SAFETY: write(2) then _exit(2) in the forked child.
        unsafe {
            libc::write(err_w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127);
        }
    }
    if let Some(own) = own_pid_ns {
        // SAFETY: as above; back to the monitor's own pid namespace.
        unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWPID) };
    }
    if was_dumpable != 0 {
        set_dumpable(was_dumpable);
    }
    drop(err_w);
    drop(stdio);
    if pid < 0 {
        return Err(RuntimeError::ExecFailed {
            container: id.to_string(),
            message: format!(
                "fork into the container failed (has its process exited?): {fork_err}"
            ),
        });
    }
    // EOF = execve succeeded (the pipe is close-on-exec); data = why not.
    let mut reason = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        // SAFETY: blocking read into a stack buffer.
        let n = unsafe { libc::read(err_r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            reason.extend_from_slice(&buf[..n as usize]);
        } else if n == 0
            || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
        {
            break;
        }
    }
    if !reason.is_empty() {
        let _ = waitpid(Pid::from_raw(pid), None);
        return Err(RuntimeError::ExecFailed {
            container: id.to_string(),
            message: String::from_utf8_lossy(&reason).into_owned(),
        });
    }
    Ok(pid)
}

fn errno_msg(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// The forked child: runs [`plan`]; returns only on failure, with the
/// reason. `report_fd` is the error pipe's write end.
fn child(p: &Prepared, stdio: &TenantStdio, report_fd: RawFd) -> String {
    let user_joined = Cell::new(false);
    for step in plan(p) {
        if let Err(e) = run_step(step, p, stdio, report_fd, &user_joined) {
            return e;
        }
    }
    "the exec sequence ended without executing the program".into()
}

fn setns(fd: &OwnedFd, flag: libc::c_int) -> Result<(), std::io::Error> {
    // SAFETY: setns with an fd prepared by the parent.
    if unsafe { libc::setns(fd.as_raw_fd(), flag) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn run_step(
    step: Step,
    p: &Prepared,
    stdio: &TenantStdio,
    report_fd: RawFd,
    user_joined: &Cell<bool>,
) -> Result<(), String> {
    match step {
        Step::NonDumpable => {
            if set_dumpable(0) != 0 {
                return Err(errno_msg("PR_SET_DUMPABLE"));
            }
        }
        Step::ResetSignals => reset_signals(),
        Step::OomScoreAdj => {
            if let Some(v) = p.oom_score_adj
                && let Err(e) = fs::write("/proc/self/oom_score_adj", v.to_string())
            {
                return Err(format!("setting oom_score_adj {v}: {e}"));
            }
        }
        Step::JoinCgroups => {
            for procs in &p.cgroup_procs {
                if let Err(e) = fs::write(procs, b"0")
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(format!("joining cgroup {}: {e}", procs.display()));
                }
            }
        }
        Step::JoinNamespace(i) => {
            let (name, flag) = JOIN_ORDER[i];
            let Some(fd) = p.ns.join_fd(flag) else {
                return Ok(());
            };
            match setns(fd, flag) {
                Ok(()) => {}
                // Not allowed from outside the container's user namespace
                // (see Step::JoinUserNamespace): join that first, then retry.
                Err(e)
                    if e.raw_os_error() == Some(libc::EPERM)
                        && !user_joined.get()
                        && p.ns.user.is_some() =>
                {
                    run_step(Step::JoinUserNamespace, p, stdio, report_fd, user_joined)?;
                    setns(fd, flag).map_err(|e| format!("joining the {name} namespace: {e}"))?;
                }
                Err(e) => return Err(format!("joining the {name} namespace: {e}")),
            }
        }
        Step::JoinUserNamespace => {
            if let Some(fd) = &p.ns.user
                && !user_joined.get()
            {
                setns(fd, libc::CLONE_NEWUSER)
                    .map_err(|e| format!("joining the user namespace: {e}"))?;
                user_joined.set(true);
            }
        }
        Step::NewSessionKeyring => {
            join_new_session_keyring().map_err(|e| format!("joining a new session keyring: {e}"))?
        }
        Step::Stdio => setup_stdio(stdio)?,
        Step::CloseFds => {
            let mut keep = vec![report_fd];
            keep.extend(p.trampoline);
            close_fds_above_stdio(&keep);
        }
        Step::Rlimits => {
            for l in p.process.rlimits().iter().flatten() {
                let rl = libc::rlimit {
                    rlim_cur: l.soft(),
                    rlim_max: l.hard(),
                };
                // SAFETY: setrlimit with a valid struct.
                if unsafe { libc::setrlimit(l.typ() as libc::c_int as _, &rl) } != 0 {
                    return Err(errno_msg(&format!("setrlimit({:?})", l.typ())));
                }
            }
        }
        Step::SeccompPrivileged | Step::Seccomp => {
            if let Some(s) = &p.seccomp {
                install_seccomp(s)?;
            }
        }
        Step::Identity => {
            let user = p.process.user();
            let groups: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
            // SAFETY: setgroups with a valid slice.
            if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
                return Err(errno_msg("setgroups"));
            }
            let syscall = libcontainer::syscall::syscall::create_syscall();
            syscall
                .set_id(
                    nix::unistd::Uid::from_raw(user.uid()),
                    nix::unistd::Gid::from_raw(user.gid()),
                )
                .map_err(|e| format!("setting uid {} gid {}: {e}", user.uid(), user.gid()))?;
            libcontainer::capabilities::reset_effective(syscall.as_ref())
                .map_err(|e| format!("restoring effective capabilities: {e}"))?;
            if let Some(caps) = p.process.capabilities() {
                libcontainer::capabilities::drop_privileges(caps, syscall.as_ref())
                    .map_err(|e| format!("setting capabilities: {e}"))?;
            }
        }
        Step::NoNewPrivs => {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(errno_msg("PR_SET_NO_NEW_PRIVS"));
            }
        }
        Step::Chdir => {
            // SAFETY: chdir with a NUL-terminated path.
            if unsafe { libc::chdir(p.cwd.as_ptr()) } != 0 {
                return Err(errno_msg(&format!(
                    "changing to the working directory {:?}",
                    p.cwd
                )));
            }
        }
        Step::VerifyCwd => verify_cwd(&p.cwd)?,
        Step::Exec => return Err(exec(p, report_fd)),
    }
    Ok(())
}

/// The dispositions the monitor set (SIGPIPE ignored, SIGCHLD handled) and
/// its signal mask must not reach the container's process.
fn reset_signals() {
    // SAFETY: plain signal calls in the child.
    unsafe {
        // The raw syscall, as glibc refuses its reserved real-time signals
        // (32, 33), which the runtime may still have ignored.
        // The kernel's struct sigaction: handler (SIG_DFL = 0), flags,
        // restorer, mask; all zero.
        let act = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    act.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                );
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Closes every fd from 3 up but those in `keep`.
fn close_fds_above_stdio(keep: &[RawFd]) {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&fd| fd > 2)
        .map(|&fd| fd as u32)
        .collect();
    keep.sort_unstable();
    let mut from = 3u32;
    for fd in keep {
        if fd > from {
            // SAFETY: close_range over fds this process no longer needs.
            unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0u32) };
        }
        from = fd + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32) };
}

/// CVE-2024-21626: after chdir, getcwd must give an absolute path. The
/// kernel answers ENOENT (glibc) or a path starting "(unreachable)" when
/// the cwd is not below the process's root, as a directory reached through
/// a leaked fd or another process's /proc/<pid>/cwd would be.
fn verify_cwd(asked: &CString) -> Result<(), String> {
    let outside = || {
        format!(
            "the working directory {asked:?} resolves outside the container's root (a symlink to /proc/self/fd/N or /proc/<pid>/cwd?); refusing to run there"
        )
    };
    match nix::unistd::getcwd() {
        Ok(cwd) if cwd.is_absolute() => Ok(()),
        Ok(_) | Err(nix::errno::Errno::ENOENT) => Err(outside()),
        Err(e) => Err(format!("reading the working directory back: {e}")),
    }
}

/// Executes the program (through the trampoline on the `dmz` path);
/// returns only on failure, with the reason.
fn exec(p: &Prepared, report_fd: RawFd) -> String {
    let Some(arg0) = p.args.first() else {
        return "exec needs a command".into();
    };
    let program = match resolve_program(
        OsStr::new(arg0),
        p.path_var.as_deref().map(OsStr::from_bytes),
        probe_filesystem,
    ) {
        Ok(path) => path,
        Err(e) => return format!("{e}"),
    };
    if let Some(memfd) = p.trampoline {
        return super::dmz::exec_trampoline_with(memfd, report_fd, &program, &p.args, &p.env);
    }
    let Ok(program) = CString::new(program.as_os_str().as_bytes()) else {
        return "program path contains a NUL byte".into();
    };
    let mut argv: Vec<*const libc::c_char> = p.c_args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = p.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: NULL-terminated argv/envp of live CStrings.
    unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    errno_msg(&format!("executing {program:?}"))
}

fn install_seccomp(s: &LinuxSeccomp) -> Result<(), String> {
    match libcontainer::seccomp::initialize_seccomp(s) {
        Ok(Some(fd)) => {
            // No seccomp agent to hand the notify fd to: a profile with
            // SCMP_ACT_NOTIFY would block forever, so refuse it.
            // SAFETY: closing the fd we were just given.
            unsafe { libc::close(fd) };
            Err(
                "the container's seccomp profile uses SCMP_ACT_NOTIFY, which exec does not support"
                    .into(),
            )
        }
        Ok(None) => Ok(()),
        Err(e) => Err(format!("installing the container's seccomp filter: {e}")),
    }
}

fn setup_stdio(stdio: &TenantStdio) -> Result<(), String> {
    if stdio.tty {
        // SAFETY: setsid and TIOCSCTTY in the child, on its own terminal.
        unsafe {
            if libc::setsid() < 0 {
                return Err(errno_msg("setsid"));
            }
            if libc::ioctl(stdio.stdin.as_raw_fd(), libc::TIOCSCTTY, 0) != 0 {
                return Err(errno_msg("TIOCSCTTY"));
            }
        }
    }
    for (fd, target) in [(&stdio.stdin, 0), (&stdio.stdout, 1), (&stdio.stderr, 2)] {
        // SAFETY: dup2 of owned fds onto 0..2 (dup2 clears CLOEXEC).
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
            return Err(errno_msg("dup2"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        dev_null().unwrap()
    }

    fn namespaces(joins: &[libc::c_int], user: bool, pid: bool) -> ContainerNamespaces {
        ContainerNamespaces {
            joins: joins.iter().map(|f| (fd(), *f)).collect(),
            user: user.then(fd),
            pid: pid.then(fd),
        }
    }

    fn prepared(ns: &ContainerNamespaces, nnp: bool, seccomp: bool, oom: bool) -> Prepared<'_> {
        let mut process = Process::default();
        process.set_no_new_privileges(nnp.then_some(true));
        Prepared {
            ns,
            oom_score_adj: oom.then_some(500),
            trampoline: None,
            cgroup_procs: Vec::new(),
            cwd: CString::new("/").unwrap(),
            args: vec!["true".into()],
            c_args: vec![CString::new("true").unwrap()],
            env: Vec::new(),
            path_var: None,
            process,
            seccomp: seccomp.then(LinuxSeccomp::default),
        }
    }

    fn pos(steps: &[Step], s: Step) -> usize {
        steps
            .iter()
            .position(|x| *x == s)
            .unwrap_or_else(|| panic!("{s:?} missing from {steps:?}"))
    }

    #[test]
    fn the_child_is_non_dumpable_before_any_namespace_and_until_exec() {
        let all = [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWNET,
        ];
        for (user, nnp, seccomp, oom) in [
            (true, true, true, true),
            (false, false, true, false),
            (true, false, false, true),
            (false, true, false, false),
        ] {
            let ns = namespaces(&all, user, true);
            let steps = plan(&prepared(&ns, nnp, seccomp, oom));
            assert_eq!(steps[0], Step::NonDumpable, "{steps:?}");
            // Nothing after it makes the process dumpable again: only the
            // execve at the very end does.
            assert_eq!(steps.iter().filter(|s| **s == Step::NonDumpable).count(), 1);
            assert_eq!(*steps.last().unwrap(), Step::Exec);
            let first_join = steps
                .iter()
                .position(|s| matches!(s, Step::JoinNamespace(_) | Step::JoinUserNamespace))
                .unwrap();
            assert!(first_join > 0);
        }
    }

    #[test]
    fn mount_namespace_first_user_namespace_last() {
        let ns = namespaces(
            &[libc::CLONE_NEWNET, libc::CLONE_NEWNS, libc::CLONE_NEWIPC],
            true,
            true,
        );
        let steps = plan(&prepared(&ns, false, false, false));
        let joins: Vec<Step> = steps
            .iter()
            .copied()
            .filter(|s| matches!(s, Step::JoinNamespace(_) | Step::JoinUserNamespace))
            .collect();
        assert_eq!(
            joins,
            vec![
                Step::JoinNamespace(0), // mnt
                Step::JoinNamespace(2), // ipc
                Step::JoinNamespace(4), // net
                Step::JoinUserNamespace,
            ]
        );
        assert_eq!(JOIN_ORDER[0].1, libc::CLONE_NEWNS);
        // Namespaces the container shares with the monitor are not joined.
        let ns = namespaces(&[libc::CLONE_NEWNS], false, false);
        let steps = plan(&prepared(&ns, false, false, false));
        assert!(!steps.contains(&Step::JoinUserNamespace));
        assert_eq!(
            steps
                .iter()
                .filter(|s| matches!(s, Step::JoinNamespace(_)))
                .count(),
            1
        );
    }

    #[test]
    fn host_resources_are_gone_before_the_working_directory_is_resolved() {
        let all = [libc::CLONE_NEWNS, libc::CLONE_NEWIPC];
        for (nnp, seccomp, user) in [
            (true, true, true),
            (false, true, false),
            (false, false, true),
        ] {
            let ns = namespaces(&all, user, true);
            let steps = plan(&prepared(&ns, nnp, seccomp, true));
            let chdir = pos(&steps, Step::Chdir);
            // cgroups and oom_score_adj go through the host's /proc and
            // /sys, so before the mount namespace changes.
            assert!(pos(&steps, Step::OomScoreAdj) < pos(&steps, Step::JoinNamespace(0)));
            assert!(pos(&steps, Step::JoinCgroups) < pos(&steps, Step::JoinNamespace(0)));
            // CVE-2024-21626: no monitor fd is left when the path is
            // resolved, the resolution happens in the container's mount
            // namespace as the container's user, and it is checked after.
            assert!(pos(&steps, Step::Stdio) < pos(&steps, Step::CloseFds));
            assert!(pos(&steps, Step::CloseFds) < chdir);
            assert!(pos(&steps, Step::JoinNamespace(0)) < chdir);
            assert!(pos(&steps, Step::Identity) < chdir);
            assert_eq!(pos(&steps, Step::VerifyCwd), chdir + 1);
            // The keyring is made once the child is the container's root.
            let keyring = pos(&steps, Step::NewSessionKeyring);
            if user {
                assert!(pos(&steps, Step::JoinUserNamespace) < keyring);
            }
            assert!(keyring < pos(&steps, Step::Identity));
            // The filter: before the identity change without no_new_privs
            // (it needs CAP_SYS_ADMIN then), right after no_new_privs with.
            if seccomp && nnp {
                assert_eq!(
                    pos(&steps, Step::Seccomp),
                    pos(&steps, Step::NoNewPrivs) + 1
                );
                assert!(!steps.contains(&Step::SeccompPrivileged));
            } else if seccomp {
                assert!(pos(&steps, Step::SeccompPrivileged) < pos(&steps, Step::Identity));
            }
        }
        let ns = namespaces(&all, false, false);
        assert!(!plan(&prepared(&ns, false, false, false)).contains(&Step::OomScoreAdj));
    }

    /// close_fds_above_stdio keeps exactly what it is told to keep; run in
    /// a forked child so the test process's own fds are untouched.
    #[test]
    fn only_the_kept_descriptors_survive() {
        let kept = fd();
        let dropped = fd();
        let (r, w) = cloexec_pipe().unwrap();
        // SAFETY: fork in a test; the child only makes system calls and
        // writes its verdict before _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            close_fds_above_stdio(&[kept.as_raw_fd(), w.as_raw_fd()]);
            let alive = |fd: RawFd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
            let open: Vec<RawFd> = (3..1024).filter(|fd| alive(*fd)).collect();
            let ok = open == {
                let mut v = vec![kept.as_raw_fd(), w.as_raw_fd()];
                v.sort_unstable();
                v
            } && !alive(dropped.as_raw_fd());
            let b = [ok as u8];
            unsafe {
                libc::write(w.as_raw_fd(), b.as_ptr().cast(), 1);
                libc::_exit(0);
            }
        }
        drop(w);
        let mut got = [0u8; 1];
        // SAFETY: read of one byte into a stack buffer.
        let n = unsafe { libc::read(r.as_raw_fd(), got.as_mut_ptr().cast(), 1) };
        let _ = waitpid(Pid::from_raw(pid), None);
        assert_eq!((n, got[0]), (1, 1));
    }
}
