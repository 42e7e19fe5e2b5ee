//! A Pod manifest to the CRI requests kubelet would send for it: the
//! PodSandboxConfig of RunPodSandbox and one ContainerConfig per container.
//! Pure (no I/O), so the mapping is unit-tested without root, and the
//! CRI-direct runner exercises capcri with what a kubelet really sends
//! instead of hand-built requests. The rules follow kubelet's
//! kuberuntime_sandbox/kuberuntime_container and security_context code:
//! the container's securityContext wins over the pod's, `allowPrivilegeEscalation:
//! false` is no_new_privs, a pod without a seccomp profile is Unconfined,
//! non-privileged containers get the default masked and read-only /proc paths.

use super::pod::{Container, Pod, SeccompProfile};
use k8s_cri::v1 as cri;
use std::collections::HashMap;
use std::path::Path;

/// Where the node keeps what the translation refers to.
#[derive(Debug, Clone)]
pub struct NodeLayout<'a> {
    /// kubelet's `podLogsDirectory` (/var/log/pods on a real node).
    pub pod_logs: &'a Path,
    /// kubelet's seccomp profile root (`<root-dir>/seccomp`).
    pub seccomp_root: &'a Path,
    /// The pod's cgroup; empty lets the runtime choose.
    pub cgroup_parent: String,
}

#[derive(Debug, Clone)]
pub struct Translated {
    pub sandbox: cri::PodSandboxConfig,
    pub containers: Vec<cri::ContainerConfig>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranslateError {
    #[error(
        "not a v1 Pod (apiVersion {api_version:?}, kind {kind:?}): each scenario file holds one Pod"
    )]
    NotAPod { api_version: String, kind: String },
    #[error("pod {pod:?} has no containers: add one under spec.containers")]
    NoContainers { pod: String },
    #[error(
        "container {container:?}: seccompProfile type {kind:?} is unknown; use RuntimeDefault, Unconfined or Localhost"
    )]
    UnknownSeccompType { container: String, kind: String },
    #[error(
        "container {container:?}: seccompProfile type Localhost needs localhostProfile (a path below the kubelet's seccomp root)"
    )]
    LocalhostWithoutProfile { container: String },
    #[error(
        "container {container:?}: runAsNonRoot is true but runAsUser is 0; kubelet refuses this with CreateContainerConfigError: drop runAsUser: 0 or runAsNonRoot"
    )]
    RootWithRunAsNonRoot { container: String },
}

/// The labels kubelet puts on sandboxes and containers; kubelet's own
/// lookups (and ours, in the kubelet runner) go through them.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// kubelet's DefaultProcMount masked paths (k8s.io/kubernetes
/// pkg/securitycontext), applied to every non-privileged container.
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub fn pod_uid(pod: &Pod) -> String {
    pod.metadata
        .uid
        .clone()
        .unwrap_or_else(|| format!("e2e-{}", pod.metadata.name))
}

pub fn pod_namespace(pod: &Pod) -> String {
    pod.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string())
}

pub fn translate(pod: &Pod, node: &NodeLayout) -> Result<Translated, TranslateError> {
    if pod.api_version != "v1" || pod.kind != "Pod" {
        return Err(TranslateError::NotAPod {
            api_version: pod.api_version.clone(),
            kind: pod.kind.clone(),
        });
    }
    if pod.spec.containers.is_empty() {
        return Err(TranslateError::NoContainers {
            pod: pod.metadata.name.clone(),
        });
    }
    let containers = pod
        .spec
        .containers
        .iter()
        .map(|c| container_config(pod, c, node))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Translated {
        sandbox: sandbox_config(pod, node)?,
        containers,
    })
}

fn identity_labels(pod: &Pod) -> HashMap<String, String> {
    HashMap::from([
        (POD_NAME.to_string(), pod.metadata.name.clone()),
        (POD_NAMESPACE.to_string(), pod_namespace(pod)),
        (POD_UID.to_string(), pod_uid(pod)),
    ])
}

