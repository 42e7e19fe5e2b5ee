//! capcri's RuntimeDefault seccomp profile.
//!
//! It has the effect of Docker's (and containerd's) default profile on the
//! syscalls that matter, written as a deny list: everything is allowed
//! except the groups below, each denied with EPERM unless the container
//! holds one of the capabilities Docker's profile ties the group to.
//! Docker's profile is an allow list; a deny list keeps new, harmless
//! syscalls working and is short enough to review. What it does not
//! reproduce: Docker's argument filter on personality(2) (the allowed
//! values cannot be expressed as a deny rule without libseccomp's
//! same-argument conjunctions) and its AF_VSOCK socket filter.

use std::collections::HashSet;

use super::SpecError;
use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// A group of syscalls denied unless one of `unless_any` is held.
struct DeniedGroup {
    /// Why Docker's profile blocks these (kept for reviewers and tests).
    #[allow(dead_code)]
    reason: &'static str,
    unless_any: &'static [Capability],
    syscalls: &'static [&'static str],
}

const DENIED: &[DeniedGroup] = &[
    DeniedGroup {
        reason: "kernel keyring is not namespaced: containers could read or fill the host's keys",
        unless_any: &[],
        syscalls: &["add_key", "keyctl", "request_key"],
    },
    DeniedGroup {
        reason: "obsolete or unnamespaced interfaces with a history of bugs",
        unless_any: &[],
        syscalls: &[
            "get_kernel_syms",
            "nfsservctl",
            "query_module",
            "create_module",
            "sysfs",
            "_sysctl",
            "uselib",
            "ustat",
            "vm86",
            "vm86old",
            "afs_syscall",
            "tuxcall",
            "getpmsg",
            "putpmsg",
            "security",
            "vserver",
        ],
    },
    DeniedGroup {
        reason: "io_uring bypasses seccomp for the operations it performs (blocked since containerd 1.7)",
        unless_any: &[],
        syscalls: &["io_uring_setup", "io_uring_enter", "io_uring_register"],
    },
    DeniedGroup {
        reason: "mounting, namespaces and other CAP_SYS_ADMIN-gated host interfaces",
        unless_any: &[Capability::SysAdmin],
        syscalls: &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "open_tree",
            "move_mount",
            "mount_setattr",
            "swapon",
            "swapoff",
            "sethostname",
            "setdomainname",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
            "fanotify_init",
        ],
    },
    DeniedGroup {
        reason: "eBPF programs can read kernel memory and attach to host events",
        unless_any: &[Capability::SysAdmin, Capability::Bpf],
        syscalls: &["bpf"],
    },
    DeniedGroup {
        reason: "performance events can observe the host and other containers",
        unless_any: &[Capability::SysAdmin, Capability::Perfmon],
        syscalls: &["perf_event_open"],
    },
    DeniedGroup {
        reason: "userfaultfd makes kernel races easy to win (CVE exploitation aid)",
        unless_any: &[Capability::SysPtrace],
        syscalls: &["userfaultfd"],
    },
    DeniedGroup {
        reason: "kernel modules load code into the host kernel",
        unless_any: &[Capability::SysModule],
        syscalls: &["init_module", "finit_module", "delete_module"],
    },
    DeniedGroup {
        reason: "rebooting or replacing the kernel affects the whole host",
        unless_any: &[Capability::SysBoot],
        syscalls: &["reboot", "kexec_load", "kexec_file_load"],
    },
    DeniedGroup {
        reason: "the clock is not namespaced",
        unless_any: &[Capability::SysTime],
        syscalls: &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "clock_adjtime",
            "clock_adjtime64",
            "adjtimex",
        ],
    },
    DeniedGroup {
        reason: "process accounting writes host-wide records",
        unless_any: &[Capability::SysPacct],
        syscalls: &["acct"],
    },
    DeniedGroup {
        reason: "raw I/O port access reaches hardware directly",
        unless_any: &[Capability::SysRawio],
        syscalls: &["iopl", "ioperm"],
    },
    DeniedGroup {
        reason: "NUMA memory policy can starve other workloads' nodes",
        unless_any: &[Capability::SysNice],
        syscalls: &[
            "get_mempolicy",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "mbind",
            "move_pages",
            "migrate_pages",
        ],
    },
    DeniedGroup {
        reason: "the kernel log is host-wide",
        unless_any: &[Capability::Syslog],
        syscalls: &["syslog"],
    },
    DeniedGroup {
        reason: "open_by_handle_at escaped containers (the 2014 'shocker' exploit)",
        unless_any: &[Capability::DacReadSearch],
        syscalls: &["open_by_handle_at"],
    },
    DeniedGroup {
        reason: "vhangup acts on the host's terminals",
        unless_any: &[Capability::SysTtyConfig],
        syscalls: &["vhangup"],
    },
];

/// clone(2) flags that create namespaces; Docker allows clone only without
/// them unless the container holds CAP_SYS_ADMIN (CLONE_NEWUSER would give
/// an unprivileged process a full capability set in a new user namespace).
const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

fn deny(names: Vec<String>, errno: u32, args: Option<Vec<LinuxSeccompArg>>) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names);
    s.set_action(LinuxSeccompAction::ScmpActErrno);
    s.set_errno_ret(Some(errno));
    s.set_args(args);
    s
}

