//! capcri-dmz: the exec trampoline of the `dmz` exec path.
//!
//! The container's init (a clone of the capcri monitor) does not execve the
//! user's program itself: it execs this program from a sealed memfd, and this
//! program execs the user's program. So the last image a container process
//! could reach through `/proc/<pid>/exe` before its own program runs is this
//! tiny, sealed, capcri-free binary, never capcri (CVE-2019-5736). It is a
//! separate program on purpose: it contains one execve and an error path,
//! nothing an attacker could reuse.
//!
//! No libc, no std: `_start` reads argc/argv/envp from the initial stack
//! (System V ABI) and the three syscalls are made directly, so the binary is
//! static, position-dependent, a few KiB, and needs nothing from the
//! container's rootfs.
//!
//! argv layout, written by capcri's executor:
//!   argv[0] = "capcri-dmz"
//!   argv[1] = the exec status fd as a decimal number, or "-" for none
//!   argv[2] = the user's program, already resolved like execvp(3) would
//!   argv[3..] = the user's argv, argv[3] being its own argv[0]
//! The status fd is the write end of the monitor's exec status pipe, left
//! open across the trampoline's own exec: it is marked close-on-exec here,
//! so a successful execve closes it (the monitor sees EOF = started), and a
//! failed one writes the reason into it before exiting 127 (ENOENT) or 126.

#![no_std]
#![no_main]

use core::arch::global_asm;

#[cfg(target_arch = "x86_64")]
mod sys {
    pub const WRITE: usize = 1;
    pub const FCNTL: usize = 72;
    pub const EXECVE: usize = 59;
    pub const EXIT_GROUP: usize = 231;

    /// # Safety
    /// The arguments must be valid for syscall `n`.
    #[inline(always)]
    pub unsafe fn syscall3(n: usize, a: usize, b: usize, c: usize) -> isize {
        let ret: isize;
        // SAFETY: the Linux x86_64 syscall ABI; rcx and r11 are clobbered.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") n as isize => ret,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }
}

#[cfg(target_arch = "aarch64")]
mod sys {
    pub const WRITE: usize = 64;
    pub const FCNTL: usize = 25;
    pub const EXECVE: usize = 221;
    pub const EXIT_GROUP: usize = 94;

    /// # Safety
    /// The arguments must be valid for syscall `n`.
    #[inline(always)]
    pub unsafe fn syscall3(n: usize, a: usize, b: usize, c: usize) -> isize {
        let ret: isize;
        // SAFETY: the Linux aarch64 syscall ABI.
        unsafe {
            core::arch::asm!(
                "svc 0",
                in("x8") n,
                inlateout("x0") a as isize => ret,
                in("x1") b,
                in("x2") c,
                options(nostack),
            );
        }
        ret
    }
}

// The kernel starts us with sp pointing at argc; the stack is 16-byte
// aligned at that point, and a `call` would push 8 bytes on x86_64, which is
// what the callee's ABI expects.
#[cfg(target_arch = "x86_64")]
global_asm!(
    ".globl _start",
    "_start:",
    "xor rbp, rbp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym dmz_main,
);

#[cfg(target_arch = "aarch64")]
global_asm!(
    ".globl _start",
    "_start:",
    "mov x29, xzr",
    "mov x0, sp",
    "bl {entry}",
    "brk #0",
    entry = sym dmz_main,
);

const F_SETFD: usize = 2;
const FD_CLOEXEC: usize = 1;
const ENOENT: isize = 2;

fn exit(code: usize) -> ! {
    loop {
        // SAFETY: exit_group takes an integer and does not return.
        unsafe { sys::syscall3(sys::EXIT_GROUP, code, 0, 0) };
    }
}

fn write_all(fd: usize, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: write(2) of a valid slice.
        let n = unsafe { sys::syscall3(sys::WRITE, fd, bytes.as_ptr() as usize, bytes.len()) };
        if n == -4 {
            continue; // EINTR
        }
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// The bytes of a NUL-terminated C string, without the NUL.
///
/// # Safety
/// `p` must point to a NUL-terminated string.
unsafe fn c_str<'a>(p: *const u8) -> &'a [u8] {
    let mut n = 0;
    // SAFETY: the caller promises a terminator. The volatile read keeps
    // LLVM from turning the loop into a call to `strlen`, which does not
    // exist here (no libc).
    unsafe {
        while core::ptr::read_volatile(p.add(n)) != 0 {
            n += 1;
        }
        core::slice::from_raw_parts(p, n)
    }
}

fn parse_fd(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 9 {
        return None;
    }
    let mut v = 0usize;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (b - b'0') as usize;
    }
    Some(v)
}

fn errno_name(e: isize) -> &'static [u8] {
    match e {
        1 => b"EPERM (Operation not permitted)",
        2 => b"ENOENT (No such file or directory)",
        7 => b"E2BIG (Argument list too long)",
        8 => b"ENOEXEC (Exec format error)",
        12 => b"ENOMEM (Cannot allocate memory)",
        13 => b"EACCES (Permission denied)",
        20 => b"ENOTDIR (Not a directory)",
        21 => b"EISDIR (Is a directory)",
        22 => b"EINVAL (Invalid argument)",
        26 => b"ETXTBSY (Text file busy)",
        40 => b"ELOOP (Too many levels of symbolic links)",
        80 => b"ELIBBAD (Accessing a corrupted shared library)",
        _ => b"an error",
    }
}