fn namespace_options(pod: &Pod) -> cri::NamespaceOption {
    let s = &pod.spec;
    let mode = |host: bool, shared: cri::NamespaceMode| {
        if host {
            cri::NamespaceMode::Node as i32
        } else {
            shared as i32
        }
    };
    let pid_shared = if s.share_process_namespace {
        cri::NamespaceMode::Pod
    } else {
        cri::NamespaceMode::Container
    };
    cri::NamespaceOption {
        network: mode(s.host_network, cri::NamespaceMode::Pod),
        pid: mode(s.host_pid, pid_shared),
        ipc: mode(s.host_ipc, cri::NamespaceMode::Pod),
        ..Default::default()
    }
}

fn sandbox_config(pod: &Pod, node: &NodeLayout) -> Result<cri::PodSandboxConfig, TranslateError> {
    let psc = pod.spec.security_context.clone().unwrap_or_default();
    let seccomp = profile(
        &pod.metadata.name,
        psc.seccomp_profile.as_ref(),
        node.seccomp_root,
    )?;
    let mut labels: HashMap<String, String> = pod.metadata.labels.clone().into_iter().collect();
    labels.extend(identity_labels(pod));
    let log_directory = node.pod_logs.join(format!(
        "{}_{}_{}",
        pod_namespace(pod),
        pod.metadata.name,
        pod_uid(pod)
    ));
    Ok(cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: pod.metadata.name.clone(),
            uid: pod_uid(pod),
            namespace: pod_namespace(pod),
            attempt: 0,
        }),
        hostname: pod
            .spec
            .hostname
            .clone()
            .unwrap_or_else(|| pod.metadata.name.clone()),
        log_directory: log_directory.display().to_string(),
        labels,
        annotations: pod.metadata.annotations.clone().into_iter().collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: node.cgroup_parent.clone(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                run_as_user: psc.run_as_user.map(|value| cri::Int64Value { value }),
                run_as_group: psc.run_as_group.map(|value| cri::Int64Value { value }),
                supplemental_groups: psc.supplemental_groups.clone(),
                privileged: pod
                    .spec
                    .containers
                    .iter()
                    .any(|c| c.security_context.as_ref().and_then(|s| s.privileged) == Some(true)),
                seccomp: Some(seccomp),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// kubelet's mapping of a seccompProfile (container's, else pod's) to the
/// CRI SecurityProfile; no profile at all is Unconfined.
fn profile(
    owner: &str,
    p: Option<&SeccompProfile>,
    seccomp_root: &Path,
) -> Result<cri::SecurityProfile, TranslateError> {
    use cri::security_profile::ProfileType;
    let Some(p) = p else {
        return Ok(cri::SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        });
    };
    match p.kind.as_str() {
        "RuntimeDefault" => Ok(cri::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        "Unconfined" => Ok(cri::SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        }),
        "Localhost" => {
            let rel = p
                .localhost_profile
                .as_deref()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| TranslateError::LocalhostWithoutProfile {
                    container: owner.to_string(),
                })?;
            Ok(cri::SecurityProfile {
                profile_type: ProfileType::Localhost as i32,
                localhost_ref: seccomp_root.join(rel).display().to_string(),
            })
        }
        other => Err(TranslateError::UnknownSeccompType {
            container: owner.to_string(),
            kind: other.to_string(),
        }),
    }
}

