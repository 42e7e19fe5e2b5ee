//! The `dmz` exec path: the container's init execs `capcri-dmz`, a tiny
//! trampoline handed in through a sealed memfd, and the trampoline execs the
//! user's program.
//!
//! Why: until its final execve, a container's init is a clone of the capcri
//! monitor; with the `dmz` path the init's own execve already leaves capcri
//! for a capcri-free, libc-free program of a few KiB (CVE-2019-5736: nothing
//! a container process could write to or reuse). The price is a second
//! execve, and capabilities(7) applies its transformation twice: a non-root
//! process with no file capabilities loses its whole permitted set at the
//! first one, so under no_new_privs the file capabilities of the user's
//! binary can no longer raise it at the second (runc-dmz's regression with
//! CoreDNS). Which path a container takes is a policy decision
//! (`capabilities::policy::ExecPath`), predicted by
//! `capabilities::kernel::predict_execve` applied once or twice.
//!
//! The trampoline's source is `dmz/main.rs`, built by `build.rs`; its argv
//! layout (`capcri-dmz STATUS_FD PROGRAM ARGV0 [ARG...]`) is the contract
//! written by [`trampoline_argv`].

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::host::sealed_exe::sealed_memfd;
use crate::monitor_api::RuntimeError;

/// The trampoline binary, built from `dmz/main.rs` by `build.rs`.
pub(crate) static TRAMPOLINE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/capcri-dmz"));

/// The name the memfd carries (`/proc/<pid>/exe` shows `/memfd:capcri-dmz`).
pub(crate) const TRAMPOLINE_MEMFD_NAME: &str = "capcri-dmz";

/// A sealed, close-on-exec memfd holding the trampoline. The monitor makes
/// one and shares it between all its `dmz` containers: sealing is what makes
/// sharing safe, and the copy costs one small write.
pub(crate) fn sealed_trampoline() -> Result<OwnedFd, RuntimeError> {
    let mut bytes = TRAMPOLINE;
    sealed_memfd(
        TRAMPOLINE_MEMFD_NAME,
        &mut bytes,
        "the capcri-dmz trampoline",
    )
    .map_err(RuntimeError::from)
}

/// What the probe of one candidate path found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Candidate {
    /// A regular file the caller may execute.
    Executable,
    /// Exists, but is a directory or lacks execute permission (EACCES).
    NotExecutable,
    Missing,
}

/// Why the user's program could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ResolveError {
    #[error("executable {0:?} not found in $PATH (ENOENT)")]
    NotFound(String),
    #[error("executable {0:?} found in $PATH but not executable (EACCES)")]
    NotExecutable(String),
    #[error("the container's process has an empty argv[0]")]
    Empty,
}

/// glibc's search path when PATH is unset (`confstr(_CS_PATH)`).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Resolves `name` like execvp(3) does, so the `dmz` path runs the same
/// file the `direct` path's execvp would: a name with a slash is used as it
/// is; otherwise each PATH element in order (an empty one is the current
/// directory), skipping candidates that are missing or not executable, and
/// reporting EACCES over ENOENT when some candidate existed. `probe` is the
/// only I/O, so the search order is tested without a filesystem.
pub(crate) fn resolve_program(
    name: &OsStr,
    path_var: Option<&OsStr>,
    probe: impl Fn(&Path) -> Candidate,
) -> Result<PathBuf, ResolveError> {
    if name.is_empty() {
        return Err(ResolveError::Empty);
    }
    if name.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(name));
    }
    let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut saw_non_executable = false;
    for dir in path_var.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(name);
        match probe(&candidate) {
            Candidate::Executable => return Ok(candidate),
            Candidate::NotExecutable => saw_non_executable = true,
            Candidate::Missing => {}
        }
    }
    let shown = name.to_string_lossy().into_owned();
    if saw_non_executable {
        Err(ResolveError::NotExecutable(shown))
    } else {
        Err(ResolveError::NotFound(shown))
    }
}

