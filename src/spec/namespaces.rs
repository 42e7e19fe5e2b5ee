//! Linux namespaces of a container: its own mount namespace, the pod's
//! network, IPC and UTS namespaces (pinned by the sandbox), and the PID
//! namespace chosen by the container's NamespaceOption.

use std::path::{Path, PathBuf};

use k8s_cri::v1::{ContainerConfig, NamespaceMode};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use super::{SpecError, security_context};

/// The pod's pinned namespaces. For net, ipc and uts, `None` means the
/// host's (the pod asked for NODE mode), so no namespace entry is written
/// and the container inherits the runtime's. For pid, `None` means the pod
/// has no shared PID namespace; see [`container_namespaces`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNamespacePaths {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid: Option<PathBuf>,
    /// The pod's user namespace (POD mode); `None`: the host's.
    pub user: Option<PathBuf>,
    /// TARGET mode: the PID namespace of the target container (the
    /// caller checked it is a running container of the same pod).
    pub target_pid: Option<PathBuf>,
}

fn namespace(typ: LinuxNamespaceType, path: Option<&Path>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path.map(Path::to_path_buf));
    ns
}

/// The namespace list, in containerd's order (user, pid, ipc, uts, mount,
/// network). No cgroup namespace: on this cgroup v1 host containerd does
/// not create one either. The user namespace comes first: libcontainer
/// joins it before the others, whose owner it is.
pub fn container_namespaces(
    container: &ContainerConfig,
    pod: &PodNamespacePaths,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let pid_mode = security_context(container)
        .and_then(|sc| sc.namespace_options.as_ref())
        .map(|o| o.pid())
        // CRI's zero value is POD, but an absent NamespaceOption means the
        // container was not asked to share: kubelet always sends it, and
        // crictl leaves it out for "container" mode.
        .unwrap_or(NamespaceMode::Container);
    let mut list = Vec::new();
    if let Some(path) = &pod.user {
        list.push(namespace(LinuxNamespaceType::User, Some(path)));
    }
    match pid_mode {
        NamespaceMode::Container => list.push(namespace(LinuxNamespaceType::Pid, None)),
        NamespaceMode::Node => {}
        // Ephemeral containers (`kubectl debug --target`): the target's
        // PID namespace, as containerd joins it.
        NamespaceMode::Target => match &pod.target_pid {
            Some(path) => list.push(namespace(LinuxNamespaceType::Pid, Some(path))),
            None => {
                return Err(SpecError::invalid(
                    "security_context.namespace_options.target_id",
                    "TARGET mode needs target_id, the id of a running container of the same pod",
                ));
            }
        },
        NamespaceMode::Pod => match &pod.pid {
            Some(path) => list.push(namespace(LinuxNamespaceType::Pid, Some(path))),
            None => {
                return Err(SpecError::invalid(
                    "security_context.namespace_options.pid",
                    "POD mode asks to share the pod's PID namespace but the sandbox has none \
                     (its own pid mode is not POD); set shareProcessNamespace on the pod or use CONTAINER",
                ));
            }
        },
    }
    if let Some(path) = &pod.ipc {
        list.push(namespace(LinuxNamespaceType::Ipc, Some(path)));
    }
    if let Some(path) = &pod.uts {
        list.push(namespace(LinuxNamespaceType::Uts, Some(path)));
    }
    list.push(namespace(LinuxNamespaceType::Mount, None));
    if let Some(path) = &pod.net {
        list.push(namespace(LinuxNamespaceType::Network, Some(path)));
    }
    Ok(list)
}

