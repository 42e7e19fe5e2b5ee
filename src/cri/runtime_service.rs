//! runtime.v1 RuntimeService: each handler validates, calls one domain
//! function and maps the result.

use super::{CRI_API_VERSION, RUNTIME_NAME, convert, list_wire, stats_wire, to_status};
use crate::container::ContainerRecord;
use crate::error::NodeError;
use crate::image::ImageStore;
use crate::node::Node;
use crate::state::ContainerOp;
use crate::stream::{StreamError, StreamServer};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};
use tracing::{Instrument, info_span};

pub struct CriRuntimeService {
    node: Arc<Node>,
    streams: Option<StreamServer>,
    container_list: super::list_cache::ContainerListCache,
    pod_list: super::list_cache::PodListCache,
}

impl CriRuntimeService {
    pub fn new(node: Arc<Node>) -> Self {
        CriRuntimeService {
            node,
            streams: None,
            container_list: Default::default(),
            pod_list: Default::default(),
        }
    }

    /// Exec, Attach and PortForward answer with URLs on `streams`.
    pub fn with_stream_server(mut self, streams: StreamServer) -> Self {
        self.streams = Some(streams);
        self
    }

    fn streams(&self, rpc: &str) -> Result<&StreamServer, Status> {
        self.streams.as_ref().ok_or_else(|| unimplemented(rpc))
    }

    /// ListPodSandbox's answer, encoded (`list_wire`), oldest pod first.
    pub(super) fn list_pod_sandbox_encoded(
        &self,
        filter: Option<&cri::PodSandboxFilter>,
    ) -> bytes::Bytes {
        let all = super::list_cache::lets_every_pod_through(filter);
        let before = self.node.pod_list_version();
        if all && let Some(kept) = self.pod_list.get(before) {
            let _span = info_span!("ListPodSandbox", kept = true).entered();
            return kept;
        }
        let _span = info_span!("ListPodSandbox").entered();
        let mut out = Vec::new();
        self.node
            .map_pod_sandboxes(filter, |p| list_wire::put_pod_sandbox(&mut out, p));
        let answer = bytes::Bytes::from(out);
        if all && self.node.pod_list_version() == before {
            self.pod_list.put(before, answer.clone());
        }
        answer
    }

    /// ListContainers' answer, encoded (`list_wire`), oldest container
    /// first.
    pub(super) async fn list_containers_encoded(
        &self,
        filter: Option<&cri::ContainerFilter>,
    ) -> Result<bytes::Bytes, NodeError> {
        let all = super::list_cache::lets_all_through(filter);
        let before = self.node.container_list_version();
        if all && let Some(kept) = self.container_list.get(before) {
            let _span = info_span!("ListContainers", kept = true).entered();
            return Ok(kept);
        }
        let images = self.node.images();
        // The containers of a node share a few images: the image field
        // (its reported name worked out with references parsed and the
        // store locked, then encoded) is made once per distinct image,
        // found again by its key (`list_wire::image_key`, kept with the
        // record).
        let mut specs: Vec<ImageField> = Vec::new();
        let mut items = Vec::new();
        let (order, settled) = self
            .node
            .map_containers_settled(filter, |c| {
                let key = list_wire::image_key(c);
                let known = specs.iter().position(|s| s.key == key);
                let i = known.unwrap_or_else(|| {
                    specs.push(ImageField::new(c, images));
                    specs.len() - 1
                });
                let start = items.len();
                list_wire::put_container(&mut items, c, &specs[i].encoded);
                start..items.len()
            })
            .instrument(info_span!("ListContainers"))
            .await?;
        let answer = bytes::Bytes::from(list_wire::concat_items(&items, order));
        if all && settled && self.node.container_list_version() == before {
            self.container_list.put(before, answer.clone());
        }
        Ok(answer)
    }

    /// ContainerStats' answer, encoded (`stats_wire`).
    pub(super) async fn container_stats_encoded(&self, id: &str) -> Result<Vec<u8>, Status> {
        require_id(id, "container")?;
        let usage = self
            .node
            .container_stats(id)
            .instrument(info_span!("ContainerStats", container.id = %id))
            .await
            .map_err(to_status)?;
        Ok(stats_wire::container_stats(&usage))
    }

