//! The pod's user namespace, from `NamespaceOption.userns_options`.
//!
//! NODE (or no option) keeps the host's user namespace. POD gives the pod
//! one user namespace, created by its monitor with the uid/gid mappings
//! kubelet allocated; every container of the pod joins it. CONTAINER and
//! TARGET have no meaning for kubelet (KEP-127) and are refused.
//!
//! Only one mapping per kind is accepted, as containerd does: kubelet always
//! sends exactly one range of 65536 ids starting at container id 0, and a
//! single range makes overlap impossible by construction.

use std::fmt;
use std::str::FromStr;

use k8s_cri::v1::{ContainerConfig, IdMapping, NamespaceMode, NamespaceOption, PodSandboxConfig};

use oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder};

use super::{SpecError, security_context};

const FIELD: &str = "security_context.namespace_options.userns_options";

/// One contiguous id range: container ids `container_id..container_id+length`
/// are host ids `host_id..host_id+length`. The line format of
/// `/proc/<pid>/uid_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdRange {
    /// The host id of a container id, if the range maps it.
    pub fn to_host(&self, container_id: u32) -> Option<u32> {
        let offset = container_id.checked_sub(self.container_id)?;
        (offset < self.length).then(|| self.host_id + offset)
    }

    /// The line written to `/proc/<pid>/uid_map` or `gid_map`.
    pub fn map_line(&self) -> String {
        format!("{} {} {}\n", self.container_id, self.host_id, self.length)
    }
}

/// `container:host:length`, the monitor's command-line form.
impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.container_id, self.host_id, self.length)
    }
}

impl FromStr for IdRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let [c, h, l] = parts.as_slice() else {
            return Err(format!(
                "id mapping {s:?} is not container:host:length, e.g. 0:65536:65536"
            ));
        };
        let num = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("id mapping {s:?}: {v:?} is not a 32-bit unsigned number"))
        };
        Ok(IdRange {
            container_id: num(c)?,
            host_id: num(h)?,
            length: num(l)?,
        })
    }
}

/// A pod in POD user-namespace mode: its uid and gid mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodUserNamespace {
    pub uids: IdRange,
    pub gids: IdRange,
}

impl PodUserNamespace {
    /// OCI `linux.uidMappings`/`gidMappings`: informative when the spec
    /// joins the pod's namespace by path, but they tell libcontainer's mount
    /// validation that the container has mappings.
    pub fn oci_mappings(&self) -> Result<(LinuxIdMapping, LinuxIdMapping), SpecError> {
        let oci = |r: &IdRange| {
            LinuxIdMappingBuilder::default()
                .container_id(r.container_id)
                .host_id(r.host_id)
                .size(r.length)
                .build()
                .map_err(|e| SpecError::invalid(FIELD, format!("building the OCI id mapping: {e}")))
        };
        Ok((oci(&self.uids)?, oci(&self.gids)?))
    }
}

fn one_range(kind: &str, list: &[IdMapping]) -> Result<IdRange, SpecError> {
    let field = format!("{FIELD}.{kind}");
    let m = match list {
        [] => {
            return Err(SpecError::invalid_pod(
                field,
                "POD mode needs one mapping; kubelet fills it from its id allocator",
            ));
        }
        [m] => m,
        _ => {
            return Err(SpecError::invalid_pod(
                field,
                format!(
                    "{} mappings given; capcri (like containerd) supports exactly one contiguous range per kind",
                    list.len()
                ),
            ));
        }
    };
    if m.length == 0 {
        return Err(SpecError::invalid_pod(
            field,
            "the mapping has length 0; map at least container id 0",
        ));
    }
    if m.container_id != 0 {
        return Err(SpecError::invalid_pod(
            field,
            format!(
                "the mapping starts at container id {}, so container id 0 (root, the owner of the image files) is not mapped; start it at 0",
                m.container_id
            ),
        ));
    }
    if u64::from(m.host_id) + u64::from(m.length) > 1 << 32
        || u64::from(m.container_id) + u64::from(m.length) > 1 << 32
    {
        return Err(SpecError::invalid_pod(
            field,
            format!(
                "host id {} + length {} passes the 32-bit id space; shorten the range",
                m.host_id, m.length
            ),
        ));
    }
    Ok(IdRange {
        container_id: m.container_id,
        host_id: m.host_id,
        length: m.length,
    })
}