/// The probe used inside the container: stat(2) for the file type, then
/// access(2) for the execute permission (the init's real and effective ids
/// are the container user's by now, so access answers for that user).
pub(crate) fn probe_filesystem(path: &Path) -> Candidate {
    let Ok(meta) = std::fs::metadata(path) else {
        return Candidate::Missing;
    };
    if !meta.is_file() {
        return Candidate::NotExecutable;
    }
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return Candidate::Missing;
    };
    // SAFETY: access(2) with a valid C string.
    if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
        Candidate::Executable
    } else {
        Candidate::NotExecutable
    }
}

/// The trampoline's argv: its name, the status fd (`-` for none), the
/// resolved program, then the user's argv unchanged (so the user's program
/// sees the argv[0] it would see under execvp, not the resolved path).
pub(crate) fn trampoline_argv(
    status_fd: Option<RawFd>,
    program: &Path,
    args: &[String],
) -> Result<Vec<CString>, String> {
    let nul = |what: &str| format!("{what} contains a NUL byte");
    let mut argv = Vec::with_capacity(args.len() + 3);
    argv.push(CString::new(TRAMPOLINE_MEMFD_NAME).map_err(|_| nul("the trampoline name"))?);
    let fd = status_fd.map_or_else(|| "-".to_string(), |fd| fd.to_string());
    argv.push(CString::new(fd).map_err(|_| nul("the status fd"))?);
    argv.push(CString::new(program.as_os_str().as_bytes()).map_err(|_| nul("the program path"))?);
    for a in args {
        argv.push(CString::new(a.as_bytes()).map_err(|_| nul(&format!("argument {a:?}")))?);
    }
    Ok(argv)
}

/// `KEY=value` C strings of an environment.
pub(crate) fn env_block(vars: impl Iterator<Item = (OsString, OsString)>) -> Vec<CString> {
    vars.filter_map(|(k, v)| {
        let mut kv = k.into_vec();
        kv.push(b'=');
        kv.extend(v.into_vec());
        CString::new(kv).ok()
    })
    .collect()
}

/// Runs inside the container's init, after libcontainer applied the user,
/// capabilities, no_new_privs and seccomp, and set the process environment:
/// resolves the program, leaves `status_fd` open across the exec (the
/// trampoline reports its own execve's failure there and marks it
/// close-on-exec before that execve), and executes the trampoline from the
/// memfd. Only returns on failure, with the reason.
///
/// `execveat(fd, "", .., AT_EMPTY_PATH)` of a close-on-exec fd works for an
/// ELF binary (only an interpreter script would need the fd to survive as
/// `/dev/fd/N`, and the kernel refuses that case with ENOENT), so the memfd
/// itself never reaches the trampoline or the user's program.
pub(crate) fn exec_trampoline(memfd: RawFd, status_fd: RawFd, args: &[String]) -> String {
    let Some(name) = args.first() else {
        return ResolveError::Empty.to_string();
    };
    let path_var = std::env::var_os("PATH");
    let program = match resolve_program(OsStr::new(name), path_var.as_deref(), probe_filesystem) {
        Ok(p) => p,
        Err(e) => return e.to_string(),
    };
    let envp = env_block(std::env::vars_os());
    exec_trampoline_with(memfd, status_fd, &program, args, &envp)
}

