//! The CRI calls the bench times, through the `k8s-cri` client over a unix
//! socket, exactly as kubelet would send them.

use super::BenchError;
use super::stats::Op;
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

/// A container that runs until SIGTERM and then exits at once: without the
/// trap, `sh` as pid 1 ignores SIGTERM and StopContainer would time the
/// grace period instead of the runtime.
pub const CONTAINER_COMMAND: [&str; 3] = ["sh", "-c", "trap \"exit 0\" TERM; sleep 3600 & wait"];

/// Connects to a CRI endpoint; the URI is a placeholder that tonic needs.
pub async fn connect(socket: &Path) -> Result<Channel, BenchError> {
    let path = socket.to_path_buf();
    let shown = socket.display().to_string();
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .map_err(|source| BenchError::Connect {
            socket: shown,
            source,
        })
}

/// One runtime as the workload sees it.
#[derive(Clone)]
pub struct Target {
    pub name: &'static str,
    pub channel: Channel,
    /// The CRI socket `channel` is connected to: `--scale` samples through
    /// a connection of its own (`scale::sample`).
    pub socket: PathBuf,
    /// `linux.cgroup_parent` of the pods: containerd puts them there (and the
    /// bench removes it); capcri uses its own `--cgroup-parent`.
    pub pod_cgroup_parent: String,
    pub log_root: PathBuf,
    /// `shareProcessNamespace: true` pods (one PID namespace per pod).
    pub share_pid: bool,
}