fn decimal(mut v: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Writes one error line to stderr (the container log) and, when there is
/// one, to the status fd (the monitor's StartError message).
fn fail(status_fd: Option<usize>, parts: &[&[u8]], code: usize) -> ! {
    for fd in [Some(2), status_fd].into_iter().flatten() {
        write_all(fd, b"capcri-dmz: ");
        for p in parts {
            write_all(fd, p);
        }
        write_all(fd, b"\n");
    }
    exit(code)
}

/// # Safety
/// `sp` is the initial stack pointer the kernel gave `_start`.
unsafe extern "C" fn dmz_main(sp: *const usize) -> ! {
    // SAFETY: the System V initial stack: argc, argv[argc], NULL, envp, NULL.
    let (argc, argv, envp) = unsafe {
        let argc = *sp;
        let argv = sp.add(1) as *const *const u8;
        (argc, argv, argv.add(argc + 1))
    };
    if argc < 4 {
        fail(
            None,
            &[b"usage: capcri-dmz STATUS_FD PROGRAM ARGV0 [ARG...] (started by capcri only)"],
            126,
        );
    }
    // SAFETY: argv[1] and argv[2] exist (argc >= 4) and are C strings.
    let (fd_arg, program) = unsafe { (c_str(*argv.add(1)), *argv.add(2)) };
    let status_fd = parse_fd(fd_arg);
    if let Some(fd) = status_fd {
        // SAFETY: fcntl(F_SETFD) with integer arguments.
        unsafe { sys::syscall3(sys::FCNTL, fd, F_SETFD, FD_CLOEXEC) };
    }
    // SAFETY: program is a C string, argv+3 a NULL-terminated array of C
    // strings (the tail of our own argv) and envp our own environment.
    let err = unsafe {
        sys::syscall3(
            sys::EXECVE,
            program as usize,
            argv.add(3) as usize,
            envp as usize,
        )
    };
    let errno = -err;
    let mut buf = [0u8; 20];
    // SAFETY: program is a C string.
    let name = unsafe { c_str(program) };
    let code = if errno == ENOENT { 127 } else { 126 };
    fail(
        status_fd,
        &[
            b"exec ",
            name,
            b" failed: ",
            errno_name(errno),
            b", errno ",
            decimal(errno as usize, &mut buf),
        ],
        code,
    )
}

/// libcore's precompiled objects reference the unwinding personality from
/// their `.eh_frame` even with `panic=abort`; nothing here ever unwinds, so
/// an empty definition satisfies the linker.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(126)
}
