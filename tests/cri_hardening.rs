//! Escapes closed by issue 12 (items 2, 5 and 10), each shown through the CRI
//! socket on a real daemon with images the tests craft themselves.

mod common;

use common::crafted::{CraftedImage, Entry, busybox_layers, tar_layer};
use common::{TestDaemon, container_config, pull};
use k8s_cri::v1 as cri;
use tonic::Code;

/// A passwd whose "-1" and "+5" lines are root: the bypass of issue 12
/// item 2 (USER -1 reported as uid -1, non-root, then run as uid 0).
const HOSTILE_PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n-1:x:0:0::/:/bin/sh\n+5:x:0:0::/:/bin/sh\nsneaky:x:0:0::/:/bin/sh\nalice:x:1000:1000::/:/bin/sh\n";

fn user_image(registry: &str, tag: &str, user: &str) -> String {
    let mut layers = busybox_layers(registry);
    layers.push(tar_layer(&[
        Entry::dir("etc/", 0o755),
        Entry::file("etc/passwd", 0o644, HOSTILE_PASSWD),
    ]));
    CraftedImage {
        layers,
        config: serde_json::json!({ "User": user, "Cmd": ["id", "-u"] }),
    }
    .push(registry, "cri-lab/user-spoof", tag)
}

async fn image_status_user(d: &TestDaemon, image: &str) -> (Option<i64>, String) {
    let img = d
        .images()
        .await
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("image status")
        .into_inner()
        .image
        .expect("image present");
    (img.uid.map(|u| u.value), img.username)
}

/// Issue 12 item 2 (CVE-2024-40635 class): an image whose USER looks numeric
/// but is not a valid uid is refused at pull, so ImageStatus never reports a
/// uid the process would not run as; run_as_username is held to the same
/// rule at create; a name that /etc/passwd maps to root is reported as a
/// name (kubelet then refuses runAsNonRoot), and a valid uid runs as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_looking_users_never_run_as_root() {
    let registry = require_privileged!();
    let d = TestDaemon::start(&[]);
    for (tag, user) in [
        ("minus1", "-1"),
        ("minus1-group", "-1:0"),
        ("plus5", "+5"),
        ("wrap", "4294967296"),
        ("uidmax", "4294967295"),
        ("int32", "2147483648"),
        ("lead-space", " 1000"),
        ("trail-space", "1000 "),
        ("hex", "0x10"),
        ("bad-group", "1000:-1"),
        ("empty-group", "1000:"),
        ("empty-user", ":0"),
    ] {
        let image = user_image(&registry, tag, user);
        let err = d
            .images()
            .await
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect_err(&format!("USER {user:?} must be refused at pull"));
        assert_eq!(err.code(), Code::FailedPrecondition, "USER {user:?}: {err}");
        assert!(
            err.message().contains("USER") && err.message().contains(&format!("{user:?}")),
            "the error names the USER: {err}"
        );
        let listed = d
            .images()
            .await
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image,
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .expect("image status")
            .into_inner()
            .image;
        assert!(listed.is_none(), "USER {user:?}: refused image is stored");
    }

    // A name that the image maps to uid 0 is reported as a name, never a uid.
    let sneaky = user_image(&registry, "sneaky", "sneaky");
    pull(&d, &sneaky).await;
    assert_eq!(
        image_status_user(&d, &sneaky).await,
        (None, "sneaky".to_string())
    );
    // A valid uid is reported and the process runs as exactly it.
    let valid = user_image(&registry, "uid1000", "1000");
    pull(&d, &valid).await;
    assert_eq!(
        image_status_user(&d, &valid).await,
        (Some(1000), String::new())
    );
    let pod = common::run_pod(&d, "user-spoof").await;
    let id = common::create(&d, &pod, container_config("valid", &valid, &[]))
        .await
        .expect("create valid");
    common::start(&d, &id).await;
    assert_eq!(common::wait_exited(&d, &id).await.exit_code, 0);
    let log = common::log_of(&d, "valid");
    assert!(log.trim_end().ends_with(" 1000"), "log: {log}");

    // run_as_username: the same spellings are refused at create.
    for user in ["-1", "+5", "4294967296", " 0", "0x10", "-1:0"] {
        let mut cfg = container_config("byname", &valid, &["id", "-u"]);
        cfg.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                run_as_username: user.into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let err = common::create(&d, &pod, cfg)
            .await
            .expect_err(&format!("run_as_username {user:?} must be refused"));
        assert_eq!(err.code(), Code::InvalidArgument, "{user:?}: {err}");
        assert!(
            err.message().contains("run_as_username"),
            "the error names the field: {err}"
        );
    }
    common::stop_and_remove_pod(&d, &pod).await;
}