    /// ListContainerStats' answer, encoded (`stats_wire`).
    pub(super) async fn list_container_stats_encoded(
        &self,
        filter: Option<&cri::ContainerStatsFilter>,
    ) -> Vec<u8> {
        let span = info_span!("ListContainerStats");
        let usage = self
            .node
            .list_container_stats(filter)
            .instrument(span.clone())
            .await;
        let _span = span.entered();
        stats_wire::list_container_stats(&usage)
    }

    /// PodSandboxStats' answer, encoded (`stats_wire`).
    pub(super) async fn pod_sandbox_stats_encoded(&self, id: &str) -> Result<Vec<u8>, Status> {
        require_id(id, "pod sandbox")?;
        let usage = self
            .node
            .pod_sandbox_stats(id)
            .instrument(info_span!("PodSandboxStats", pod.id = %id))
            .await
            .map_err(to_status)?;
        Ok(stats_wire::pod_sandbox_stats(&usage))
    }

    /// ListPodSandboxStats' answer, encoded (`stats_wire`).
    pub(super) async fn list_pod_sandbox_stats_encoded(
        &self,
        filter: Option<&cri::PodSandboxStatsFilter>,
    ) -> Vec<u8> {
        let span = info_span!("ListPodSandboxStats");
        let usage = self
            .node
            .list_pod_sandbox_stats(filter)
            .instrument(span.clone())
            .await;
        let _span = span.entered();
        stats_wire::list_pod_sandbox_stats(&usage)
    }
}

/// The encoded `Container.image` of the containers with the same
/// `list_wire::image_key`.
struct ImageField {
    key: u64,
    encoded: Vec<u8>,
}

impl ImageField {
    fn new(c: &ContainerRecord, images: &ImageStore) -> Self {
        let name = images.reported_name(&c.image_id, &c.asked_image());
        ImageField {
            key: list_wire::image_key(c),
            encoded: list_wire::image_spec(c, &name),
        }
    }
}

/// A message of the bytes `list_wire` or `stats_wire` wrote.
fn decoded<M: prost::Message + Default>(bytes: &[u8]) -> Result<Response<M>, Status> {
    M::decode(bytes)
        .map(Response::new)
        .map_err(|e| Status::internal(format!("capcri wrote an answer it cannot read back: {e}")))
}

