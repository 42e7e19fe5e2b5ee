//! Helpers behind `capcri policy check` and `capcri policy eval`; the clap
//! CLI calls them and maps `ok`/errors to exit codes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use serde::Deserialize;

use super::error::PolicyError;
use super::explain::{render_json, render_table};
use super::facts::{Facts, ImageFacts, NodeFacts, ResolvedIdentity};
use super::load::{DEFAULT_POLICY_DIR, PolicySet, read_sources};
use super::preflight::MemoryRootfs;

/// `capcri policy check [FILES|DIR]...`: compiles every file and reports
/// each error as `file:line:column: ...`. `ok` is false on any error.
pub fn cli_check(paths: &[PathBuf]) -> (String, bool) {
    let (sources, mut errors) = read_sources(paths);
    let (set, mut more) = PolicySet::from_sources(&sources);
    errors.append(&mut more);
    let mut report = String::new();
    for e in &errors {
        report.push_str(&e.to_string());
        report.push('\n');
    }
    if errors.is_empty() {
        report.push_str(&format!(
            "{} file(s), {} policies OK: {}\n",
            sources.len(),
            set.policy_names().len(),
            set.policy_names().join(", ")
        ));
    } else {
        report.push_str(&format!("{} error(s)\n", errors.len()));
    }
    (report, errors.is_empty())
}