/// Executes the trampoline from `memfd` to run the already resolved
/// `program` with `args` and `envp`; `status_fd` (if >= 0) is left open
/// across this first execve for the trampoline to report the second one.
/// Used by the container's init (above) and by the monitor's exec child
/// (`monitor/tenant.rs`), so an exec'd process of a `dmz` container takes
/// the same two execves, and gets the same capabilities, as its init.
/// Only returns on failure, with the reason.
pub(crate) fn exec_trampoline_with(
    memfd: RawFd,
    status_fd: RawFd,
    program: &Path,
    args: &[String],
    envp: &[CString],
) -> String {
    let status = (status_fd >= 0).then_some(status_fd);
    let argv = match trampoline_argv(status, program, args) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    if let Some(fd) = status {
        // SAFETY: fcntl(F_SETFD) on an fd this process inherited.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    }
    // SAFETY: execveat with a valid fd, an empty C string, and two
    // NULL-terminated arrays whose strings outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            memfd,
            c"".as_ptr(),
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    let err = std::io::Error::last_os_error();
    if let Some(fd) = status {
        // Back to close-on-exec: the caller reports through it, and it must
        // not outlive a later execve.
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let hint = match err.raw_os_error() {
        // seccomp's usual answers for a syscall a profile does not allow.
        Some(libc::EPERM) | Some(libc::ENOSYS) => {
            "; the dmz exec path needs execveat(2), which the container's seccomp profile may block (the RuntimeDefault profiles allow it): allow it or choose the direct exec path"
        }
        _ => "",
    };
    format!(
        "executing the capcri-dmz trampoline (to run {}) failed: {err}{hint}",
        program.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_with(
        files: &'static [(&'static str, Candidate)],
    ) -> impl Fn(&Path) -> Candidate + 'static {
        move |p: &Path| {
            files
                .iter()
                .find(|(f, _)| Path::new(f) == p)
                .map_or(Candidate::Missing, |(_, c)| *c)
        }
    }

    #[test]
    fn trampoline_is_a_small_static_elf() {
        let t = TRAMPOLINE;
        assert!(t.starts_with(b"\x7fELF"));
        // ELFCLASS64, little-endian (x86_64 and aarch64).
        assert_eq!((t[4], t[5]), (2, 1));
        let u16_at = |o: usize| u16::from_le_bytes([t[o], t[o + 1]]) as usize;
        let u32_at = |o: usize| u32::from_le_bytes(t[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(t[o..o + 8].try_into().unwrap()) as usize;
        // e_type ET_EXEC: position-dependent, nothing to relocate.
        assert_eq!(u16_at(16), 2);
        // No PT_INTERP (3) and no PT_DYNAMIC (2): no loader, no libc, so
        // nothing is needed from the container's rootfs.
        let (phoff, phentsize, phnum) = (u64_at(32), u16_at(54), u16_at(56));
        assert!(phnum > 0);
        for i in 0..phnum {
            let p_type = u32_at(phoff + i * phentsize);
            assert!(
                p_type != 2 && p_type != 3,
                "program header {i} has type {p_type}"
            );
        }
        assert!(t.len() < 16 * 1024, "trampoline is {} bytes", t.len());
    }

    #[test]
    fn resolution_follows_execvp() {
        static FILES: &[(&str, Candidate)] = &[
            ("/usr/local/bin/ping", Candidate::NotExecutable),
            ("/bin/ping", Candidate::Executable),
            ("/usr/bin/ping", Candidate::Executable),
            ("./tool", Candidate::Executable),
            ("/opt/only-dir", Candidate::NotExecutable),
        ];
        let probe = probe_with(FILES);
        let path = OsStr::new("/usr/local/bin:/bin:/usr/bin");
        // The first executable candidate wins; a non-executable one earlier
        // in PATH is skipped like execvp skips EACCES.
        assert_eq!(
            resolve_program(OsStr::new("ping"), Some(path), &probe),
            Ok(PathBuf::from("/bin/ping"))
        );
        // A slash means no search, even when the file does not exist (the
        // trampoline's execve reports ENOENT then).
        assert_eq!(
            resolve_program(OsStr::new("/no/such"), Some(path), &probe),
            Ok(PathBuf::from("/no/such"))
        );
        assert_eq!(
            resolve_program(OsStr::new("sub/x"), Some(path), &probe),
            Ok(PathBuf::from("sub/x"))
        );
        // An empty PATH element is the current directory.
        assert_eq!(
            resolve_program(OsStr::new("tool"), Some(OsStr::new("/x:")), &probe),
            Ok(PathBuf::from("./tool"))
        );
        // PATH unset: glibc's default.
        assert_eq!(
            resolve_program(OsStr::new("ping"), None, &probe),
            Ok(PathBuf::from("/bin/ping"))
        );
        assert_eq!(
            resolve_program(OsStr::new("nope"), Some(path), &probe),
            Err(ResolveError::NotFound("nope".into()))
        );
        assert_eq!(
            resolve_program(OsStr::new("only-dir"), Some(OsStr::new("/opt")), &probe),
            Err(ResolveError::NotExecutable("only-dir".into()))
        );
        assert_eq!(
            resolve_program(OsStr::new(""), Some(path), &probe),
            Err(ResolveError::Empty)
        );
    }

    #[test]
    fn argv_layout_is_the_trampolines_contract() {
        let args = vec!["ping".to_string(), "-c".into(), "1".into()];
        let argv = trampoline_argv(Some(7), Path::new("/usr/local/bin/ping"), &args).unwrap();
        let argv: Vec<&str> = argv.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(
            argv,
            ["capcri-dmz", "7", "/usr/local/bin/ping", "ping", "-c", "1"]
        );
        let argv = trampoline_argv(None, Path::new("/bin/true"), &["true".into()]).unwrap();
        assert_eq!(argv[1].to_str().unwrap(), "-");
        assert!(trampoline_argv(None, Path::new("/bin/x"), &["a\0b".into()]).is_err());
    }

    #[test]
    fn env_block_joins_key_and_value() {
        let env = env_block(
            [
                (OsString::from("PATH"), OsString::from("/bin")),
                (OsString::from("EMPTY"), OsString::new()),
            ]
            .into_iter(),
        );
        let env: Vec<&str> = env.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(env, ["PATH=/bin", "EMPTY="]);
    }

    /// Runs the embedded trampoline from a sealed memfd as a plain child
    /// (no container, no root): the user's program gets its own argv[0] and
    /// the environment, a failed execve exits 127/126 and writes its reason.
    #[test]
    fn trampoline_execs_and_reports_failures() {
        use std::os::fd::AsRawFd;
        use std::process::Command;
        let fd = sealed_trampoline().unwrap();
        // SAFETY: fcntl(F_GET_SEALS) on an fd we own.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        let all = crate::host::sealed_exe::IMMUTABLE_SEALS;
        assert_eq!(seals & all, all, "seals {seals:#x}");
        let exe = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let run = |args: &[&str]| {
            // The fd is close-on-exec in the child, but Command resolves the
            // /proc/self/fd path in the child before its execve, so it works.
            Command::new(&exe)
                .args(args)
                .env_clear()
                .env("MARK", "kept")
                .output()
                .unwrap()
        };
        let out = run(&["-", "/bin/sh", "mysh", "-c", "echo $0 $MARK"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "mysh kept\n");
        assert_eq!(out.status.code(), Some(0));

        let out = run(&["-", "/no/such/program", "x"]);
        assert_eq!(out.status.code(), Some(127));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("/no/such/program") && err.contains("ENOENT"),
            "{err}"
        );

        let plain = tempfile::NamedTempFile::new().unwrap();
        let plain_path = plain.path().display().to_string();
        let out = run(&["-", &plain_path, "x"]);
        assert_eq!(out.status.code(), Some(126));
        assert!(String::from_utf8_lossy(&out.stderr).contains("EACCES"));

        let out = run(&[]);
        assert_eq!(out.status.code(), Some(126));
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));

        // The status fd: closed by a successful execve (EOF, no data, and
        // the user's program does not inherit it), written on failure.
        const STATUS_FD: i32 = 200;
        let status = |args: &[&str]| {
            use std::io::Read;
            use std::os::unix::process::CommandExt;
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
            let wfd = w.as_raw_fd();
            let mut cmd = Command::new(&exe);
            cmd.arg(STATUS_FD.to_string()).args(args);
            // SAFETY: only dup2(2) between fork and exec; the copy is not
            // close-on-exec, like the executor leaves the status fd.
            unsafe {
                cmd.pre_exec(move || {
                    libc::dup2(wfd, STATUS_FD);
                    Ok(())
                });
            }
            let out = cmd.output().unwrap();
            drop(w);
            let mut text = String::new();
            std::fs::File::from(r).read_to_string(&mut text).unwrap();
            (out, text)
        };
        let check = format!("[ -e /proc/$$/fd/{STATUS_FD} ] && echo leaked || echo closed");
        let (out, text) = status(&["/bin/sh", "sh", "-c", &check]);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(text, "");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "closed\n");
        let (out, text) = status(&["/no/such/program", "x"]);
        assert_eq!(out.status.code(), Some(127));
        assert!(text.contains("ENOENT"), "{text}");
    }
}