fn container_config(
    pod: &Pod,
    c: &Container,
    node: &NodeLayout,
) -> Result<cri::ContainerConfig, TranslateError> {
    let psc = pod.spec.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let run_as_user = sc.run_as_user.or(psc.run_as_user);
    let run_as_non_root = sc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false);
    if run_as_non_root && run_as_user == Some(0) {
        return Err(TranslateError::RootWithRunAsNonRoot {
            container: c.name.clone(),
        });
    }
    let privileged = sc.privileged.unwrap_or(false);
    let seccomp = profile(
        &c.name,
        sc.seccomp_profile.as_ref().or(psc.seccomp_profile.as_ref()),
        node.seccomp_root,
    )?;
    let caps = sc.capabilities.clone().unwrap_or_default();
    let (masked, readonly) = if privileged {
        (vec![], vec![])
    } else {
        (
            MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
            READONLY_PATHS.iter().map(|s| s.to_string()).collect(),
        )
    };
    let mut labels = identity_labels(pod);
    labels.insert(CONTAINER_NAME.to_string(), c.name.clone());
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: c.image.clone(),
            ..Default::default()
        }),
        command: c.command.clone(),
        args: c.args.clone(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: c
            .env
            .iter()
            .map(|e| cri::KeyValue {
                key: e.name.clone(),
                value: e.value.clone(),
            })
            .collect(),
        labels,
        log_path: format!("{}/0.log", c.name),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: caps.add,
                    drop_capabilities: caps.drop,
                    add_ambient_capabilities: vec![],
                }),
                privileged,
                namespace_options: Some(namespace_options(pod)),
                run_as_user: run_as_user.map(|value| cri::Int64Value { value }),
                run_as_group: sc
                    .run_as_group
                    .or(psc.run_as_group)
                    .map(|value| cri::Int64Value { value }),
                readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
                supplemental_groups: psc.supplemental_groups.clone(),
                no_new_privs: sc.allow_privilege_escalation == Some(false),
                masked_paths: masked,
                readonly_paths: readonly,
                seccomp: Some(seccomp),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri::security_profile::ProfileType;
    use std::path::PathBuf;

    fn parse(yaml: &str) -> Pod {
        serde_norway::from_str(yaml).expect("pod yaml")
    }

    fn node() -> (PathBuf, PathBuf) {
        (
            PathBuf::from("/var/log/pods"),
            PathBuf::from("/var/lib/kubelet/seccomp"),
        )
    }

    fn run(yaml: &str) -> Result<Translated, TranslateError> {
        let (logs, seccomp) = node();
        translate(
            &parse(yaml),
            &NodeLayout {
                pod_logs: &logs,
                seccomp_root: &seccomp,
                cgroup_parent: String::new(),
            },
        )
    }

    fn sc(c: &cri::ContainerConfig) -> &cri::LinuxContainerSecurityContext {
        c.linux.as_ref().unwrap().security_context.as_ref().unwrap()
    }

    const COREDNS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000}
  containers:
    - name: coredns
      image: registry.k8s.io/coredns/coredns:v1.11.1
      args: [-conf, /etc/coredns/Corefile]
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {add: [NET_BIND_SERVICE], drop: [ALL]}
"#;

    #[test]
    fn coredns_security_context_maps_like_kubelet() {
        let t = run(COREDNS).unwrap();
        let c = &t.containers[0];
        let s = sc(c);
        assert_eq!(s.run_as_user, Some(cri::Int64Value { value: 1000 }));
        assert_eq!(s.run_as_group, Some(cri::Int64Value { value: 1000 }));
        assert!(s.no_new_privs, "allowPrivilegeEscalation: false");
        assert!(s.readonly_rootfs);
        assert!(!s.privileged);
        let caps = s.capabilities.as_ref().unwrap();
        assert_eq!(caps.add_capabilities, ["NET_BIND_SERVICE"]);
        assert_eq!(caps.drop_capabilities, ["ALL"]);
        assert!(
            caps.add_ambient_capabilities.is_empty(),
            "kubelet never asks for ambient"
        );
        assert_eq!(
            s.seccomp.as_ref().unwrap().profile_type,
            ProfileType::Unconfined as i32,
            "no profile anywhere is Unconfined"
        );
        assert!(s.masked_paths.contains(&"/proc/kcore".to_string()));
        assert!(s.readonly_paths.contains(&"/proc/sys".to_string()));
        assert_eq!(c.args, ["-conf", "/etc/coredns/Corefile"]);
        assert!(
            c.command.is_empty(),
            "args only: the image entrypoint stays"
        );
        assert_eq!(c.log_path, "coredns/0.log");
        assert_eq!(c.labels[CONTAINER_NAME], "coredns");
        assert_eq!(c.labels[POD_NAMESPACE], "kube-system");
    }

    #[test]
    fn sandbox_carries_identity_logs_and_namespaces() {
        let t = run(COREDNS).unwrap();
        let s = &t.sandbox;
        let m = s.metadata.as_ref().unwrap();
        assert_eq!(
            (m.name.as_str(), m.namespace.as_str()),
            ("dns", "kube-system")
        );
        assert_eq!(m.uid, "e2e-dns");
        assert_eq!(s.log_directory, "/var/log/pods/kube-system_dns_e2e-dns");
        assert_eq!(s.hostname, "dns");
        assert_eq!(s.labels["k8s-app"], "kube-dns");
        assert_eq!(s.labels[POD_NAME], "dns");
        let lsc = s.linux.as_ref().unwrap().security_context.as_ref().unwrap();
        let ns = lsc.namespace_options.as_ref().unwrap();
        assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);
        assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
        assert_eq!(ns.ipc, cri::NamespaceMode::Pod as i32);
        assert_eq!(lsc.run_as_user, Some(cri::Int64Value { value: 1000 }));
    }

    #[test]
    fn container_seccomp_overrides_the_pods() {
        let t = run(r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  securityContext: {seccompProfile: {type: RuntimeDefault}}
  containers:
    - {name: a, image: x}
    - {name: b, image: x, securityContext: {seccompProfile: {type: Unconfined}}}
    - {name: c, image: x, securityContext: {seccompProfile: {type: Localhost, localhostProfile: prof/audit.json}}}
"#)
        .unwrap();
        let kinds: Vec<_> = t
            .containers
            .iter()
            .map(|c| sc(c).seccomp.clone().unwrap())
            .collect();
        assert_eq!(kinds[0].profile_type, ProfileType::RuntimeDefault as i32);
        assert_eq!(kinds[1].profile_type, ProfileType::Unconfined as i32);
        assert_eq!(kinds[2].profile_type, ProfileType::Localhost as i32);
        assert_eq!(
            kinds[2].localhost_ref,
            "/var/lib/kubelet/seccomp/prof/audit.json"
        );
        let sandbox = t
            .sandbox
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .seccomp
            .unwrap();
        assert_eq!(sandbox.profile_type, ProfileType::RuntimeDefault as i32);
    }

    #[test]
    fn privileged_host_namespaces_and_escalation_default() {
        let t = run(r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  hostNetwork: true
  hostPID: true
  shareProcessNamespace: true
  containers:
    - {name: a, image: x, securityContext: {privileged: true}}
"#)
        .unwrap();
        let s = sc(&t.containers[0]);
        assert!(s.privileged);
        assert!(s.masked_paths.is_empty() && s.readonly_paths.is_empty());
        assert!(
            !s.no_new_privs,
            "unset allowPrivilegeEscalation is not no_new_privs"
        );
        let ns = s.namespace_options.as_ref().unwrap();
        assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
        assert_eq!(
            ns.pid,
            cri::NamespaceMode::Node as i32,
            "hostPID beats sharing"
        );
        let lsc = t.sandbox.linux.unwrap().security_context.unwrap();
        assert!(lsc.privileged);
    }

    #[test]
    fn bad_manifests_are_named_errors() {
        let err = run(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {containers: []}\n",
        )
        .unwrap_err();
        assert!(matches!(err, TranslateError::NotAPod { .. }), "{err}");
        let err = run("apiVersion: v1\nkind: Pod\nmetadata: {name: d}\nspec: {containers: []}\n")
            .unwrap_err();
        assert_eq!(err, TranslateError::NoContainers { pod: "d".into() });
        let err = run(r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  securityContext: {runAsNonRoot: true}
  containers: [{name: a, image: x, securityContext: {runAsUser: 0}}]
"#)
        .unwrap_err();
        assert!(
            err.to_string().contains("CreateContainerConfigError"),
            "{err}"
        );
        let err = run(r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers: [{name: a, image: x, securityContext: {seccompProfile: {type: Strict}}}]
"#)
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("RuntimeDefault, Unconfined or Localhost"),
            "{err}"
        );
        let err = run(r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers: [{name: a, image: x, securityContext: {seccompProfile: {type: Localhost}}}]
"#)
        .unwrap_err();
        assert_eq!(
            err,
            TranslateError::LocalhostWithoutProfile {
                container: "a".into()
            }
        );
    }

    #[test]
    fn unknown_security_fields_are_refused_not_ignored() {
        let err = serde_norway::from_str::<Pod>(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers: [{name: a, image: x, securityContext: {procMount: Unmasked}}]
"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("procMount"), "{err}");
    }
}