// The subset of crictl's pod-config.json / container-config.json that the
// facts need. k8s-cri's own serde derives require every field, which
// crictl files never have.

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PodJson {
    metadata: MetaJson,
    labels: HashMap<String, String>,
    annotations: HashMap<String, String>,
    linux: Option<PodLinuxJson>,
    /// Not in the CRI config; accepted here for convenience.
    runtime_handler: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MetaJson {
    name: String,
    namespace: String,
    uid: String,
    attempt: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PodLinuxJson {
    security_context: Option<PodSecurityJson>,
    sysctls: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PodSecurityJson {
    namespace_options: Option<NamespaceJson>,
    run_as_user: Option<Int64Json>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NamespaceJson {
    network: i32,
    pid: i32,
    ipc: i32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Int64Json {
    value: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ContainerJson {
    metadata: MetaJson,
    command: Vec<String>,
    args: Vec<String>,
    working_dir: String,
    envs: Vec<KeyValueJson>,
    linux: Option<ContainerLinuxJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct KeyValueJson {
    key: String,
    value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ContainerLinuxJson {
    security_context: Option<ContainerSecurityJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ContainerSecurityJson {
    capabilities: Option<CapabilityJson>,
    privileged: bool,
    run_as_user: Option<Int64Json>,
    run_as_group: Option<Int64Json>,
    readonly_rootfs: bool,
    no_new_privs: bool,
    seccomp: Option<SecurityProfileJson>,
    namespace_options: Option<NamespaceJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CapabilityJson {
    add_capabilities: Vec<String>,
    drop_capabilities: Vec<String>,
    add_ambient_capabilities: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SecurityProfileJson {
    /// crictl writes the enum as a number; accept its name too.
    profile_type: serde_json::Value,
    localhost_ref: String,
}

fn profile_type(v: &serde_json::Value) -> i32 {
    match v {
        serde_json::Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()).unwrap_or(0),
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("unconfined") => 1,
        serde_json::Value::String(s) if s.eq_ignore_ascii_case("localhost") => 2,
        _ => 0,
    }
}

fn ns(n: &NamespaceJson) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: n.network,
        pid: n.pid,
        ipc: n.ipc,
        ..Default::default()
    }
}

fn pod_config(p: &PodJson) -> cri::PodSandboxConfig {
    let sc = p.linux.as_ref().and_then(|l| l.security_context.as_ref());
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: p.metadata.name.clone(),
            namespace: p.metadata.namespace.clone(),
            uid: p.metadata.uid.clone(),
            attempt: p.metadata.attempt,
        }),
        labels: p.labels.clone(),
        annotations: p.annotations.clone(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: sc.and_then(|s| s.namespace_options.as_ref()).map(ns),
                ..Default::default()
            }),
            sysctls: p
                .linux
                .as_ref()
                .map(|l| l.sysctls.clone())
                .unwrap_or_default(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(c: &ContainerJson) -> cri::ContainerConfig {
    let sc = c.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let security_context = sc.map(|s| cri::LinuxContainerSecurityContext {
        capabilities: s.capabilities.as_ref().map(|caps| cri::Capability {
            add_capabilities: caps.add_capabilities.clone(),
            drop_capabilities: caps.drop_capabilities.clone(),
            add_ambient_capabilities: caps.add_ambient_capabilities.clone(),
        }),
        privileged: s.privileged,
        run_as_user: s
            .run_as_user
            .as_ref()
            .map(|v| cri::Int64Value { value: v.value }),
        run_as_group: s
            .run_as_group
            .as_ref()
            .map(|v| cri::Int64Value { value: v.value }),
        readonly_rootfs: s.readonly_rootfs,
        no_new_privs: s.no_new_privs,
        seccomp: s.seccomp.as_ref().map(|p| cri::SecurityProfile {
            profile_type: profile_type(&p.profile_type),
            localhost_ref: p.localhost_ref.clone(),
        }),
        namespace_options: s.namespace_options.as_ref().map(ns),
        ..Default::default()
    });
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.metadata.name.clone(),
            attempt: c.metadata.attempt,
        }),
        command: c.command.clone(),
        args: c.args.clone(),
        working_dir: c.working_dir.clone(),
        envs: c
            .envs
            .iter()
            .map(|kv| cri::KeyValue {
                key: kv.key.clone(),
                value: kv.value.clone(),
            })
            .collect(),
        linux: Some(cri::LinuxContainerConfig {
            security_context,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `capcri policy eval --pod POD.json --container CTR.json`: evaluates the
/// policies of `policy_dir` (default [`DEFAULT_POLICY_DIR`]; a directory
/// with any invalid file is an error) for crictl-style configs. The uid is
/// `run_as_user` of the container, else of the pod, else 0 (no image
/// passwd lookup here). The rootfs view knows only the image's file-caps
/// index.
pub fn cli_eval(
    policy_dir: Option<&Path>,
    pod_json: &str,
    container_json: &str,
    image: Option<ImageFacts>,
    output_json: bool,
) -> Result<String, PolicyError> {
    let dir = policy_dir.unwrap_or(Path::new(DEFAULT_POLICY_DIR));
    let set = PolicySet::load_dir_strict(dir).map_err(|errors| PolicyError::Load {
        dir: dir.to_path_buf(),
        report: errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    })?;
    let pod: PodJson = serde_json::from_str(pod_json).map_err(PolicyError::PodJson)?;
    let ctr: ContainerJson =
        serde_json::from_str(container_json).map_err(PolicyError::ContainerJson)?;
    let csc = ctr.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let psc = pod.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let uid = csc
        .and_then(|s| s.run_as_user.as_ref())
        .or_else(|| psc.and_then(|s| s.run_as_user.as_ref()))
        .map(|v| v.value)
        .unwrap_or(0);
    let gid = csc
        .and_then(|s| s.run_as_group.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    let identity = ResolvedIdentity {
        uid: u32::try_from(uid).unwrap_or(u32::MAX),
        gid: u32::try_from(gid).unwrap_or(u32::MAX),
    };
    let image = image.unwrap_or_default();
    let rootfs = MemoryRootfs::from_file_caps(&image.file_caps);
    let facts = Facts::from_cri(
        &pod_config(&pod),
        &container_config(&ctr),
        image,
        NodeFacts::default(),
        identity,
        &pod.runtime_handler,
    );
    facts.container.capabilities.lists()?;
    let mut decision = set.evaluate(&facts, &rootfs);
    decision.sysctls = set.evaluate_pod(&facts.pod, &facts.node).sysctls;
    if output_json {
        Ok(render_json(&decision)?)
    } else {
        Ok(render_table(&decision))
    }
}
