//! Builds `capcri-dmz`, the exec trampoline of the `dmz` exec path, from
//! `dmz/main.rs` into OUT_DIR; capcri embeds it with `include_bytes!`.
//!
//! It is compiled here with the same rustc, not as a workspace member:
//! capcri must always carry the trampoline that matches its executor (the
//! argv layout is a contract between the two), and it must be static and
//! libc-free, which a cargo profile of a second package cannot express
//! without a custom target. A failed build fails capcri's build: there is no
//! silent fallback to the direct exec path.

use std::path::PathBuf;
use std::process::{Command, exit};

fn fail(msg: &str) -> ! {
    eprintln!("error: building the capcri-dmz trampoline (dmz/main.rs) failed: {msg}");
    exit(1);
}

/// capcri's admin API (proto/): generated with tonic-build, like the CRI
/// types of the k8s-cri crate.
fn build_admin_proto() {
    println!("cargo:rerun-if-changed=proto/capcri/admin/v1alpha1/admin.proto");
    if let Err(e) = tonic_prost_build::configure()
        .compile_protos(&["proto/capcri/admin/v1alpha1/admin.proto"], &["proto"])
    {
        eprintln!(
            "error: compiling proto/capcri/admin/v1alpha1/admin.proto failed: {e}\n\
             (tonic-build needs protoc: apt-get install protobuf-compiler)"
        );
        exit(1);
    }
}

fn main() {
    build_admin_proto();
    // No packed relative relocations (-z pack-relative-relocs, DT_RELR):
    // they need glibc 2.36's loader, and the binary must start on the
    // glibc 2.34 of RHEL 9 and Amazon Linux 2023 (and 2.35 of Ubuntu
    // 22.04); hack/portability-check.sh refuses a binary with DT_RELR. The
    // cost, measured in the README's "Supported nodes": the ~80 000
    // relative relocations are a RELA table the loader reads at every exec.
    //
    // libseccomp is linked statically (Debian's libseccomp-dev has the
    // archive): a node then needs only glibc, whatever libseccomp it has.
    // libseccomp-sys asks for the shared library; an archive named earlier
    // on the link line (this crate's native libraries precede those of its
    // dependencies) resolves every seccomp_* symbol first, and with
    // --as-needed, which rustc passes, libseccomp.so is then not needed.
    // `-bundle`: the linker finds the archive in its own search path (the
    // target's multiarch directory, also when cross-linking for arm64).
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-lib=static:-bundle,+verbatim=libseccomp.a");
    }
    println!("cargo:rerun-if-changed=dmz/main.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let out_dir = PathBuf::from(
        std::env::var_os("OUT_DIR").unwrap_or_else(|| fail("cargo did not set OUT_DIR")),
    );
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").unwrap_or_else(|_| fail("cargo did not set TARGET"));
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" || !(arch == "x86_64" || arch == "aarch64") {
        fail(&format!(
            "target {target} is not supported: the trampoline makes raw Linux syscalls for x86_64 and aarch64 only"
        ));
    }
    let out = out_dir.join("capcri-dmz");
    let mut cmd = Command::new(&rustc);
    cmd.args(["--edition", "2021", "--crate-type", "bin", "--crate-name"])
        .arg("capcri_dmz")
        .args(["--target", &target])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "lto=fat",
            "-C",
            "codegen-units=1",
            "-C",
            "debuginfo=0",
            "-C",
            "strip=symbols",
            // Position-dependent and static: no dynamic loader, no
            // relocations to process, nothing needed from the rootfs.
            "-C",
            "relocation-model=static",
            "-C",
            "target-feature=+crt-static",
            // Our own `_start`, no C runtime, no libc.
            "-C",
            "link-arg=-nostartfiles",
            "-C",
            "link-arg=-nostdlib",
            "-C",
            "link-arg=-static",
            "-C",
            "link-arg=-Wl,--build-id=none",
        ]);
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        let mut arg = std::ffi::OsString::from("linker=");
        arg.push(linker);
        cmd.arg("-C").arg(arg);
    }
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|| fail("cargo did not set CARGO_MANIFEST_DIR")),
    );
    cmd.arg("-o")
        .arg(&out)
        .arg(manifest_dir.join("dmz").join("main.rs"));
    let output = cmd
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run {}: {e}", rustc.to_string_lossy())));
    if !output.status.success() {
        fail(&format!(
            "{} exited with {}:\n{}\nthe trampoline needs a C linker (cc) able to link a static, -nostdlib binary",
            rustc.to_string_lossy(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let bytes = std::fs::read(&out)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", out.display())));
    if !bytes.starts_with(b"\x7fELF") {
        fail(&format!("{} is not an ELF file", out.display()));
    }
}
