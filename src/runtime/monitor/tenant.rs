//! Processes started inside a running container (exec), by the monitor
//! itself rather than by libcontainer's tenant builder.
//!
//! Why: libcontainer 0.7's tenant builder rebuilds the `linux` section
//! without `seccomp`, so exec'd processes ran unfiltered (`Seccomp: 0` in
//! /proc/self/status) next to a filtered init (`Seccomp: 2`), the critest
//! specs "should support seccomp default which is runtime/default on the
//! container" and "... localhost/profile" fail, and an exec escapes the
//! profile the container was given. Here the child joins the init's
//! namespaces and cgroups and applies the container's process section
//! (user, capabilities, rlimits, no_new_privs) and its seccomp filter in
//! the order libcontainer's init uses for the container itself.
//!
//! The monitor is single-threaded, so the forked child may allocate.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;

use libcontainer::oci_spec::runtime::{LinuxSeccomp, Process};

use super::*;
use crate::runtime::dmz::{probe_filesystem, resolve_program};

/// The descriptors the process gets as 0, 1 and 2. With `tty`, all three
/// are the terminal's slave side, which becomes the controlling terminal
/// of a new session (as `runc exec -t` does).
pub(super) struct TenantStdio {
    pub(super) stdin: OwnedFd,
    pub(super) stdout: OwnedFd,
    pub(super) stderr: OwnedFd,
    pub(super) tty: bool,
}

/// Everything the child needs, prepared before fork so the child only
/// makes system calls.
struct Prepared {
    /// Namespaces of the init that differ from the monitor's, the user
    /// namespace first (joining it grants the rights to join the others),
    /// the mount namespace last (it changes root and cwd).
    namespaces: Vec<(OwnedFd, libc::c_int)>,
    pid_ns: Option<OwnedFd>,
    cgroup_procs: Vec<PathBuf>,
    cwd: CString,
    args: Vec<CString>,
    env: Vec<CString>,
    path_var: Option<Vec<u8>>,
    process: Process,
    seccomp: Option<LinuxSeccomp>,
}

/// Order of `setns`: user first, mount last (see [`Prepared::namespaces`]).
const NAMESPACES: [(&str, libc::c_int); 6] = [
    ("user", libc::CLONE_NEWUSER),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("mnt", libc::CLONE_NEWNS),
];

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
fn cgroup_procs_files(cgroups_path: &Path) -> Vec<PathBuf> {
    let Ok(rel) = cgroups_path.strip_prefix("/") else {
        return Vec::new();
    };
    let root = Path::new("/sys/fs/cgroup");
    let mut candidates = vec![root.join(rel).join("cgroup.procs")];
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            candidates.push(e.path().join(rel).join("cgroup.procs"));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    candidates
        .into_iter()
        .filter(|p| p.exists())
        // cpu and cpuacct are symlinks to one hierarchy: write once.
        .filter(|p| seen.insert(fs::canonicalize(p).unwrap_or_else(|_| p.clone())))
        .collect()
}

fn cstring(what: &str, s: &[u8]) -> Result<CString, RuntimeError> {
    CString::new(s).map_err(|_| RuntimeError::InvalidRequest(format!("{what} contains a NUL byte")))
}

fn prepare(
    id: &str,
    init_pid: i32,
    bundle: &Path,
    spec: &ExecSpec,
) -> Result<Prepared, RuntimeError> {
    let config = bundle.join("config.json");
    let oci = Spec::load(&config).map_err(|e| {
        RuntimeError::io(
            format!("reading {} of container {id:?}", config.display()),
            std::io::Error::other(e.to_string()),
        )
    })?;
    let base = oci.process().clone().unwrap_or_default();
    let linux = oci.linux().clone().unwrap_or_default();
    let init_ns = PathBuf::from(format!("/proc/{init_pid}/ns"));
    let own_ns = Path::new("/proc/self/ns");
    let mut namespaces = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = init_ns.join(name);
        if !theirs.exists() || same_file(&theirs, &own_ns.join(name)) {
            continue;
        }
        namespaces.push((open_ns(&theirs)?, flag));
    }
    let pid_ns = if same_file(&init_ns.join("pid"), &own_ns.join("pid")) {
        None
    } else {
        Some(open_ns(&init_ns.join("pid"))?)
    };
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
        namespaces,
        pid_ns,
        cgroup_procs,
        cwd: cstring("the working directory", cwd.as_os_str().as_bytes())?,
        args: spec
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