/// The example deny policy of `policy/`, enabled.
fn deny_sys_admin_enabled() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policy/90-example-deny-sys-admin.yaml");
    std::fs::read_to_string(path)
        .expect("example policy")
        .replace("match: \"false\"", "match: \"true\"")
}

fn with_caps(mut cfg: cri::ContainerConfig, add: &[&str], drop: &[&str]) -> cri::ContainerConfig {
    cfg.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            capabilities: Some(cri::Capability {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                add_ambient_capabilities: vec![],
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    cfg
}

/// A `CapXxx:` line of /proc/self/status as bits.
fn cap_line(status: &str, key: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.contains(&format!("{key}:\t")))
        .unwrap_or_else(|| panic!("no {key} in {status}"));
    u64::from_str_radix(line.rsplit('\t').next().unwrap_or("").trim(), 16)
        .unwrap_or_else(|e| panic!("{key}: {e} in {line}"))
}

const CAP_SYS_ADMIN_BIT: u64 = 1 << 21;

/// Issue 12 item 5: with the example deny policy enabled, every spelling
/// that would give CAP_SYS_ADMIN is refused through the CRI, an unknown
/// name is InvalidArgument for add and drop alike, and the containers the
/// policy lets through never hold CAP_SYS_ADMIN in /proc/self/status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_spellings_cannot_bypass_a_deny() {
    let registry = require_privileged!();
    let policy = deny_sys_admin_enabled();
    let d = TestDaemon::start_with_policies(&[("90-example-deny-sys-admin.yaml", &policy)], &[]);
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = common::run_pod(&d, "spelling").await;
    let denied: &[(&[&str], &[&str])] = &[
        (&["SYS_ADMIN"], &[]),
        (&["sys_admin"], &[]),
        (&[" SYS_ADMIN"], &[]),
        (&["SYS_ADMIN "], &[]),
        (&["CAP_SYS_ADMIN"], &[]),
        (&["cap_sys_admin"], &[]),
        (&["Cap_Sys_Admin"], &[]),
        (&["ALL"], &[]),
        (&["all"], &[]),
        (&[" All "], &[]),
        (&["sys_admin"], &["ALL"]),
        (&[" CAP_SYS_ADMIN"], &["all"]),
    ];
    for (i, (add, drop)) in denied.iter().enumerate() {
        let cfg = with_caps(
            container_config(&format!("deny{i}"), &busybox, &["true"]),
            add,
            drop,
        );
        let err = common::create(&d, &pod, cfg)
            .await
            .expect_err(&format!("add {add:?} drop {drop:?} must be refused"));
        assert_eq!(err.code(), Code::FailedPrecondition, "add {add:?}: {err}");
        assert!(
            err.message().contains("no-sys-admin-outside-kube-system"),
            "add {add:?}: {err}"
        );
    }
    for (add, drop) in [(&["SYS_WIZARD"][..], &[][..]), (&[], &["sys_wizard"])] {
        let cfg = with_caps(container_config("unknown", &busybox, &["true"]), add, drop);
        let err = common::create(&d, &pod, cfg)
            .await
            .expect_err("unknown name");
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(
            err.message().to_uppercase().contains("\"SYS_WIZARD\"")
                && err.message().contains("CAP_ prefix"),
            "{err}"
        );
    }
    // Allowed: the request never leads to CAP_SYS_ADMIN, whatever spelling.
    let allowed: &[(&str, &[&str], &[&str])] = &[
        ("dropall", &["net_bind_service"], &["ALL"]),
        ("allminus", &["ALL"], &[" cap_sys_admin"]),
        ("plain", &[], &[]),
    ];
    for (name, add, drop) in allowed {
        let cfg = with_caps(
            container_config(name, &busybox, &["grep", "^Cap", "/proc/self/status"]),
            add,
            drop,
        );
        let id = common::create(&d, &pod, cfg)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        common::start(&d, &id).await;
        assert_eq!(common::wait_exited(&d, &id).await.exit_code, 0, "{name}");
        let log = common::log_of(&d, name);
        for key in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
            assert_eq!(
                cap_line(&log, key) & CAP_SYS_ADMIN_BIT,
                0,
                "{name}: {key} holds CAP_SYS_ADMIN: {log}"
            );
        }
        if *name == "dropall" {
            assert_eq!(cap_line(&log, "CapBnd"), 1 << 10, "{name}: {log}");
        }
    }
    common::stop_and_remove_pod(&d, &pod).await;
}