fn from_option(opts: Option<&NamespaceOption>) -> Result<Option<PodUserNamespace>, SpecError> {
    let Some(userns) = opts.and_then(|o| o.userns_options.as_ref()) else {
        return Ok(None);
    };
    match userns.mode() {
        NamespaceMode::Node => {
            if !userns.uids.is_empty() || !userns.gids.is_empty() {
                return Err(SpecError::invalid_pod(
                    FIELD,
                    "NODE mode uses the host's user namespace, so it takes no uid/gid mappings; drop them or use POD",
                ));
            }
            Ok(None)
        }
        NamespaceMode::Pod => Ok(Some(PodUserNamespace {
            uids: one_range("uids", &userns.uids)?,
            gids: one_range("gids", &userns.gids)?,
        })),
        mode @ (NamespaceMode::Container | NamespaceMode::Target) => Err(SpecError::invalid_pod(
            FIELD,
            format!(
                "mode {mode:?} is not supported for user namespaces; use POD (hostUsers: false) or NODE"
            ),
        )),
    }
}

/// The pod's user namespace: `None` for NODE mode. Also refuses POD mode
/// next to host namespaces (as kubelet does): a sysfs or procfs owned by
/// the host cannot be mounted from inside the pod's user namespace, and a
/// host network namespace would not be owned by it.
pub fn pod_user_namespace(pod: &PodSandboxConfig) -> Result<Option<PodUserNamespace>, SpecError> {
    let opts = pod
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|sc| sc.namespace_options.as_ref());
    let userns = from_option(opts)?;
    if userns.is_some()
        && let Some(o) = opts
    {
        for (name, mode) in [("network", o.network()), ("pid", o.pid()), ("ipc", o.ipc())] {
            if mode == NamespaceMode::Node {
                return Err(SpecError::invalid_pod(
                    FIELD,
                    format!(
                        "POD user namespace mode cannot be combined with the host's {name} namespace; \
                         set hostUsers: true or drop host{}",
                        match name {
                            "network" => "Network",
                            "pid" => "PID",
                            _ => "IPC",
                        }
                    ),
                ));
            }
        }
    }
    Ok(userns)
}

/// A container runs in its pod's user namespace. Its own userns_options,
/// when given, must say the same as the pod's (kubelet copies them); and in
/// a POD user namespace it can neither be privileged nor use the host's PID
/// namespace, as kubelet's own validation says.
pub fn check_container_user_namespace(
    container: &ContainerConfig,
    pod: Option<&PodUserNamespace>,
) -> Result<(), SpecError> {
    let opts = security_context(container).and_then(|sc| sc.namespace_options.as_ref());
    if pod.is_some() {
        if opts.is_some_and(|o| o.pid() == NamespaceMode::Node) {
            return Err(SpecError::invalid(
                "security_context.namespace_options.pid",
                "NODE (the host's PID namespace) cannot be used from a POD user namespace, which cannot mount the host's /proc; use POD or CONTAINER",
            ));
        }
        if security_context(container).is_some_and(|sc| sc.privileged) {
            return Err(SpecError::invalid(
                "security_context.privileged",
                "a privileged container cannot run in a POD user namespace (its host devices and sysfs need the host's); set hostUsers: true",
            ));
        }
    }
    if opts.and_then(|o| o.userns_options.as_ref()).is_none() {
        return Ok(());
    }
    let own = from_option(opts).map_err(|e| match e {
        SpecError::InvalidPodConfig { field, reason } => SpecError::InvalidConfig { field, reason },
        other => other,
    })?;
    if own.as_ref() != pod {
        return Err(SpecError::invalid(
            FIELD,
            format!(
                "the container asks for {} but its pod has {}; a container always runs in its pod's user namespace",
                describe(own.as_ref()),
                describe(pod)
            ),
        ));
    }
    Ok(())
}