/// Starts `spec` in container `id` (init `init_pid`); returns the pid, a
/// direct child of the monitor. Fails, with the child's reason, when the
/// process could not be set up or its program could not be executed.
pub(super) fn spawn_tenant(
    id: &str,
    init_pid: i32,
    bundle: &Path,
    spec: &ExecSpec,
    stdio: TenantStdio,
) -> Result<i32, RuntimeError> {
    let prepared = prepare(id, init_pid, bundle, spec)?;
    let (err_r, err_w) = cloexec_pipe()?;
    // A pid namespace only applies to children: switch the monitor's
    // pid_for_children for the one fork, and back right after.
    let own_pid_ns = match &prepared.pid_ns {
        Some(ns) => {
            let own = open_ns(Path::new("/proc/self/ns/pid"))?;
            // SAFETY: setns with a namespace fd we own.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
                return Err(RuntimeError::io(
                    format!("joining the pid namespace of container {id:?}"),
                    std::io::Error::last_os_error(),
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
        let msg = child(&prepared, stdio);
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
    drop(err_w);
    drop(stdio);
    if pid < 0 {
        return Err(RuntimeError::ExecFailed {
            container: id.to_string(),
            message: format!("fork failed (is the container's init still alive?): {fork_err}"),
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

/// The forked child: returns only on failure, with the reason.
fn child(p: &Prepared, stdio: TenantStdio) -> String {
    // Dispositions the monitor set (SIGPIPE ignored, SIGCHLD handled) and
    // its signal mask must not reach the container's process.
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
    // Cgroups first, through the host's /sys/fs/cgroup (the container's
    // mount namespace may not show it).
    for procs in &p.cgroup_procs {
        if let Err(e) = fs::write(procs, b"0")
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return format!("joining cgroup {}: {e}", procs.display());
        }
    }
    for (fd, flag) in &p.namespaces {
        // SAFETY: setns with an fd prepared by the parent.
        if unsafe { libc::setns(fd.as_raw_fd(), *flag) } != 0 {
            return errno_msg(&format!("setns({flag:#x})"));
        }
    }
    if let Some(limits) = p.process.rlimits() {
        for l in limits {
            let resource = l.typ() as libc::c_int;
            let rl = libc::rlimit {
                rlim_cur: l.soft(),
                rlim_max: l.hard(),
            };
            // SAFETY: setrlimit with a valid struct.
            if unsafe { libc::setrlimit(resource as _, &rl) } != 0 {
                return errno_msg(&format!("setrlimit({:?})", l.typ()));
            }
        }
    }
    let nnp = p.process.no_new_privileges() == Some(true);
    // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: do it
    // while the process still has every capability (libcontainer's init
    // does the same for the container).
    if !nnp
        && let Some(s) = &p.seccomp
        && let Err(e) = install_seccomp(s)
    {
        return e;
    }
    let user = p.process.user();
    let groups: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
    // SAFETY: setgroups with a valid slice.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return errno_msg("setgroups");
    }
    let syscall = libcontainer::syscall::syscall::create_syscall();
    if let Err(e) = syscall.set_id(
        nix::unistd::Uid::from_raw(user.uid()),
        nix::unistd::Gid::from_raw(user.gid()),
    ) {
        return format!("setting uid {} gid {}: {e}", user.uid(), user.gid());
    }
    if let Err(e) = libcontainer::capabilities::reset_effective(syscall.as_ref()) {
        return format!("restoring effective capabilities: {e}");
    }
    if let Some(caps) = p.process.capabilities()
        && let Err(e) = libcontainer::capabilities::drop_privileges(caps, syscall.as_ref())
    {
        return format!("setting capabilities: {e}");
    }
    if nnp {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return errno_msg("PR_SET_NO_NEW_PRIVS");
        }
        if let Some(s) = &p.seccomp
            && let Err(e) = install_seccomp(s)
        {
            return e;
        }
    }
    // SAFETY: chdir with a NUL-terminated path.
    if unsafe { libc::chdir(p.cwd.as_ptr()) } != 0 {
        return errno_msg(&format!("chdir to {:?}", p.cwd));
    }
    if let Err(e) = setup_stdio(stdio) {
        return e;
    }
    let Some(arg0) = p.args.first() else {
        return "exec needs a command".into();
    };
    let program = match resolve_program(
        OsStr::from_bytes(arg0.as_bytes()),
        p.path_var.as_deref().map(OsStr::from_bytes),
        probe_filesystem,
    ) {
        Ok(path) => path,
        Err(e) => return format!("{e}"),
    };
    let Ok(program) = CString::new(program.as_os_str().as_bytes()) else {
        return "program path contains a NUL byte".into();
    };
    let mut argv: Vec<*const libc::c_char> = p.args.iter().map(|a| a.as_ptr()).collect();
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

fn setup_stdio(stdio: TenantStdio) -> Result<(), String> {
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