/// Issue 12 item 10: the admin socket is root:root 0600 even when
/// `socket_gid` opens the CRI socket to a group; a member of that group can
/// reach the CRI socket and not the admin one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_socket_is_root_only_whatever_socket_gid_says() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let _registry = require_privileged!();
    const GID: u32 = 4242;
    let config = tempfile::NamedTempFile::new().expect("config");
    std::fs::write(config.path(), format!("socket_gid = {GID}\n")).expect("write config");
    let d = TestDaemon::start(&["--config", &config.path().display().to_string()]);
    let admin = d.admin_socket();
    common::wait_for("admin socket", std::time::Duration::from_secs(10), || {
        let admin = admin.clone();
        async move { admin.exists().then_some(()) }
    })
    .await;
    let a = std::fs::metadata(&admin).expect("admin socket");
    assert_eq!(
        (a.uid(), a.gid(), a.permissions().mode() & 0o7777),
        (0, 0, 0o600),
        "admin socket owner/mode"
    );
    let c = std::fs::metadata(&d.socket).expect("CRI socket");
    assert_eq!(
        (c.uid(), c.gid(), c.permissions().mode() & 0o7777),
        (0, GID, 0o660),
        "CRI socket owner/mode"
    );
    // No staging directory is left next to the sockets.
    let leftovers: Vec<_> = std::fs::read_dir(d.dir.path())
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".capcri-bind-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A process in the socket group (uid 65534, gid GID) connects to the
    // CRI socket and is refused by the admin socket.
    let dir_mode = std::fs::metadata(d.dir.path()).expect("dir").permissions();
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let connect = |path: &std::path::Path| {
        use std::os::unix::process::CommandExt;
        let path = path.to_path_buf();
        std::process::Command::new(std::env::current_exe().expect("exe"))
            .env("CAPCRI_HARDENING_CONNECT", &path)
            .args(["--exact", "connect_helper", "--nocapture"])
            .uid(65534)
            .gid(GID)
            .output()
            .expect("run helper")
    };
    let cri_out = connect(&d.socket);
    let admin_out = connect(&admin);
    std::fs::set_permissions(d.dir.path(), dir_mode).expect("chmod back");
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text(&cri_out).contains("CONNECT OK"),
        "CRI socket: {}",
        text(&cri_out)
    );
    assert!(
        text(&admin_out).contains("CONNECT DENIED"),
        "admin socket: {}",
        text(&admin_out)
    );
}

/// Run by `admin_socket_is_root_only_whatever_socket_gid_says` as another
/// user: connects to `CAPCRI_HARDENING_CONNECT` and prints the outcome.
#[test]
fn connect_helper() {
    let Some(path) = std::env::var_os("CAPCRI_HARDENING_CONNECT") else {
        return;
    };
    match std::os::unix::net::UnixStream::connect(&path) {
        Ok(_) => println!("CONNECT OK"),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => println!("CONNECT DENIED"),
        Err(e) => println!("CONNECT ERROR {e}"),
    }
}

