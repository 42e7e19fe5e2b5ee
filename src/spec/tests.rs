//! Whole-spec tests: the rules of the submodules, seen through
//! `container_spec` and `exec_process`, and a JSON round trip.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{
    Capability as CriCapability, ContainerConfig, ContainerMetadata, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig, SecurityProfile,
    security_profile::ProfileType,
};
use oci_spec::runtime::{Capability, LinuxNamespaceType, Spec};

use super::*;
use crate::capabilities::oci::capabilities_from_set;

const PASSWD: &str = "root:x:0:0::/root:/bin/sh\nnginx:x:101:101::/:/bin/false\n";
const GROUP: &str = "root:x:0:\nnginx:x:101:\nwww:x:33:nginx\n";

fn pod(privileged: bool) -> PodSandboxConfig {
    PodSandboxConfig {
        hostname: "web-0".into(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                privileged,
                ..Default::default()
            }),
            sysctls: [(
                "net.ipv4.ping_group_range".to_string(),
                "0 2147483647".to_string(),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container(sc: LinuxContainerSecurityContext) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "web".into(),
            attempt: 0,
        }),
        command: vec!["/bin/sh".into()],
        args: vec!["-c".into(), "sleep 1".into()],
        annotations: [("a".to_string(), "b".to_string())].into_iter().collect(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                oom_score_adj: -997,
                cpu_shares: 2,
                ..Default::default()
            }),
            security_context: Some(sc),
        }),
        ..Default::default()
    }
}

fn ns_paths() -> PodNamespacePaths {
    PodNamespacePaths {
        net: Some("/run/ns/net".into()),
        ipc: Some("/run/ns/ipc".into()),
        uts: Some("/run/ns/uts".into()),
        pid: None,
        user: None,
        target_pid: None,
    }
}

fn files() -> PodFiles {
    PodFiles {
        hostname: Some("/pod/hostname".into()),
        resolv_conf: Some("/pod/resolv.conf".into()),
        hosts: Some("/pod/hosts".into()),
        shm: Some("/pod/shm".into()),
    }
}

fn build(
    pod: &PodSandboxConfig,
    c: &ContainerConfig,
    caps: Option<LinuxCapabilities>,
    seccomp: Option<&str>,
) -> Result<Spec, SpecError> {
    let ns = ns_paths();
    let f = files();
    container_spec(&ContainerSpecInput {
        pod,
        container: c,
        image_config: None,
        rootfs: Path::new("/var/lib/capcri/rootfs/c1"),
        namespaces: &ns,
        pod_files: &f,
        cgroups_path: "/capcri/pod1/c1".into(),
        users: ImageUserDb {
            passwd: Some(PASSWD),
            group: Some(GROUP),
        },
        capabilities: caps,
        localhost_seccomp_profile: seccomp,
        user_namespace: None,
    })
}

fn process(spec: &Spec) -> &Process {
    spec.process().as_ref().unwrap()
}

fn linux(spec: &Spec) -> &Linux {
    spec.linux().as_ref().unwrap()
}

#[test]
fn default_container_spec() {
    let sc = LinuxContainerSecurityContext {
        run_as_username: "nginx".into(),
        ..Default::default()
    };
    let spec = build(&pod(false), &container(sc), None, None).unwrap();
    let p = process(&spec);
    assert_eq!(
        p.args().as_deref(),
        Some(&["/bin/sh".to_string(), "-c".into(), "sleep 1".into()][..])
    );
    assert_eq!((p.user().uid(), p.user().gid()), (101, 101));
    assert_eq!(p.user().additional_gids().as_deref(), Some(&[33, 101][..]));
    assert!(
        p.env()
            .as_ref()
            .unwrap()
            .contains(&"HOSTNAME=web-0".to_string())
    );
    assert_eq!(p.cwd(), Path::new("/"));
    assert_eq!(p.no_new_privileges(), None);
    assert_eq!(p.oom_score_adj(), Some(-997));
    let caps = p.capabilities().as_ref().unwrap();
    assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
    assert!(caps.inheritable().as_ref().unwrap().is_empty());
    let root = spec.root().as_ref().unwrap();
    assert_eq!(
        (root.path().as_path(), root.readonly()),
        (Path::new("/var/lib/capcri/rootfs/c1"), Some(false))
    );
    let l = linux(&spec);
    assert_eq!(
        l.cgroups_path().as_deref(),
        Some(Path::new("/capcri/pod1/c1"))
    );
    assert_eq!(
        l.masked_paths().as_ref().unwrap().len(),
        DEFAULT_MASKED_PATHS.len()
    );
    assert_eq!(
        l.readonly_paths().as_ref().unwrap().len(),
        DEFAULT_READONLY_PATHS.len()
    );
    assert!(l.seccomp().is_none());
    assert_eq!(
        l.sysctl()
            .as_ref()
            .unwrap()
            .get("net.ipv4.ping_group_range")
            .map(String::as_str),
        Some("0 2147483647")
    );
    let types: Vec<_> = l
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert_eq!(
        types,
        vec![
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Network
        ]
    );
    let ann = spec.annotations().as_ref().unwrap();
    assert_eq!(
        ann.get(CONTAINER_TYPE_ANNOTATION).map(String::as_str),
        Some("container")
    );
    assert_eq!(ann.get("a").map(String::as_str), Some("b"));
    assert!(spec.hostname().is_none());
}

