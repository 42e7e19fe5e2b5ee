//! Pure translation: CRI config + image config + decision -> OCI runtime
//! spec. No I/O, so it is unit-tested without root.
//!
//! The rules are containerd 1.6/1.7's (pkg/cri), so that a pod behaves the
//! same when a node switches to capcri. The caller reads whatever comes
//! from disk (the image's /etc/passwd and /etc/group, a Localhost seccomp
//! profile) and passes it in.

mod cdi;
pub mod cgroup_v1;
mod devices;
mod error;
pub mod hugetlb;
mod mounts;
mod namespaces;
mod proc_mount;
mod process;
mod resources;
mod seccomp;
mod seccomp_default;
mod user;
mod userns;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{ContainerConfig, LinuxContainerSecurityContext, PodSandboxConfig};
use oci_spec::runtime::{Linux, LinuxCapabilities, Process, Root, Spec, User};

use crate::capabilities::oci::{default_capabilities, requested_capabilities};

pub use cdi::{CDI_ANNOTATION_PREFIX, check_cdi_edits, check_cdi_name, requested_cdi_devices};
#[cfg(test)]
pub(crate) use devices::device_rules;
pub use devices::{
    ContainerDevice, DeviceKind, DeviceOwnership, DeviceRequest, HostDevice, apply_devices,
    check_device_container_path, device_access, device_requests, host_devices_for_privileged,
};
pub use error::SpecError;
pub use mounts::{ContainerMounts, PodFiles, check_mount_destinations, container_mounts};
pub use namespaces::{PodNamespacePaths, add_cgroup_namespace, container_namespaces};
pub use process::{DEFAULT_PATH_ENV, merged_env, process_args, working_dir};
pub use resources::{
    OOM_SCORE_ADJ_RANGE, SANDBOX_OOM_SCORE_ADJ, apply_oom_score_floor, container_resources,
    oom_score_adj, oom_score_adj_within, sysctls,
};
pub use seccomp::{SeccompMode, container_seccomp, seccomp_mode};
pub use seccomp_default::runtime_default_profile;
pub use user::{IdPart, ImageUserDb, ResolvedUser, UserSpec, parse_user_spec, resolve_user};
pub use userns::{IdRange, PodUserNamespace, check_container_user_namespace, pod_user_namespace};

/// The annotation containerd sets so tools can tell app containers from
/// sandboxes.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";

/// containerd's default masked paths (OCI runtime spec defaults, plus
/// /sys/devices/virtual/powercap since CVE-2020-8694 let power readings leak
/// secrets).
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/scsi",
];

/// containerd's default read-only paths.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Everything the spec of one container is made from.
pub struct ContainerSpecInput<'a> {
    pub pod: &'a PodSandboxConfig,
    pub container: &'a ContainerConfig,
    pub image_config: Option<&'a oci_spec::image::Config>,
    pub rootfs: &'a Path,
    pub namespaces: &'a PodNamespacePaths,
    pub pod_files: &'a PodFiles,
    /// Absolute (cgroupfs; libcontainer's cgroup v1 manager rejects
    /// relative paths) or systemd's `slice:prefix:name`.
    pub cgroups_path: String,
    pub users: ImageUserDb<'a>,
    /// The policy's decision; None: containerd's defaults.
    pub capabilities: Option<LinuxCapabilities>,
    /// JSON of the Localhost seccomp profile, read by the caller.
    pub localhost_seccomp_profile: Option<&'a str>,
    /// The pod's user namespace (POD mode); None: the host's.
    pub user_namespace: Option<&'a PodUserNamespace>,
}

/// Rejects capability names the kernel does not know (InvalidArgument):
/// containerd passes them on and runc then fails with a less helpful message.
pub fn validate_capability_names(container: &ContainerConfig) -> Result<(), SpecError> {
    requested_capabilities(container)
        .map(|_| ())
        .map_err(|e| SpecError::invalid(e.field, format!("{}; fix the pod spec", e.source)))
}

pub(crate) fn security_context(
    container: &ContainerConfig,
) -> Option<&LinuxContainerSecurityContext> {
    container.linux.as_ref()?.security_context.as_ref()
}

fn pod_allows_privileged(pod: &PodSandboxConfig) -> bool {
    pod.linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|sc| sc.privileged)
}