/// A private cgroup namespace for a non-privileged container on a cgroup
/// v2 host, as containerd gives one there (cgroupns mode "private", the
/// default on v2): its /proc/self/cgroup reads `0::/` and its
/// /sys/fs/cgroup shows its own cgroup as the root, not the host's tree
/// (pod uids, other pods' limits). Privileged containers keep the host's,
/// as with containerd. On v1 (this hybrid host) containerd makes none: the
/// v1 hierarchies are bind-mounted at the container's own cgroup instead
/// (`cgroup_v1`).
pub fn add_cgroup_namespace(spec: &mut oci_spec::runtime::Spec, unified: bool, privileged: bool) {
    if !unified || privileged {
        return;
    }
    let Some(linux) = spec.linux_mut() else {
        return;
    };
    let mut list = linux.namespaces().clone().unwrap_or_default();
    if list.iter().any(|n| n.typ() == LinuxNamespaceType::Cgroup) {
        return;
    }
    list.push(namespace(LinuxNamespaceType::Cgroup, None));
    linux.set_namespaces(Some(list));
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{LinuxContainerConfig, LinuxContainerSecurityContext, NamespaceOption};

    fn ctr(pid: Option<NamespaceMode>) -> ContainerConfig {
        ContainerConfig {
            linux: Some(LinuxContainerConfig {
                resources: None,
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: pid.map(|p| NamespaceOption {
                        pid: p as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    fn pod(net: bool, pid: bool) -> PodNamespacePaths {
        PodNamespacePaths {
            net: net.then(|| PathBuf::from("/run/capcri/ns/p/net")),
            ipc: Some(PathBuf::from("/run/capcri/ns/p/ipc")),
            uts: Some(PathBuf::from("/run/capcri/ns/p/uts")),
            pid: pid.then(|| PathBuf::from("/run/capcri/ns/p/pid")),
            user: None,
            target_pid: None,
        }
    }

    fn summary(list: &[LinuxNamespace]) -> Vec<(LinuxNamespaceType, bool)> {
        list.iter().map(|n| (n.typ(), n.path().is_some())).collect()
    }

    #[test]
    fn namespace_table() {
        use LinuxNamespaceType::*;
        let cases = vec![
            (
                Some(NamespaceMode::Container),
                pod(true, false),
                vec![
                    (Pid, false),
                    (Ipc, true),
                    (Uts, true),
                    (Mount, false),
                    (Network, true),
                ],
            ),
            (
                None,
                pod(true, false),
                vec![
                    (Pid, false),
                    (Ipc, true),
                    (Uts, true),
                    (Mount, false),
                    (Network, true),
                ],
            ),
            (
                Some(NamespaceMode::Node),
                pod(true, false),
                vec![(Ipc, true), (Uts, true), (Mount, false), (Network, true)],
            ),
            (
                Some(NamespaceMode::Pod),
                pod(true, true),
                vec![
                    (Pid, true),
                    (Ipc, true),
                    (Uts, true),
                    (Mount, false),
                    (Network, true),
                ],
            ),
            // host network: no network entry at all
            (
                Some(NamespaceMode::Container),
                pod(false, false),
                vec![(Pid, false), (Ipc, true), (Uts, true), (Mount, false)],
            ),
        ];
        for (mode, pod, want) in cases {
            let got = container_namespaces(&ctr(mode), &pod).unwrap();
            assert_eq!(summary(&got), want, "pid mode {mode:?}");
        }
    }

    #[test]
    fn pod_user_namespace_is_joined_first() {
        use LinuxNamespaceType::*;
        let pod = PodNamespacePaths {
            user: Some(PathBuf::from("/run/capcri/ns/p/user")),
            ..pod(true, true)
        };
        let got = container_namespaces(&ctr(Some(NamespaceMode::Pod)), &pod).unwrap();
        assert_eq!(
            summary(&got),
            vec![
                (User, true),
                (Pid, true),
                (Ipc, true),
                (Uts, true),
                (Mount, false),
                (Network, true)
            ]
        );
    }

    #[test]
    fn target_mode_joins_the_target_or_fails_without_one() {
        use LinuxNamespaceType::*;
        let err =
            container_namespaces(&ctr(Some(NamespaceMode::Target)), &pod(true, true)).unwrap_err();
        assert!(err.to_string().contains("target_id"), "{err}");
        let with_target = PodNamespacePaths {
            target_pid: Some(PathBuf::from("/proc/42/ns/pid")),
            ..pod(true, true)
        };
        let got = container_namespaces(&ctr(Some(NamespaceMode::Target)), &with_target).unwrap();
        assert_eq!(got[0].typ(), Pid);
        assert_eq!(got[0].path().as_deref(), Some(Path::new("/proc/42/ns/pid")));
    }

    #[test]
    fn cgroup_namespace_only_for_unprivileged_containers_on_v2() {
        let with = |unified, privileged| {
            let mut spec = oci_spec::runtime::Spec::default();
            // The list `container_namespaces` makes: no cgroup namespace.
            if let Some(l) = spec.linux_mut() {
                l.set_namespaces(Some(vec![namespace(LinuxNamespaceType::Pid, None)]));
            }
            add_cgroup_namespace(&mut spec, unified, privileged);
            add_cgroup_namespace(&mut spec, unified, privileged);
            spec.linux()
                .as_ref()
                .and_then(|l| l.namespaces().clone())
                .unwrap_or_default()
                .iter()
                .filter(|n| n.typ() == LinuxNamespaceType::Cgroup)
                .count()
        };
        assert_eq!(with(true, false), 1);
        assert_eq!(with(true, true), 0);
        assert_eq!(with(false, false), 0);
    }

    #[test]
    fn pod_pid_without_pod_namespace_fails() {
        let err =
            container_namespaces(&ctr(Some(NamespaceMode::Pod)), &pod(true, false)).unwrap_err();
        assert!(err.to_string().contains("namespace_options.pid"));
    }
}