#[test]
fn no_new_privs_true_and_given_paths() {
    let sc = LinuxContainerSecurityContext {
        no_new_privs: true,
        readonly_rootfs: true,
        masked_paths: vec!["/proc/kcore".into()],
        readonly_paths: vec!["/proc/sys".into(), "/proc/bus".into()],
        ..Default::default()
    };
    let spec = build(&pod(false), &container(sc), None, None).unwrap();
    assert_eq!(process(&spec).no_new_privileges(), Some(true));
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    assert_eq!(
        linux(&spec).masked_paths().as_deref(),
        Some(&["/proc/kcore".to_string()][..])
    );
    assert_eq!(linux(&spec).readonly_paths().as_ref().unwrap().len(), 2);
}

#[test]
fn privileged_container() {
    let sc = LinuxContainerSecurityContext {
        privileged: true,
        masked_paths: vec!["/proc/kcore".into()],
        seccomp: Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    };
    let err = build(&pod(false), &container(sc.clone()), None, None).unwrap_err();
    assert!(err.to_string().contains("privileged"));
    let spec = build(&pod(true), &container(sc), None, None).unwrap();
    let l = linux(&spec);
    assert!(l.masked_paths().as_ref().unwrap().is_empty());
    assert!(l.readonly_paths().as_ref().unwrap().is_empty());
    assert!(l.seccomp().is_none());
    let caps = process(&spec).capabilities().as_ref().unwrap();
    assert_eq!(
        caps.effective().as_ref().unwrap().len(),
        crate::capabilities::kernel::all_capabilities().len()
    );
    assert!(l.resources().as_ref().unwrap().devices().as_ref().unwrap()[0].allow());
}