/// Issue 12 item 10: once policies are in force, a policy directory that
/// vanishes keeps them (fail closed): a container the deny policy refuses
/// is still refused after the directory is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_policy_directory_keeps_the_last_good_set() {
    let registry = require_privileged!();
    let config = tempfile::NamedTempFile::new().expect("config");
    std::fs::write(config.path(), "policy_poll_seconds = 1\n").expect("write config");
    let policy = deny_sys_admin_enabled();
    let d = TestDaemon::start_with_policies(
        &[("90-example-deny-sys-admin.yaml", &policy)],
        &["--config", &config.path().display().to_string()],
    );
    let busybox = format!("{registry}/cri-lab/busybox:latest");
    pull(&d, &busybox).await;
    let pod = common::run_pod(&d, "vanish").await;
    let moved = d.dir.path().join("policies-moved");
    std::fs::rename(d.policy_dir(), &moved).expect("move the policy dir away");
    // Several polls.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let cfg = with_caps(
        container_config("admin", &busybox, &["true"]),
        &["SYS_ADMIN"],
        &[],
    );
    let err = common::create(&d, &pod, cfg)
        .await
        .expect_err("the deny must stay in force");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let mut admin = capcri::admin::proto::admin_client::AdminClient::new(
        capcri::server::unix_channel(&d.admin_socket())
            .await
            .expect("admin channel"),
    );
    let listed = admin
        .list_policies(capcri::admin::proto::ListPoliciesRequest {})
        .await
        .expect("list policies")
        .into_inner();
    assert!(
        listed
            .policies
            .iter()
            .any(|p| p.name == "90-example-deny-sys-admin"),
        "{listed:?}"
    );
    assert!(listed.reloads_failed >= 1, "{listed:?}");
    assert!(
        listed
            .last_reload_errors
            .iter()
            .any(|e| e.contains("disappeared")),
        "{listed:?}"
    );
    common::stop_and_remove_pod(&d, &pod).await;
}

/// The RuntimeDefault probes are x86_64 machine code, and modify_ldt is an
/// x86 system call: on arm64 the profile's rules are checked by the unit
/// tests of `spec::seccomp_default`.
#[cfg(target_arch = "x86_64")]
mod seccomp_probes {
    use super::*;

    /// A static x86_64 ELF that runs `code` (no libc, no loader): the tests
    /// need one syscall made exactly, which busybox cannot do.
    fn tiny_elf(code: &[u8]) -> Vec<u8> {
        const BASE: u64 = 0x40_0000;
        const CODE_AT: u64 = 64 + 56;
        let size = CODE_AT + code.len() as u64;
        let mut elf = Vec::new();
        elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
        elf.extend_from_slice(&1u32.to_le_bytes());
        elf.extend_from_slice(&(BASE + CODE_AT).to_le_bytes()); // entry
        elf.extend_from_slice(&64u64.to_le_bytes()); // phoff
        elf.extend_from_slice(&0u64.to_le_bytes()); // shoff
        elf.extend_from_slice(&0u32.to_le_bytes()); // flags
        for v in [64u16, 56, 1, 64, 0, 0] {
            elf.extend_from_slice(&v.to_le_bytes()); // ehsize phentsize phnum shentsize shnum shstrndx
        }
        elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
        for v in [0, BASE, BASE, size, size, 0x1000] {
            elf.extend_from_slice(&v.to_le_bytes());
        }
        elf.extend_from_slice(code);
        elf
    }

    /// Exit with the errno of the syscall whose result is in eax (0 if it
    /// succeeded): `neg eax; mov edi, eax; mov eax, 60; syscall`.
    const EXIT_WITH_ERRNO: &[u8] = &[0xf7, 0xd8, 0x89, 0xc7, 0xb8, 60, 0, 0, 0, 0x0f, 0x05];