fn describe(u: Option<&PodUserNamespace>) -> String {
    match u {
        None => "the host user namespace (NODE)".into(),
        Some(u) => format!(
            "a POD user namespace with uids {} and gids {}",
            u.uids, u.gids
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{
        LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
        LinuxSandboxSecurityContext, UserNamespace,
    };

    fn m(c: u32, h: u32, l: u32) -> IdMapping {
        IdMapping {
            container_id: c,
            host_id: h,
            length: l,
        }
    }

    fn opts(mode: NamespaceMode, uids: Vec<IdMapping>, gids: Vec<IdMapping>) -> NamespaceOption {
        NamespaceOption {
            userns_options: Some(UserNamespace {
                mode: mode as i32,
                uids,
                gids,
            }),
            ..Default::default()
        }
    }

    fn pod(o: Option<NamespaceOption>) -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: o,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const R: IdRange = IdRange {
        container_id: 0,
        host_id: 65536,
        length: 65536,
    };

    #[test]
    fn accepted_modes() {
        use NamespaceMode::*;
        let one = || vec![m(0, 65536, 65536)];
        let cases: Vec<(Option<NamespaceOption>, Option<PodUserNamespace>)> = vec![
            (None, None),
            (Some(NamespaceOption::default()), None),
            (Some(opts(Node, vec![], vec![])), None),
            (
                Some(opts(Pod, one(), one())),
                Some(PodUserNamespace { uids: R, gids: R }),
            ),
            (
                Some(opts(Pod, one(), vec![m(0, 1000, 100000)])),
                Some(PodUserNamespace {
                    uids: R,
                    gids: IdRange {
                        container_id: 0,
                        host_id: 1000,
                        length: 100000,
                    },
                }),
            ),
        ];
        for (o, want) in cases {
            assert_eq!(pod_user_namespace(&pod(o.clone())).unwrap(), want, "{o:?}");
        }
    }

    #[test]
    fn refused_options_name_the_cause() {
        use NamespaceMode::*;
        let one = || vec![m(0, 65536, 65536)];
        let cases: Vec<(NamespaceOption, &str)> = vec![
            (
                opts(Container, vec![], vec![]),
                "Container is not supported",
            ),
            (opts(Target, vec![], vec![]), "Target is not supported"),
            (opts(Node, one(), one()), "takes no uid/gid mappings"),
            (opts(Pod, vec![], one()), "uids: POD mode needs one mapping"),
            (opts(Pod, one(), vec![]), "gids: POD mode needs one mapping"),
            (
                opts(Pod, vec![m(0, 1000, 100000), m(0, 2000, 100000)], one()),
                "2 mappings given",
            ),
            (opts(Pod, vec![m(1, 1000, 100000)], one()), "container id 0"),
            (opts(Pod, vec![m(0, 1000, 0)], one()), "length 0"),
            (
                opts(Pod, vec![m(0, u32::MAX - 10, 65536)], one()),
                "32-bit id space",
            ),
            (
                NamespaceOption {
                    network: Node as i32,
                    ..opts(Pod, one(), one())
                },
                "host's network namespace",
            ),
            (
                NamespaceOption {
                    pid: Node as i32,
                    ..opts(Pod, one(), one())
                },
                "host's pid namespace",
            ),
        ];
        for (o, want) in cases {
            let err = pod_user_namespace(&pod(Some(o.clone()))).unwrap_err();
            assert!(
                matches!(err, SpecError::InvalidPodConfig { .. }),
                "{o:?}: {err:?}"
            );
            assert!(err.to_string().contains(want), "{o:?}: {err}");
        }
    }

    fn ctr(o: Option<NamespaceOption>, privileged: bool) -> ContainerConfig {
        ContainerConfig {
            linux: Some(LinuxContainerConfig {
                resources: None,
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: o,
                    privileged,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn container_follows_its_pod() {
        use NamespaceMode::*;
        let podns = PodUserNamespace { uids: R, gids: R };
        let same = || {
            Some(opts(
                Pod,
                vec![m(0, 65536, 65536)],
                vec![m(0, 65536, 65536)],
            ))
        };
        assert!(check_container_user_namespace(&ctr(None, false), Some(&podns)).is_ok());
        assert!(check_container_user_namespace(&ctr(same(), false), Some(&podns)).is_ok());
        assert!(
            check_container_user_namespace(&ctr(Some(opts(Node, vec![], vec![])), false), None)
                .is_ok()
        );
        let err = check_container_user_namespace(&ctr(same(), false), None).unwrap_err();
        assert!(
            err.to_string()
                .contains("its pod has the host user namespace"),
            "{err}"
        );
        let other = Some(opts(Pod, vec![m(0, 1000, 10)], vec![m(0, 1000, 10)]));
        assert!(check_container_user_namespace(&ctr(other, false), Some(&podns)).is_err());
        let err = check_container_user_namespace(&ctr(same(), true), Some(&podns)).unwrap_err();
        assert!(err.to_string().contains("privileged"), "{err}");
        let host_pid = Some(NamespaceOption {
            pid: Node as i32,
            ..same().unwrap()
        });
        let err = check_container_user_namespace(&ctr(host_pid, false), Some(&podns)).unwrap_err();
        assert!(err.to_string().contains("namespace_options.pid"), "{err}");
    }

    #[test]
    fn ranges() {
        assert_eq!(R.to_host(0), Some(65536));
        assert_eq!(R.to_host(65535), Some(131071));
        assert_eq!(R.to_host(65536), None);
        assert_eq!(R.map_line(), "0 65536 65536\n");
        assert_eq!("0:65536:65536".parse::<IdRange>().unwrap(), R);
        assert_eq!(R.to_string().parse::<IdRange>().unwrap(), R);
        assert!("0:1".parse::<IdRange>().is_err());
        assert!("0:x:1".parse::<IdRange>().is_err());
    }
}