#[test]
fn policy_capabilities_win_and_shape_runtime_default() {
    let sc = LinuxContainerSecurityContext {
        seccomp: Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        capabilities: Some(CriCapability {
            add_capabilities: vec!["SYS_ADMIN".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let decided = capabilities_from_set(HashSet::from([Capability::NetBindService]));
    let spec = build(&pod(false), &container(sc), Some(decided.clone()), None).unwrap();
    assert_eq!(process(&spec).capabilities().as_ref(), Some(&decided));
    let seccomp = linux(&spec).seccomp().as_ref().unwrap();
    let allowed: Vec<String> = seccomp
        .syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|s| s.action() == oci_spec::runtime::LinuxSeccompAction::ScmpActAllow)
        .flat_map(|s| s.names().clone())
        .collect();
    // the decision dropped SYS_ADMIN, so mount stays blocked
    assert!(!allowed.contains(&"mount".to_string()));
    assert!(allowed.contains(&"read".to_string()));
}

#[test]
fn invalid_inputs() {
    let bad_cap = LinuxContainerSecurityContext {
        capabilities: Some(CriCapability {
            add_capabilities: vec!["FLY".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(build(&pod(false), &container(bad_cap), None, None).is_err());
    let bad_seccomp = LinuxContainerSecurityContext {
        seccomp: Some(SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: "/x.json".into(),
        }),
        ..Default::default()
    };
    let err = build(&pod(false), &container(bad_seccomp), None, Some("[1,2")).unwrap_err();
    assert!(matches!(err, SpecError::InvalidSeccompProfile { .. }));
    let pid_pod = LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(build(&pod(false), &container(pid_pod), None, None).is_err());
    let mut no_cmd = container(LinuxContainerSecurityContext::default());
    no_cmd.command.clear();
    no_cmd.args.clear();
    assert!(
        matches!(build(&pod(false), &no_cmd, None, None), Err(SpecError::NoCommand { container }) if container == "web")
    );
    let c = container(LinuxContainerSecurityContext::default());
    let ns = ns_paths();
    let f = files();
    let relative = container_spec(&ContainerSpecInput {
        pod: &pod(false),
        container: &c,
        image_config: None,
        rootfs: Path::new("/r"),
        namespaces: &ns,
        pod_files: &f,
        cgroups_path: "capcri/c1".into(),
        users: ImageUserDb::default(),
        capabilities: None,
        localhost_seccomp_profile: None,
        user_namespace: None,
    });
    assert!(relative.is_err());
}

#[test]
fn json_round_trip() {
    let sc = LinuxContainerSecurityContext {
        seccomp: Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        no_new_privs: true,
        ..Default::default()
    };
    let spec = build(&pod(false), &container(sc), None, None).unwrap();
    let json = serde_json::to_string(&spec).unwrap();
    let back: Spec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec);
    // the fields libcontainer reads are present under their OCI names
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["linux"]["cgroupsPath"], "/capcri/pod1/c1");
    assert_eq!(value["process"]["noNewPrivileges"], true);
    assert!(value["linux"]["seccomp"]["syscalls"].is_array());
}

#[test]
fn exec_process_keeps_identity() {
    let sc = LinuxContainerSecurityContext {
        run_as_user: Some(k8s_cri::v1::Int64Value { value: 101 }),
        no_new_privs: true,
        ..Default::default()
    };
    let mut c = container(sc);
    c.working_dir = "/srv".into();
    let spec = build(&pod(false), &c, None, None).unwrap();
    let p = exec_process(&spec, vec!["id".into()]).unwrap();
    let base = process(&spec);
    assert_eq!(p.args().as_deref(), Some(&["id".to_string()][..]));
    assert_eq!(p.user(), base.user());
    assert_eq!(p.user().uid(), 101);
    assert_eq!(p.env(), base.env());
    assert_eq!(p.cwd(), &PathBuf::from("/srv"));
    assert_eq!(p.capabilities(), base.capabilities());
    assert_eq!(p.no_new_privileges(), Some(true));
    assert!(exec_process(&spec, vec![]).is_err());
    assert!(
        exec_process(
            &Spec::default().set_process(None).clone(),
            vec!["id".into()]
        )
        .is_err()
    );
}

#[test]
fn unset_fields_stay_out_of_the_json() {
    // An explicit `noNewPrivileges: false` next to a seccomp filter breaks
    // libcontainer's create; the hostname belongs to the pod's UTS namespace.
    let sc = LinuxContainerSecurityContext {
        seccomp: Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    };
    let spec = build(&pod(false), &container(sc), None, None).unwrap();
    let value = serde_json::to_value(&spec).unwrap();
    assert!(value["process"].get("noNewPrivileges").is_none());
    assert!(value.get("hostname").is_none());
    assert!(value["linux"]["seccomp"].is_object());
}

#[test]
fn pod_user_namespace_joins_by_path_with_mappings() {
    use crate::spec::{IdRange, PodUserNamespace};
    let userns = PodUserNamespace {
        uids: IdRange {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        },
        gids: IdRange {
            container_id: 0,
            host_id: 131072,
            length: 65536,
        },
    };
    let ns = PodNamespacePaths {
        user: Some("/run/ns/user".into()),
        ..ns_paths()
    };
    let f = files();
    let c = container(LinuxContainerSecurityContext::default());
    let input = |userns: Option<&PodUserNamespace>| {
        container_spec(&ContainerSpecInput {
            pod: &pod(false),
            container: &c,
            image_config: None,
            rootfs: Path::new("/r"),
            namespaces: &ns,
            pod_files: &f,
            cgroups_path: "/capcri/p/c".into(),
            users: ImageUserDb::default(),
            capabilities: None,
            localhost_seccomp_profile: None,
            user_namespace: userns,
        })
    };
    let spec = input(Some(&userns)).unwrap();
    let l = linux(&spec);
    let first = &l.namespaces().as_ref().unwrap()[0];
    assert_eq!(first.typ(), oci_spec::runtime::LinuxNamespaceType::User);
    assert_eq!(first.path().as_deref(), Some(Path::new("/run/ns/user")));
    let uids = l.uid_mappings().as_ref().unwrap();
    let gids = l.gid_mappings().as_ref().unwrap();
    assert_eq!(
        (uids[0].container_id(), uids[0].host_id(), uids[0].size()),
        (0, 65536, 65536)
    );
    assert_eq!(gids[0].host_id(), 131072);
    // Capabilities are relative to the user namespace: the same set as
    // without one.
    let plain = build(&pod(false), &c, None, None).unwrap();
    assert_eq!(
        process(&spec).capabilities(),
        process(&plain).capabilities()
    );
    // A pinned user namespace without its mappings (or the reverse) is a bug.
    assert!(input(None).is_err());
}