/// The architectures of the profile on a node whose CPU is `target_arch`
/// (Rust's name, `std::env::consts::ARCH`): the native ABI and the 32-bit
/// ABIs its kernel also runs, as containerd's default profile lists them,
/// so a 32-bit program in the container gets the same rules (a syscall
/// from an ABI the filter does not list is killed or refused whatever it
/// is). x86_64 kernels run i386 and x32 binaries, arm64 kernels 32-bit
/// ARM ones.
fn seccomp_architectures(target_arch: &str) -> Vec<Arch> {
    match target_arch {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        // build.rs refuses other targets (the dmz trampoline); should one
        // be added, libseccomp's native architecture is right for it.
        _ => vec![Arch::ScmpArchNative],
    }
}

/// The RuntimeDefault profile for a container holding `held` (its bounding
/// set: a capability outside it can never be gained, so its syscalls stay
/// denied).
pub fn runtime_default_profile(held: &HashSet<Capability>) -> Result<LinuxSeccomp, SpecError> {
    let holds_any = |caps: &[Capability]| caps.iter().any(|c| held.contains(c));
    let mut syscalls = Vec::new();
    for group in DENIED {
        if group.unless_any.is_empty() || !holds_any(group.unless_any) {
            syscalls.push(deny(
                group.syscalls.iter().map(|s| s.to_string()).collect(),
                EPERM,
                None,
            ));
        }
    }
    if !held.contains(&Capability::SysAdmin) {
        for flag in CLONE_NAMESPACE_FLAGS {
            // Rule: deny when (flags & flag) == flag. libcontainer reads
            // value_two as the mask and value as the datum; both are the flag.
            let arg = LinuxSeccompArgBuilder::default()
                .index(0usize)
                .value(flag)
                .value_two(flag)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build()
                .map_err(|e| SpecError::InvalidSeccompProfile {
                    profile: "RuntimeDefault".to_string(),
                    reason: format!("building the clone flag rule failed: {e}"),
                })?;
            syscalls.push(deny(vec!["clone".to_string()], EPERM, Some(vec![arg])));
        }
        // clone3 passes its flags in memory, out of seccomp's reach: ENOSYS
        // makes glibc fall back to clone(2), which is filtered above.
        syscalls.push(deny(vec!["clone3".to_string()], ENOSYS, None));
    }
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActAllow);
    profile.set_architectures(Some(seccomp_architectures(std::env::consts::ARCH)));
    profile.set_syscalls(Some(syscalls));
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(p: &LinuxSeccomp) -> Vec<String> {
        p.syscalls()
            .clone()
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn default_caps_block_admin_syscalls() {
        let p = runtime_default_profile(&HashSet::from([Capability::Chown, Capability::NetRaw]))
            .unwrap();
        let d = denied(&p);
        for name in [
            "mount",
            "unshare",
            "setns",
            "keyctl",
            "bpf",
            "reboot",
            "init_module",
            "clone",
            "clone3",
            "userfaultfd",
        ] {
            assert!(d.iter().any(|n| n == name), "{name} not denied");
        }
        assert!(
            !d.iter().any(|n| n == "ptrace"),
            "ptrace is allowed on kernels >= 4.8"
        );
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        let clone3 = p
            .syscalls()
            .clone()
            .unwrap()
            .into_iter()
            .find(|s| s.names() == &vec!["clone3".to_string()])
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(ENOSYS));
    }

    #[test]
    fn architectures_are_the_nodes_native_and_compat_abis() {
        use Arch::*;
        assert_eq!(
            seccomp_architectures("x86_64"),
            [ScmpArchX86_64, ScmpArchX86, ScmpArchX32]
        );
        assert_eq!(
            seccomp_architectures("aarch64"),
            [ScmpArchAarch64, ScmpArchArm]
        );
        // The profile of this build lists the CPU it was built for first.
        let p = runtime_default_profile(&HashSet::new()).unwrap();
        let native = if cfg!(target_arch = "aarch64") {
            ScmpArchAarch64
        } else {
            ScmpArchX86_64
        };
        assert_eq!(p.architectures().as_ref().unwrap()[0], native);
        // And never another CPU's native ABI.
        let foreign = if cfg!(target_arch = "aarch64") {
            ScmpArchX86_64
        } else {
            ScmpArchAarch64
        };
        assert!(!p.architectures().as_ref().unwrap().contains(&foreign));
    }

    #[test]
    fn capabilities_unlock_their_groups() {
        let p =
            runtime_default_profile(&HashSet::from([Capability::SysAdmin, Capability::SysTime]))
                .unwrap();
        let d = denied(&p);
        for name in [
            "mount",
            "unshare",
            "bpf",
            "perf_event_open",
            "clone",
            "clone3",
            "clock_settime",
        ] {
            assert!(
                !d.iter().any(|n| n == name),
                "{name} denied despite its capability"
            );
        }
        for name in ["keyctl", "reboot", "io_uring_setup"] {
            assert!(d.iter().any(|n| n == name), "{name} should stay denied");
        }
    }
}