fn stream_status(e: StreamError) -> Status {
    match e {
        StreamError::InvalidRequest { .. } => Status::invalid_argument(e.to_string()),
        StreamError::TooManyInFlight => Status::resource_exhausted(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

type R<T> = Result<Response<T>, Status>;

fn unimplemented(rpc: &str) -> Status {
    Status::unimplemented(format!("capcri does not implement {rpc} yet"))
}

fn require_id(id: &str, what: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{what} id is empty: pass the id returned when it was created"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl RuntimeService for CriRuntimeService {
    async fn version(&self, _r: Request<cri::VersionRequest>) -> R<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_API_VERSION.into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<cri::RunPodSandboxRequest>,
    ) -> R<cri::RunPodSandboxResponse> {
        let req = r.into_inner();
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("RunPodSandbox needs a config"))?;
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let span = info_span!("RunPodSandbox", pod.name = %name, pod.id = tracing::field::Empty);
        let id = self
            .node
            .run_pod_sandbox(config, req.runtime_handler)
            .instrument(span.clone())
            .await
            .map_err(to_status)?;
        span.record("pod.id", id.as_str());
        crate::malloc_tuning::trim_when_idle();
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<cri::StopPodSandboxRequest>,
    ) -> R<cri::StopPodSandboxResponse> {
        let id = r.into_inner().pod_sandbox_id;
        require_id(&id, "pod sandbox")?;
        self.node
            .stop_pod_sandbox(&id)
            .instrument(info_span!("StopPodSandbox", pod.id = %id))
            .await
            .map_err(to_status)?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<cri::RemovePodSandboxRequest>,
    ) -> R<cri::RemovePodSandboxResponse> {
        let id = r.into_inner().pod_sandbox_id;
        require_id(&id, "pod sandbox")?;
        self.node
            .remove_pod_sandbox(&id)
            .instrument(info_span!("RemovePodSandbox", pod.id = %id))
            .await
            .map_err(to_status)?;
        crate::malloc_tuning::trim_when_idle();
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<cri::PodSandboxStatusRequest>,
    ) -> R<cri::PodSandboxStatusResponse> {
        let req = r.into_inner();
        let _span = info_span!("PodSandboxStatus", pod.id = %req.pod_sandbox_id).entered();
        require_id(&req.pod_sandbox_id, "pod sandbox")?;
        let (status, info) = self
            .node
            .map_pod(&req.pod_sandbox_id, |pod| {
                let mut info = std::collections::HashMap::new();
                if req.verbose {
                    let value = serde_json::json!({ "pid": 0, "config": pod.config, "podDir": pod.pod_dir, "runtimeHandler": pod.runtime_handler, "networkPolicy": pod.network_policy });
                    info.insert("info".to_string(), value.to_string());
                }
                (convert::pod_sandbox_status(pod), info)
            })
            .map_err(to_status)?;
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses: Vec::new(),
            timestamp: 0,
        }))
    }

    /// Served by `list_routes` from [`Self::list_pod_sandbox_encoded`];
    /// this decodes the same bytes for a caller of the trait.
    async fn list_pod_sandbox(
        &self,
        r: Request<cri::ListPodSandboxRequest>,
    ) -> R<cri::ListPodSandboxResponse> {
        let bytes = self.list_pod_sandbox_encoded(r.into_inner().filter.as_ref());
        decoded(&bytes)
    }

    async fn create_container(
        &self,
        r: Request<cri::CreateContainerRequest>,
    ) -> R<cri::CreateContainerResponse> {
        let req = r.into_inner();
        require_id(&req.pod_sandbox_id, "pod sandbox")?;
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("CreateContainer needs a container config"))?;
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let span = info_span!("CreateContainer", pod.id = %req.pod_sandbox_id, container.name = %name, container.id = tracing::field::Empty);
        let id = self
            .node
            .create_container(&req.pod_sandbox_id, config, req.sandbox_config)
            .instrument(span.clone())
            .await
            .map_err(to_status)?;
        span.record("container.id", id.as_str());
        crate::malloc_tuning::trim_when_idle();
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        r: Request<cri::StartContainerRequest>,
    ) -> R<cri::StartContainerResponse> {
        let id = r.into_inner().container_id;
        require_id(&id, "container")?;
        self.node
            .start_container(&id)
            .instrument(info_span!("StartContainer", container.id = %id))
            .await
            .map_err(to_status)?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        r: Request<cri::StopContainerRequest>,
    ) -> R<cri::StopContainerResponse> {
        let req = r.into_inner();
        require_id(&req.container_id, "container")?;
        let timeout = Duration::from_secs(req.timeout.max(0) as u64);
        self.node
            .stop_container(&req.container_id, timeout)
            .instrument(info_span!("StopContainer", container.id = %req.container_id))
            .await
            .map_err(to_status)?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        r: Request<cri::RemoveContainerRequest>,
    ) -> R<cri::RemoveContainerResponse> {
        let id = r.into_inner().container_id;
        require_id(&id, "container")?;
        self.node
            .remove_container(&id)
            .instrument(info_span!("RemoveContainer", container.id = %id))
            .await
            .map_err(to_status)?;
        crate::malloc_tuning::trim_when_idle();
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    /// Served by `list_routes` from [`Self::list_containers_encoded`];
    /// this decodes the same bytes for a caller of the trait.
    async fn list_containers(
        &self,
        r: Request<cri::ListContainersRequest>,
    ) -> R<cri::ListContainersResponse> {
        let filter = r.into_inner().filter;
        let bytes = self
            .list_containers_encoded(filter.as_ref())
            .await
            .map_err(to_status)?;
        decoded(&bytes)
    }

    async fn container_status(
        &self,
        r: Request<cri::ContainerStatusRequest>,
    ) -> R<cri::ContainerStatusResponse> {
        let req = r.into_inner();
        require_id(&req.container_id, "container")?;
        let images = self.node.images();
        let (status, info) = self
            .node
            .map_container_status(&req.container_id, |record| {
                let mut info = std::collections::HashMap::new();
                if req.verbose {
                    let value = serde_json::json!({
                        "pid": record.pid,
                        "sandboxID": record.pod_id,
                        "bundle": record.bundle,
                        "config": record.config,
                        "capabilityDecision": record.decision,
                    });
                    info.insert("info".to_string(), value.to_string());
                }
                let image = images.reported_name(&record.image_id, &record.asked_image());
                (convert::container_status(record, &image), info)
            })
            .instrument(info_span!("ContainerStatus", container.id = %req.container_id))
            .await
            .map_err(to_status)?;
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(status),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        r: Request<cri::UpdateContainerResourcesRequest>,
    ) -> R<cri::UpdateContainerResourcesResponse> {
        let req = r.into_inner();
        require_id(&req.container_id, "container")?;
        let resources = req.linux.ok_or_else(|| {
            Status::invalid_argument("UpdateContainerResources needs linux resources")
        })?;
        self.node
            .update_container_resources(&req.container_id, &resources)
            .instrument(info_span!("UpdateContainerResources", container.id = %req.container_id))
            .await
            .map_err(to_status)?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        r: Request<cri::ReopenContainerLogRequest>,
    ) -> R<cri::ReopenContainerLogResponse> {
        let id = r.into_inner().container_id;
        require_id(&id, "container")?;
        self.node
            .reopen_container_log(&id)
            .instrument(info_span!("ReopenContainerLog", container.id = %id))
            .await
            .map_err(to_status)?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, r: Request<cri::ExecSyncRequest>) -> R<cri::ExecSyncResponse> {
        let req = r.into_inner();
        require_id(&req.container_id, "container")?;
        let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64));
        let out = self
            .node
            .exec_sync(&req.container_id, req.cmd, timeout)
            .instrument(info_span!("ExecSync", container.id = %req.container_id))
            .await
            .map_err(to_status)?;
        if out.timed_out {
            return Err(Status::deadline_exceeded(format!(
                "command in container {} timed out after {}s and was killed",
                req.container_id, req.timeout
            )));
        }
        Ok(Response::new(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }

    async fn exec(&self, r: Request<cri::ExecRequest>) -> R<cri::ExecResponse> {
        let streams = self.streams("Exec")?;
        let req = r.into_inner();
        self.node
            .running_container(&req.container_id, ContainerOp::Exec)
            .await
            .map_err(to_status)?;
        let url = streams.exec_url(req).map_err(stream_status)?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(&self, r: Request<cri::AttachRequest>) -> R<cri::AttachResponse> {
        let streams = self.streams("Attach")?;
        let req = r.into_inner();
        require_id(&req.container_id, "container")?;
        let record = self
            .node
            .running_container(&req.container_id, ContainerOp::Attach)
            .instrument(info_span!("Attach", container.id = %req.container_id))
            .await
            .map_err(to_status)?;
        if req.tty && !record.config.tty {
            return Err(Status::failed_precondition(format!(
                "container {} was created without a terminal (tty: false); attach without tty",
                record.id
            )));
        }
        let url = streams.attach_url(req).map_err(stream_status)?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        r: Request<cri::PortForwardRequest>,
    ) -> R<cri::PortForwardResponse> {
        let streams = self.streams("PortForward")?;
        let req = r.into_inner();
        self.node
            .ready_pod(&req.pod_sandbox_id)
            .map_err(to_status)?;
        let url = streams.port_forward_url(req).map_err(stream_status)?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    // The four stats calls are served by `list_routes` from the encoded
    // answers; these decode the same bytes, for callers of the trait.
    async fn container_stats(
        &self,
        r: Request<cri::ContainerStatsRequest>,
    ) -> R<cri::ContainerStatsResponse> {
        let bytes = self
            .container_stats_encoded(&r.into_inner().container_id)
            .await?;
        decoded(&bytes)
    }

    async fn list_container_stats(
        &self,
        r: Request<cri::ListContainerStatsRequest>,
    ) -> R<cri::ListContainerStatsResponse> {
        let filter = r.into_inner().filter;
        let bytes = self.list_container_stats_encoded(filter.as_ref()).await;
        decoded(&bytes)
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<cri::PodSandboxStatsRequest>,
    ) -> R<cri::PodSandboxStatsResponse> {
        let bytes = self
            .pod_sandbox_stats_encoded(&r.into_inner().pod_sandbox_id)
            .await?;
        decoded(&bytes)
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<cri::ListPodSandboxStatsRequest>,
    ) -> R<cri::ListPodSandboxStatsResponse> {
        let filter = r.into_inner().filter;
        let bytes = self.list_pod_sandbox_stats_encoded(filter.as_ref()).await;
        decoded(&bytes)
    }

    async fn update_runtime_config(
        &self,
        _r: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> R<cri::UpdateRuntimeConfigResponse> {
        // kubelet sends the pod CIDR here; capcri has no CNI yet, so there
        // is nothing to update, and refusing would fail kubelet's start.
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, r: Request<cri::StatusRequest>) -> R<cri::StatusResponse> {
        let verbose = r.into_inner().verbose;
        let conditions = vec![
            cri::RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            match self.node.network().status() {
                Ok(_) => cri::RuntimeCondition {
                    r#type: "NetworkReady".into(),
                    status: true,
                    reason: String::new(),
                    message: String::new(),
                },
                Err(e) => cri::RuntimeCondition {
                    r#type: "NetworkReady".into(),
                    status: false,
                    reason: "NetworkPluginNotReady".into(),
                    message: format!(
                        "{e}; until a CNI config is found, pods get a network namespace with loopback only"
                    ),
                },
            },
        ];
        let mut info = std::collections::HashMap::new();
        if verbose {
            let cfg = self.node.config();
            let cgroups = self.node.cgroup_setup();
            let value = serde_json::json!({
                "socket": cfg.socket, "stateDir": cfg.state_dir, "dataDir": cfg.data_dir,
                "cgroupDriver": cgroups.driver.as_str(),
                "cgroupDriverDetected": cgroups.detected,
                "cgroupParent": cgroups.default_parent,
                "cgroupVersion": if crate::util::cgroupfs::is_unified() { 2 } else { 1 },
                "registries": cfg.registries,
            });
            info.insert("config".to_string(), value.to_string());
        }
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info,
            // rro: the spec emits the "rro" option, which libcontainer
            // applies with mount_setattr(MOUNT_ATTR_RDONLY, AT_RECURSIVE).
            // userns: POD mode with idmapped rootfs and volumes, when the
            // startup probe found idmapped overlay layers to work.
            runtime_handlers: crate::pod::handlers::status_handlers(
                &self.node.config().runtime_handlers,
                crate::pod::handlers::HandlerFeatures {
                    recursive_read_only_mounts: true,
                    user_namespaces: self.node.supports_user_namespaces(),
                },
            ),
            // Merge and Strict are implemented in spec::user, and the
            // effective groups are reported in ContainerStatus.user.
            features: Some(cri::RuntimeFeatures {
                supplemental_groups_policy: true,
            }),
        }))
    }

    async fn checkpoint_container(
        &self,
        _r: Request<cri::CheckpointContainerRequest>,
    ) -> R<cri::CheckpointContainerResponse> {
        Err(unimplemented("CheckpointContainer"))
    }

    type GetContainerEventsStream = super::events::ContainerEventStream;

    async fn get_container_events(
        &self,
        _r: Request<cri::GetEventsRequest>,
    ) -> R<Self::GetContainerEventsStream> {
        let _span = info_span!("GetContainerEvents").entered();
        Ok(Response::new(super::events::container_events(
            self.node.clone(),
        )))
    }

    async fn list_metric_descriptors(
        &self,
        _r: Request<cri::ListMetricDescriptorsRequest>,
    ) -> R<cri::ListMetricDescriptorsResponse> {
        let _span = info_span!("ListMetricDescriptors").entered();
        Ok(Response::new(cri::ListMetricDescriptorsResponse {
            descriptors: super::pod_metrics::descriptors(),
        }))
    }

    /// The ready pods' figures of ListPodSandboxStats (the same kept
    /// samples, so a scrape costs what a stats call costs) as cAdvisor
    /// metrics; containerd also reports ready pods only.
    async fn list_pod_sandbox_metrics(
        &self,
        _r: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> R<cri::ListPodSandboxMetricsResponse> {
        let usage = self
            .node
            .list_pod_sandbox_stats(None)
            .instrument(info_span!("ListPodSandboxMetrics"))
            .await;
        let images = self.node.images();
        let now = crate::util::time::now_nanos();
        let mut image_name = |c: &crate::node::stats::StatsSubject| {
            images.reported_name(&c.image_id, &c.asked_image())
        };
        let pod_metrics = usage
            .iter()
            .filter(|p| p.pod.state == crate::pod::PodState::Ready)
            .map(|p| super::pod_metrics::pod_sandbox_metrics(p, &mut image_name, now))
            .collect();
        Ok(Response::new(cri::ListPodSandboxMetricsResponse {
            pod_metrics,
        }))
    }

    /// kubelet (KubeletCgroupDriverFromCRI, 1.28+) takes its cgroupDriver
    /// from here, so this is the driver capcri actually runs.
    async fn runtime_config(
        &self,
        _r: Request<cri::RuntimeConfigRequest>,
    ) -> R<cri::RuntimeConfigResponse> {
        let _span = info_span!("RuntimeConfig").entered();
        let driver = match self.node.cgroup_setup().driver {
            crate::config::CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
            crate::config::CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
        };
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }
}