/// The OCI runtime spec of a container.
pub fn container_spec(input: &ContainerSpecInput) -> Result<Spec, SpecError> {
    let container = input.container;
    let sc = security_context(container);
    let privileged = sc.is_some_and(|sc| sc.privileged);
    if privileged && !pod_allows_privileged(input.pod) {
        // containerd's rule: a privileged container needs a privileged
        // sandbox, since it shares the sandbox's namespaces.
        return Err(SpecError::invalid(
            "security_context.privileged",
            "no privileged container allowed in a sandbox that is not privileged; set privileged on the pod's security context too",
        ));
    }
    if crate::util::cgroup_paths::cgroup_dir_of(&input.cgroups_path).is_none() {
        return Err(SpecError::invalid(
            "cgroups_path",
            format!(
                "{:?} is neither an absolute cgroup path nor a systemd slice:prefix:name",
                input.cgroups_path
            ),
        ));
    }
    validate_capability_names(container)?;
    check_container_user_namespace(container, input.user_namespace)?;
    if input.user_namespace.is_some() != input.namespaces.user.is_some() {
        return Err(SpecError::invalid(
            "namespace_options.userns_options",
            "the pod's user namespace mappings and its pinned namespace must come together",
        ));
    }

    let hostname = input.pod.hostname.as_str();
    let user = resolve_user(container, input.image_config, &input.users)?;
    let capabilities = input
        .capabilities
        .clone()
        .unwrap_or_else(|| default_capabilities(container));

    let mut oci_user = User::default();
    oci_user.set_uid(user.uid);
    oci_user.set_gid(user.gid);
    oci_user.set_additional_gids(Some(user.additional_gids.clone()));

    let mut process = Process::default();
    process.set_terminal(Some(container.tty));
    process.set_console_size(None);
    process.set_user(oci_user);
    process.set_args(Some(process_args(container, input.image_config)?));
    process.set_env(Some(merged_env(container, input.image_config, hostname)));
    process.set_cwd(PathBuf::from(working_dir(container, input.image_config)));
    process.set_capabilities(Some(capabilities.clone()));
    process.set_rlimits(None);
    // Only ever Some(true): an explicit false next to a seccomp filter
    // makes libcontainer's create fail (see DESIGN.md).
    process.set_no_new_privileges(sc.is_some_and(|sc| sc.no_new_privs).then_some(true));
    process.set_apparmor_profile(None);
    process.set_oom_score_adj(oom_score_adj(container));

    let mut root = Root::default();
    root.set_path(input.rootfs.to_path_buf());
    root.set_readonly(Some(sc.is_some_and(|sc| sc.readonly_rootfs)));

    let mounts = container_mounts(container, input.pod_files)?;
    let bounding = capabilities.bounding().clone().unwrap_or_default();

    let mut linux = Linux::default();
    linux.set_namespaces(Some(container_namespaces(container, input.namespaces)?));
    linux.set_resources(Some(container_resources(container)?));
    linux.set_cgroups_path(Some(PathBuf::from(&input.cgroups_path)));
    let sysctl = sysctls(input.pod);
    linux.set_sysctl((!sysctl.is_empty()).then_some(sysctl));
    linux.set_seccomp(container_seccomp(
        container,
        &bounding,
        input.localhost_seccomp_profile,
    )?);
    linux.set_rootfs_propagation(mounts.rootfs_propagation.clone());
    linux.set_devices(None);
    let (uid_mappings, gid_mappings) = match input.user_namespace {
        Some(u) => {
            let (uids, gids) = u.oci_mappings()?;
            (Some(vec![uids]), Some(vec![gids]))
        }
        None => (None, None),
    };
    linux.set_uid_mappings(uid_mappings);
    linux.set_gid_mappings(gid_mappings);
    let (masked, readonly) =
        proc_mount::masked_and_readonly_paths(sc, privileged, input.user_namespace.is_some())?;
    linux.set_masked_paths(Some(masked));
    linux.set_readonly_paths(Some(readonly));

    let mut annotations: HashMap<String, String> =
        container.annotations.clone().into_iter().collect();
    annotations.insert(
        CONTAINER_TYPE_ANNOTATION.to_string(),
        "container".to_string(),
    );

    let mut spec = Spec::default();
    spec.set_version("1.0.2-dev".to_string());
    spec.set_root(Some(root));
    spec.set_mounts(Some(mounts.mounts));
    spec.set_process(Some(process));
    // The UTS namespace is the pod's, whose hostname the sandbox set.
    spec.set_hostname(None);
    spec.set_annotations(Some(annotations));
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// The process of an exec into a running container: the container's user,
/// environment, working directory, capabilities and no_new_privileges with
/// other args. Without this, libcontainer's tenant builder runs as uid 0.
pub fn exec_process(container_spec: &Spec, args: Vec<String>) -> Result<Process, SpecError> {
    let base = container_spec.process().as_ref().ok_or_else(|| {
        SpecError::invalid(
            "process",
            "the container's spec has no process to base the exec on; recreate the container",
        )
    })?;
    if args.is_empty() {
        return Err(SpecError::invalid(
            "cmd",
            "an exec needs a command; give at least the program to run",
        ));
    }
    let mut process = Process::default();
    process.set_terminal(Some(false));
    process.set_console_size(None);
    process.set_user(base.user().clone());
    process.set_args(Some(args));
    process.set_env(base.env().clone());
    process.set_cwd(base.cwd().clone());
    process.set_capabilities(base.capabilities().clone());
    process.set_rlimits(base.rlimits().clone());
    process.set_no_new_privileges(base.no_new_privileges());
    process.set_apparmor_profile(None);
    process.set_oom_score_adj(base.oom_score_adj());
    Ok(process)
}