impl Target {
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }
    pub fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
    }

    fn rpc_err(&self, op: &'static str, object: &str) -> impl FnOnce(tonic::Status) -> BenchError {
        let runtime = self.name;
        let object = object.to_string();
        move |status| BenchError::Rpc {
            runtime,
            op,
            object,
            status,
        }
    }

    /// The version string the runtime reports (also the readiness probe).
    pub async fn version(&self) -> Result<String, BenchError> {
        let v = self
            .runtime()
            .version(cri::VersionRequest::default())
            .await
            .map_err(self.rpc_err("Version", "runtime"))?
            .into_inner();
        Ok(format!("{} {}", v.runtime_name, v.runtime_version))
    }

    /// RuntimeReady true, and NetworkReady too when `need_network`:
    /// containerd reports it once its CNI config is loaded (capcri reads
    /// its CNI config at RunPodSandbox, so only its runtime is waited for).
    /// Err carries the conditions not met, for the not-ready error.
    pub async fn ready(&self, need_network: bool) -> Result<Result<(), String>, BenchError> {
        let s = self
            .runtime()
            .status(cri::StatusRequest { verbose: false })
            .await
            .map_err(self.rpc_err("Status", "runtime"))?
            .into_inner();
        let unmet: Vec<String> = s
            .status
            .map(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            // containerd 2 adds conditions of its own (deprecation
            // warnings): only the CRI's two count.
            .filter(|c| {
                !c.status
                    && (c.r#type == "RuntimeReady" || (c.r#type == "NetworkReady" && need_network))
            })
            .map(|c| format!("{} false: {} {}", c.r#type, c.reason, c.message))
            .collect();
        Ok(if unmet.is_empty() {
            Ok(())
        } else {
            Err(unmet.join("; "))
        })
    }

    pub async fn remove_image(&self, image: &str) -> Result<(), BenchError> {
        let req = cri::RemoveImageRequest {
            image: Some(image_spec(image)),
        };
        match self.images().remove_image(req).await {
            Ok(_) => Ok(()),
            // The CRI asks RemoveImage to be idempotent; accept an older
            // runtime's NotFound too.
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(self.rpc_err("RemoveImage", image)(s)),
        }
    }

    /// PullImage; returns its duration.
    pub async fn pull(&self, image: &str) -> Result<Duration, BenchError> {
        let t = Instant::now();
        self.images()
            .pull_image(cri::PullImageRequest {
                image: Some(image_spec(image)),
                ..Default::default()
            })
            .await
            .map_err(self.rpc_err("PullImage", image))?;
        Ok(t.elapsed())
    }

    /// A cold pull: the image is removed first (untimed).
    pub async fn pull_cold(&self, image: &str) -> Result<Duration, BenchError> {
        self.remove_image(image).await?;
        self.pull(image).await
    }

    fn pod_config(&self, name: &str) -> Result<cri::PodSandboxConfig, BenchError> {
        let log_dir = self.log_root.join(name);
        std::fs::create_dir_all(&log_dir).map_err(|source| BenchError::Io {
            what: format!("create the pod log directory {}", log_dir.display()),
            source,
        })?;
        Ok(cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "bench".into(),
                attempt: 0,
            }),
            hostname: name.chars().take(63).collect(),
            log_directory: log_dir.display().to_string(),
            labels: HashMap::from([("bench".into(), "capcri".into())]),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.pod_cgroup_parent.clone(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(self.namespace_options()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// The namespaces kubelet asks for (its `namespacesForPod`): the pod's
    /// network and IPC, and a PID namespace per container unless the pod
    /// sets `shareProcessNamespace`. The protobuf default (all zero) would
    /// mean a shared PID namespace, which kubelet never sends unasked.
    fn namespace_options(&self) -> cri::NamespaceOption {
        let pid = if self.share_pid {
            cri::NamespaceMode::Pod
        } else {
            cri::NamespaceMode::Container
        };
        cri::NamespaceOption {
            network: cri::NamespaceMode::Pod as i32,
            pid: pid as i32,
            ipc: cri::NamespaceMode::Pod as i32,
            ..Default::default()
        }
    }

    fn container_config(&self, image: &str, ctr_name: &str) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: ctr_name.into(),
                attempt: 0,
            }),
            image: Some(image_spec(image)),
            command: CONTAINER_COMMAND.iter().map(|s| s.to_string()).collect(),
            log_path: "c.log".into(),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(self.namespace_options()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox, CreateContainer, StartContainer, then ContainerStatus
    /// until running. Records the three calls and pod-to-running; returns
    /// the pod and container ids.
    pub async fn start_pod(
        &self,
        name: &str,
        image: &str,
        ctr_name: &str,
        out: &mut Vec<(Op, Duration)>,
    ) -> Result<(String, String), BenchError> {
        let pod_config = self.pod_config(name)?;
        let mut rt = self.runtime();
        let t0 = Instant::now();
        let pod_id = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod_config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(self.rpc_err("RunPodSandbox", name))?
            .into_inner()
            .pod_sandbox_id;
        out.push((Op::RunPodSandbox, t0.elapsed()));

        let t = Instant::now();
        let ctr_id = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(self.container_config(image, ctr_name)),
                sandbox_config: Some(pod_config),
            })
            .await
            .map_err(self.rpc_err("CreateContainer", name))?
            .into_inner()
            .container_id;
        let created = t.elapsed();
        out.push((Op::CreateContainer, created));

        let t = Instant::now();
        rt.start_container(cri::StartContainerRequest {
            container_id: ctr_id.clone(),
        })
        .await
        .map_err(self.rpc_err("StartContainer", &ctr_id))?;
        let started = t.elapsed();
        out.push((Op::StartContainer, started));
        out.push((Op::CreateAndStart, created + started));

        // What kubelet's PLEG would see: the first status saying running.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = rt
                .container_status(cri::ContainerStatusRequest {
                    container_id: ctr_id.clone(),
                    verbose: false,
                })
                .await
                .map_err(self.rpc_err("ContainerStatus", &ctr_id))?
                .into_inner()
                .status
                .map(|s| s.state);
            if st == Some(cri::ContainerState::ContainerRunning as i32) {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::NeverRunning {
                    runtime: self.name,
                    container: ctr_id,
                });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        out.push((Op::PodToRunning, t0.elapsed()));
        Ok((pod_id, ctr_id))
    }

    /// StopPodSandbox then RemovePodSandbox, timed.
    pub async fn remove_pod(
        &self,
        pod_id: &str,
        out: &mut Vec<(Op, Duration)>,
    ) -> Result<(), BenchError> {
        let mut rt = self.runtime();
        let t = Instant::now();
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod_id.into(),
        })
        .await
        .map_err(self.rpc_err("StopPodSandbox", pod_id))?;
        out.push((Op::StopPodSandbox, t.elapsed()));
        let t = Instant::now();
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.into(),
        })
        .await
        .map_err(self.rpc_err("RemovePodSandbox", pod_id))?;
        out.push((Op::RemovePodSandbox, t.elapsed()));
        Ok(())
    }

    /// One pod's whole life, every call timed in order; the pod is removed
    /// (best effort) when a call fails half-way.
    pub async fn pod_cycle(
        &self,
        name: &str,
        image: &str,
        out: &mut Vec<(Op, Duration)>,
        creating: Option<&AtomicUsize>,
    ) -> Result<(), BenchError> {
        self.pod_cycle_of(name, image, "c", out, creating).await
    }

    /// [`Self::pod_cycle`] with the container's name (policies match on
    /// it); `creating` counts the pods between RunPodSandbox and running.
    pub async fn pod_cycle_of(
        &self,
        name: &str,
        image: &str,
        ctr_name: &str,
        out: &mut Vec<(Op, Duration)>,
        creating: Option<&AtomicUsize>,
    ) -> Result<(), BenchError> {
        if let Some(c) = creating {
            c.fetch_add(1, Ordering::SeqCst);
        }
        let started = self.start_pod(name, image, ctr_name, out).await;
        if let Some(c) = creating {
            c.fetch_sub(1, Ordering::SeqCst);
        }
        let (pod_id, ctr_id) = started?;
        let res = self.container_ops(&ctr_id, out).await;
        if res.is_err() {
            let _ = self.remove_pod(&pod_id, &mut Vec::new()).await;
            return res;
        }
        self.remove_pod(&pod_id, out).await
    }

    async fn container_ops(
        &self,
        ctr_id: &str,
        out: &mut Vec<(Op, Duration)>,
    ) -> Result<(), BenchError> {
        let mut rt = self.runtime();
        let t = Instant::now();
        let r = rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: ctr_id.into(),
                cmd: vec!["true".into()],
                timeout: 10,
            })
            .await
            .map_err(self.rpc_err("ExecSync", ctr_id))?
            .into_inner();
        out.push((Op::ExecSync, t.elapsed()));
        if r.exit_code != 0 {
            return Err(BenchError::ExecFailed {
                runtime: self.name,
                container: ctr_id.into(),
                exit_code: r.exit_code,
                stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
            });
        }
        let t = Instant::now();
        rt.stop_container(cri::StopContainerRequest {
            container_id: ctr_id.into(),
            timeout: 10,
        })
        .await
        .map_err(self.rpc_err("StopContainer", ctr_id))?;
        out.push((Op::StopContainer, t.elapsed()));
        let t = Instant::now();
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: ctr_id.into(),
        })
        .await
        .map_err(self.rpc_err("RemoveContainer", ctr_id))?;
        out.push((Op::RemoveContainer, t.elapsed()));
        Ok(())
    }

    /// Until `stop`, every 5 ms while a pod is being created (`creating`
    /// is not zero): ListPodSandbox and ListContainers, then
    /// PodSandboxStatus and ContainerStatus of a listed object, each timed.
    /// What kubelet's PLEG and status manager send while pods start; a
    /// daemon whose workers block on one call's file system work shows
    /// here. Failed calls (an object removed meanwhile) are not samples.
    pub async fn probe_while_creating(
        &self,
        creating: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
    ) -> Vec<(Op, Duration)> {
        let mut out = Vec::new();
        let mut rt = self.runtime();
        while !stop.load(Ordering::SeqCst) {
            if creating.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            let t = Instant::now();
            let pods = rt
                .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
                .await;
            let pods_took = t.elapsed();
            let t = Instant::now();
            let ctrs = rt
                .list_containers(cri::ListContainersRequest { filter: None })
                .await;
            let ctrs_took = t.elapsed();
            let (Ok(pods), Ok(ctrs)) = (pods, ctrs) else {
                continue;
            };
            out.push((Op::ListWhileCreating, pods_took));
            out.push((Op::ListWhileCreating, ctrs_took));
            if let Some(p) = pods.into_inner().items.last() {
                let t = Instant::now();
                let r = rt
                    .pod_sandbox_status(cri::PodSandboxStatusRequest {
                        pod_sandbox_id: p.id.clone(),
                        verbose: false,
                    })
                    .await;
                if r.is_ok() {
                    out.push((Op::StatusWhileCreating, t.elapsed()));
                }
            }
            if let Some(c) = ctrs.into_inner().containers.last() {
                let t = Instant::now();
                let r = rt
                    .container_status(cri::ContainerStatusRequest {
                        container_id: c.id.clone(),
                        verbose: false,
                    })
                    .await;
                if r.is_ok() {
                    out.push((Op::StatusWhileCreating, t.elapsed()));
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        out
    }

    /// Stops and removes every pod the runtime lists (leftovers of a failed
    /// run), ignoring errors: the workspace cleanup follows anyway.
    pub async fn remove_all_pods(&self) {
        let Ok(list) = self
            .runtime()
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await
        else {
            return;
        };
        for pod in list.into_inner().items {
            let _ = self.remove_pod(&pod.id, &mut Vec::new()).await;
        }
    }
}

fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    }
}