    /// ptrace(PTRACE_TRACEME, 0, 0, 0), then exit with its errno.
    fn ptrace_probe() -> Vec<u8> {
        let mut code = vec![
            0x31, 0xff, // xor edi, edi (PTRACE_TRACEME)
            0x31, 0xf6, // xor esi, esi
            0x31, 0xd2, // xor edx, edx
            0x45, 0x31, 0xd2, // xor r10d, r10d
            0xb8, 101, 0, 0, 0, // mov eax, SYS_ptrace
            0x0f, 0x05, // syscall
        ];
        code.extend_from_slice(EXIT_WITH_ERRNO);
        tiny_elf(&code)
    }

    /// kcmp(getpid(), getpid(), KCMP_VM, 0, 0), then exit with its errno.
    fn kcmp_probe() -> Vec<u8> {
        let mut code = vec![
            0xb8, 39, 0, 0, 0, // mov eax, SYS_getpid
            0x0f, 0x05, // syscall
            0x89, 0xc7, // mov edi, eax
            0x89, 0xc6, // mov esi, eax
            0xba, 1, 0, 0, 0, // mov edx, KCMP_VM
            0x45, 0x31, 0xd2, // xor r10d, r10d
            0x45, 0x31, 0xc0, // xor r8d, r8d
            0xb8, 0x38, 0x01, 0, 0, // mov eax, SYS_kcmp (312)
            0x0f, 0x05, // syscall
        ];
        code.extend_from_slice(EXIT_WITH_ERRNO);
        tiny_elf(&code)
    }

    /// modify_ldt(0 /* read */, NULL, 0), then exit with its errno.
    fn modify_ldt_probe() -> Vec<u8> {
        let mut code = vec![
            0x31, 0xff, // xor edi, edi
            0x31, 0xf6, // xor esi, esi
            0x31, 0xd2, // xor edx, edx
            0xb8, 154, 0, 0, 0, // mov eax, SYS_modify_ldt
            0x0f, 0x05, // syscall
        ];
        code.extend_from_slice(EXIT_WITH_ERRNO);
        tiny_elf(&code)
    }

    fn runtime_default(mut cfg: cri::ContainerConfig, add: &[&str]) -> cri::ContainerConfig {
        cfg = with_caps(cfg, add, &[]);
        let sc = cfg
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .expect("security context");
        sc.seccomp = Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        cfg
    }

    /// Issue 12 item 10: under RuntimeDefault, ptrace and kcmp need
    /// CAP_SYS_PTRACE (EPERM without it, not EPERM with it) and modify_ldt is
    /// refused even to a container that holds every capability the policy
    /// allows; ordinary programs still run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runtime_default_seccomp_gates_ptrace_on_sys_ptrace() {
        let registry = require_privileged!();
        let mut layers = busybox_layers(&registry);
        layers.push(tar_layer(&[
            Entry::dir("probe/", 0o755),
            Entry::file("probe/ptrace", 0o755, &ptrace_probe()),
            Entry::file("probe/kcmp", 0o755, &kcmp_probe()),
            Entry::file("probe/modify_ldt", 0o755, &modify_ldt_probe()),
        ]));
        let image = CraftedImage {
            layers,
            config: serde_json::json!({ "Cmd": ["/probe/ptrace"] }),
        }
        .push(&registry, "cri-lab/seccomp-probe", "latest");
        let d = TestDaemon::start(&[]);
        pull(&d, &image).await;
        let pod = common::run_pod(&d, "seccomp").await;
        const EPERM: i32 = 1;
        // (name, probe, add, expect EPERM)
        let cases: &[(&str, &str, &[&str], bool)] = &[
            ("ptrace-without", "/probe/ptrace", &[], true),
            ("ptrace-with", "/probe/ptrace", &["SYS_PTRACE"], false),
            ("kcmp-without", "/probe/kcmp", &[], true),
            ("kcmp-with", "/probe/kcmp", &["sys_ptrace"], false),
            ("ldt-default", "/probe/modify_ldt", &[], true),
            ("ldt-all", "/probe/modify_ldt", &["ALL"], true),
            ("busybox", "true", &[], false),
        ];
        for (name, probe, add, eperm) in cases {
            let cfg = runtime_default(container_config(name, &image, &[probe]), add);
            let id = common::create(&d, &pod, cfg)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            common::start(&d, &id).await;
            let code = common::wait_exited(&d, &id).await.exit_code;
            if *eperm {
                assert_eq!(code, EPERM, "{name}: exit {code}");
            } else {
                assert_ne!(code, EPERM, "{name}: got EPERM");
            }
            if *name == "ptrace-with" || *name == "kcmp-with" || *name == "busybox" {
                assert_eq!(code, 0, "{name}: errno {code}");
            }
        }
        common::stop_and_remove_pod(&d, &pod).await;
    }
}

/// Issue 12 item 10: a bind mount whose destination reaches /proc or /sys
/// through a symlink in the image is refused like `/proc` written out
/// (InvalidArgument naming the mount and the resolved path), whether the
/// link is absolute, relative or climbs with `..`; an image link that stays
/// elsewhere still mounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_destinations_through_image_symlinks_into_proc_are_refused() {
    let registry = require_privileged!();
    let mut layers = busybox_layers(&registry);
    layers.push(tar_layer(&[
        Entry::symlink("data", "/proc/sys"),
        Entry::symlink("rel", "proc"),
        Entry::dir("deep/", 0o755),
        Entry::symlink("deep/up", "../../../sys"),
        Entry::symlink("kern", "/sys/kernel"),
        Entry::symlink("loop", "loop"),
        Entry::dir("srv/", 0o755),
        Entry::dir("srv/vol/", 0o755),
        Entry::symlink("vol", "/srv/vol"),
    ]));
    let image = CraftedImage {
        layers,
        config: serde_json::json!({ "Cmd": ["sh"] }),
    }
    .push(&registry, "cri-lab/mount-symlinks", "latest");
    let d = TestDaemon::start(&[]);
    pull(&d, &image).await;
    let pod = common::run_pod(&d, "mountlinks").await;
    let host = tempfile::tempdir().expect("host dir");
    std::fs::write(host.path().join("marker"), "from the host\n").expect("marker");
    let with_mount = |name: &str, container_path: &str, cmd: &[&str]| {
        let mut cfg = container_config(name, &image, cmd);
        cfg.mounts = vec![cri::Mount {
            container_path: container_path.into(),
            host_path: host.path().display().to_string(),
            readonly: true,
            ..Default::default()
        }];
        cfg
    };
    for (path, resolved) in [
        ("/data/kernel", "/proc/sys/kernel"),
        ("/data", "/proc/sys"),
        ("/rel/sys/vm", "/proc/sys/vm"),
        ("/deep/up/fs", "/sys/fs"),
        ("/kern/mm", "/sys/kernel/mm"),
        ("/proc/sys/kernel", "/proc/sys/kernel"),
    ] {
        let err = common::create(&d, &pod, with_mount("bad", path, &["true"]))
            .await
            .expect_err(&format!("mount at {path} must be refused"));
        assert_eq!(err.code(), Code::InvalidArgument, "{path}: {err}");
        assert!(
            err.message().contains("mounts[0]") && err.message().contains(path),
            "{path}: {err}"
        );
        if path != resolved {
            assert!(err.message().contains(resolved), "{path}: {err}");
        }
    }
    let err = common::create(&d, &pod, with_mount("bad", "/loop/x", &["true"]))
        .await
        .expect_err("a symlink loop is refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    // A link that stays out of /proc and /sys still mounts, through it.
    let id = common::create(
        &d,
        &pod,
        with_mount("good", "/vol/data", &["cat", "/srv/vol/data/marker"]),
    )
    .await
    .expect("mount through a benign link");
    common::start(&d, &id).await;
    assert_eq!(common::wait_exited(&d, &id).await.exit_code, 0);
    assert!(common::log_of(&d, "good").contains("from the host"));
    common::stop_and_remove_pod(&d, &pod).await;
}
