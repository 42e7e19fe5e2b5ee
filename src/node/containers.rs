//! CreateContainer, StartContainer, StopContainer, RemoveContainer,
//! ContainerStatus, ListContainers and ExecSync.

use crate::capabilities::policy::ResolvedIdentity;
use crate::container::capabilities::{
    MountedRootfs, clamp_to_host, decide, host_bounding_set, image_facts, image_file_caps,
    oci_capabilities,
};
use crate::container::idmapped::{mount_idmapped_overlay, stage_idmapped_volumes, unstage};
use crate::container::paths::log_file_path;
use crate::container::rootfs_read::RootDir;
use crate::container::{ContainerRecord, ContainerState, container_name_key, cri_state};
use crate::crash_point::crash_point;
use crate::events::EventKind;
use crate::host::pinned_namespace_path;
use crate::image::rootfs::{mount_overlay, unmount};
use crate::monitor_api::{
    ContainerRuntimeState, CreateContainer, ExecOutput, ExecSpec, NamespaceKind, RuntimeError,
    RuntimeStatus, StartOutcome,
};
use crate::node::{Node, NodeError, find_by_id_or_prefix, labels_match};
use crate::pod::PodSandbox;
use crate::spec::{ContainerSpecInput, ImageUserDb, PodFiles, PodNamespacePaths};
use crate::state::{ContainerOp, PodOp};
use crate::util::sync::lock;
use crate::util::time::now_nanos;
use k8s_cri::v1::{ContainerConfig, ContainerFilter, PodSandboxConfig};
use std::path::PathBuf;
use std::time::Duration;
use tracing::{info, warn};

impl Node {
    pub async fn create_container(
        &self,
        pod_id: &str,
        config: ContainerConfig,
        _sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String, NodeError> {
        let pod = self.pod(pod_id)?;
        pod.check(PodOp::CreateContainer)?;
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        if name.is_empty() {
            return Err(NodeError::InvalidArgument(
                "container metadata.name is empty: give the container a name".into(),
            ));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(NodeError::InvalidArgument(format!(
                "container {name:?} names no image: set image.image"
            )));
        }
        let image = self
            .images
            .resolve(&image_name)
            .ok_or_else(|| NodeError::NotFound {
                kind: "image",
                id: format!("{image_name} (pull it first, e.g. `crictl pull {image_name}`)"),
            })?;
        let log_path = log_file_path(&pod.config.log_directory, &config.log_path)
            .map_err(NodeError::InvalidArgument)?;
        // The build's intermediate process will join the container's
        // cgroups in a few ms: the kernel's wait for that lock starts now,
        // alongside the rootfs, policy and bundle (`host::cgroup_lock`).
        crate::host::cgroup_lock::warm();

        let key = container_name_key(&pod.id, &config);
        let id = self.names.reserve_new(key.clone())?;
        let _guard = self.container_locks.lock(&id).await;
        let mut record = ContainerRecord {
            id: id.clone(),
            pod_id: pod.id.clone(),
            image_ref: image_name,
            image_id: image.id.clone(),
            image_digest_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            created_at: now_nanos(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            state: ContainerState::Created,
            reason: String::new(),
            message: String::new(),
            log_path: log_path.unwrap_or_default(),
            bundle: self.config.bundles_dir().join(&id),
            writable_dir: self.config.writable_layers_dir().join(&id),
            pid: 0,
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            decision: None,
            list_entry: Default::default(),
            stats_facts: Default::default(),
            image_key: Default::default(),
            config,
        };
        match self.set_up_container(&pod, &image, &mut record).await {
            Ok(()) => {
                let pod_id = record.pod_id.clone();
                self.containers.publish(record);
                // After the insert: the event's statuses are read from the
                // node when it is delivered, and must include this one.
                self.events.emit(EventKind::Created, &id, &pod_id);
                info!(pod.id = %pod.id, container.id = %id, "container created");
                Ok(id)
            }
            Err(e) => {
                if let Ok(m) = self.monitor(&pod).await {
                    let _ = m.delete(&id).await;
                }
                self.tear_down_container(&record);
                self.names.release(&key);
                Err(e)
            }
        }
    }

    async fn set_up_container(
        &self,
        pod: &PodSandbox,
        image: &crate::image::ImageRecord,
        record: &mut ContainerRecord,
    ) -> Result<(), NodeError> {
        // Mount, file reads, policy and an fsynced write: blocking work that
        // must not hold a runtime worker (2 of them on 2 cores) while other
        // calls (ContainerStatus, List*) wait behind it.
        crate::util::task::blocking(|| self.prepare_bundle(pod, image, record))?;
        let monitor = self.monitor(pod).await?;
        let step = crate::util::time::StepTimer::new("create_container", &record.id);
        // The record is written while the monitor checks the request. A
        // crash in between leaves a record whose monitor may not have the
        // container; such a record reads Unknown (as one whose monitor died
        // does) and RemoveContainer clears it, or a container without a
        // record, which the daemon's start-up reconciliation deletes:
        // listed or nothing, either way.
        //
        // The monitor answers before libcontainer's build (its two
        // processes, most of a create), which then runs while this call
        // returns and kubelet gets to StartContainer: containerd leaves
        // runc's create to StartContainer altogether. What capcri itself
        // refuses (policy, image files, spec, mounts, devices) was refused
        // above; what only the kernel refuses during the build (a mount
        // onto a file of the image, say) fails StartContainer with the
        // build's report and leaves the container exited (`StartError`,
        // 128), as containerd reports a task that could not be created.
        let writing = self.containers.write_alongside(record.clone(), || {
            crash_point("container.create.record-written")
        });
        // Before the question (see `ExitTracking::watch_of`): a failed
        // build is told as an exit on this watch.
        let watch = self.exit_tracking.watch_of(&pod.id);
        let created = monitor
            .create(CreateContainer {
                id: record.id.clone(),
                bundle: record.bundle.clone(),
                log_path: (!record.log_path.as_os_str().is_empty())
                    .then(|| record.log_path.clone()),
                stdin: record.config.stdin,
                stdin_once: record.config.stdin_once,
                tty: record.config.tty,
                exec_path: record
                    .decision
                    .as_ref()
                    .map(|d| d.exec_path)
                    .unwrap_or(crate::monitor_api::ExecPath::Direct),
                build_after_answer: true,
            })
            .await;
        if created.is_ok() {
            crash_point("container.create.after-monitor");
        }
        step.done("monitor_create");
        let written = writing.await.map_err(|e| {
            NodeError::Internal(format!(
                "writing the record of container {:?} failed: {e}",
                record.id
            ))
        });
        step.done("record");
        match (created, written) {
            (Ok(_), Ok(Ok(()))) => {
                crash_point("container.create.after-record");
                // Answered from the cache from now on: a list must not wait
                // for the build the monitor runs after its answer.
                self.exit_tracking
                    .refreshed_live(&record.id, &pod.id, watch);
                Ok(())
            }
            (Err(e), written) => {
                // The caller's clean-up undoes the rest; the record, on disk
                // for a container that never was, goes first.
                if matches!(written, Ok(Ok(())))
                    && let Err(d) = self.containers.delete(&record.id)
                {
                    warn!(container.id = %record.id, error = %d, "removing the record of a container the monitor could not create");
                }
                Err(e.into())
            }
            (Ok(_), Ok(Err(e))) => Err(e.into()),
            (Ok(_), Err(e)) => Err(e),
        }
    }

    /// Everything CreateContainer does before the monitor: the writable
    /// layer and its overlay mount, the image user, the capability
    /// decision and the bundle's config.json. Blocking.
    fn prepare_bundle(
        &self,
        pod: &PodSandbox,
        image: &crate::image::ImageRecord,
        record: &mut ContainerRecord,
    ) -> Result<(), NodeError> {
        let step = crate::util::time::StepTimer::new("create_container", &record.id);
        let upper = record.writable_dir.join("upper");
        let work = record.writable_dir.join("work");
        let rootfs = record.rootfs();
        for d in [&upper, &work, &rootfs] {
            std::fs::create_dir_all(d).map_err(|e| NodeError::io(d, e))?;
        }
        let userns = pod.user_namespace();
        set_container_dir_modes(&upper, &record.bundle, userns.as_ref())?;
        crate::spec::check_container_user_namespace(&record.config, userns.as_ref())?;
        let userns_fd = match &userns {
            Some(_) => {
                let pin = pinned_namespace_path(&pod.pod_dir, NamespaceKind::User);
                Some(std::fs::File::open(&pin).map_err(|e| NodeError::io(&pin, e))?)
            }
            None => None,
        };
        // Leased before the mount: RemoveImage from now on keeps the layers.
        let layers = self
            .images
            .layer_dirs(&self.images.lease(&record.id, &image.id)?)?;
        match (&userns, &userns_fd) {
            (Some(mapping), Some(fd)) => mount_idmapped_overlay(
                &layers,
                &upper,
                &work,
                &rootfs,
                &record.bundle,
                fd,
                mapping,
            )?,
            _ => mount_overlay(&layers, &upper, &work, &rootfs)?,
        }
        crash_point("container.create.after-rootfs");
        step.done("overlay");

        // The image's files, not the caller's: a bad one is a precondition
        // failure naming the file and the image.
        let image_file =
            |e: crate::container::rootfs_read::RootfsReadError| NodeError::BadImageContent {
                container: record.name().to_string(),
                image: record.image_ref.clone(),
                reason: e.to_string(),
            };
        let root_dir = RootDir::open(&rootfs).map_err(|e| NodeError::io(&rootfs, e))?;
        let passwd = root_dir.read("/etc/passwd").map_err(image_file)?;
        let group = root_dir.read("/etc/group").map_err(image_file)?;
        let users = ImageUserDb {
            passwd: passwd.as_deref(),
            group: group.as_deref(),
        };
        let image_config = image.config.config().as_ref();
        let user = crate::spec::resolve_user(&record.config, image_config, &users)?;
        record.uid = user.uid;
        record.gid = user.gid;
        record.additional_gids = user.additional_gids.clone();
        step.done("user");

        // The capability decision, before any bundle is written. An unknown
        // capability name is a bad request (InvalidArgument), not a policy
        // deny: the same check and wording as the spec builder's.
        crate::spec::validate_capability_names(&record.config)?;
        let file_caps = image_file_caps(image);
        let view = MountedRootfs::new(root_dir, file_caps.clone());
        let mut decision = decide(
            &self.policies.current(),
            pod,
            &record.config,
            image_facts(
                image,
                &self.images.reported_name(&image.id, &record.asked_image()),
                file_caps,
            ),
            ResolvedIdentity {
                uid: user.uid,
                gid: user.gid,
            },
            &view,
        );
        clamp_to_host(&mut decision, host_bounding_set());
        // What the pod's network namespace got at RunPodSandbox (the
        // policies may have been reloaded since): explain shows it.
        decision.sysctls = pod.network_policy.sysctls.clone();
        self.metrics.count_decision(&decision);
        for w in &decision.warnings {
            warn!(pod.id = %pod.id, container.id = %record.id, warning = %w, "capability policy warning");
        }
        if !decision.allowed {
            return Err(NodeError::PolicyDenied {
                container: record.name().to_string(),
                message: decision
                    .deny_message
                    .clone()
                    .unwrap_or_else(|| "denied".into()),
            });
        }
        let capabilities = oci_capabilities(&decision);
        record.decision = Some(decision);
        step.done("policy");

        let ns = |kind| pinned_namespace_path(&pod.pod_dir, kind);
        let namespaces = PodNamespacePaths {
            net: (!pod.host_network()).then(|| ns(NamespaceKind::Net)),
            ipc: (!pod.host_ipc()).then(|| ns(NamespaceKind::Ipc)),
            uts: (!pod.host_network()).then(|| ns(NamespaceKind::Uts)),
            pid: pod.shares_pid().then(|| ns(NamespaceKind::Pid)),
            user: userns.is_some().then(|| ns(NamespaceKind::User)),
            target_pid: self.pid_target_namespace(pod, &record.config)?,
        };
        let pod_files = PodFiles {
            hostname: Some(pod.pod_dir.join("hostname")),
            resolv_conf: Some(pod.pod_dir.join("resolv.conf")),
            hosts: Some(pod.pod_dir.join("hosts")),
            shm: Some(if pod.host_ipc() {
                PathBuf::from("/dev/shm")
            } else {
                pod.shm_dir()
            }),
        };
        let localhost_profile = self.localhost_seccomp_profile(&record.config)?;
        let image_volumes = self.stage_image_volumes(pod, record)?;
        let volume_config = image_volumes
            .as_ref()
            .map(|v| &v.config)
            .unwrap_or(&record.config);
        // In a POD user namespace the spec names idmapped clones of the
        // volumes and pod files, staged in the bundle.
        let (staged_config, pod_files) = match &userns_fd {
            Some(fd) => {
                let (c, f) = stage_idmapped_volumes(volume_config, &pod_files, &record.bundle, fd)?;
                (Some(c), f)
            }
            None => (None, pod_files),
        };
        let mut spec = crate::spec::container_spec(&ContainerSpecInput {
            pod: &pod.config,
            container: staged_config.as_ref().unwrap_or(volume_config),
            image_config,
            rootfs: &rootfs,
            namespaces: &namespaces,
            pod_files: &pod_files,
            cgroups_path: self.pod_cgroup(pod).container_cgroups_path(&record.id),
            users,
            capabilities: Some(capabilities),
            localhost_seccomp_profile: localhost_profile.as_deref(),
            user_namespace: userns.as_ref(),
        })?;
        if let Some(v) = &image_volumes {
            crate::container::image_volumes::harden_spec_mounts(&mut spec, &v.destinations);
        }
        crate::spec::cgroup_v1::emulate_cgroup_v1(&mut spec, crate::pod::cgroups::v1_hierarchies());
        let dropped = crate::spec::hugetlb::fit_hugepage_limits(
            &mut spec,
            crate::pod::cgroups::hugetlb_available(),
        );
        if dropped > 0 {
            tracing::debug!(
                container.id = %record.id,
                dropped,
                "no hugetlb cgroup controller on this host: hugepage limits left out"
            );
        }
        self.add_devices(record, &mut spec, userns.is_some())?;
        self.add_cdi_devices(record, &mut spec, userns.is_some())?;
        if let Some(w) =
            crate::spec::apply_oom_score_floor(&mut spec, crate::host::oom_score::floor())
        {
            warn!(pod.id = %pod.id, container.id = %record.id, warning = %w, "oom_score_adj raised");
        }
        crate::spec::add_cgroup_namespace(
            &mut spec,
            crate::util::cgroupfs::is_unified(),
            crate::spec::security_context(&record.config).is_some_and(|sc| sc.privileged),
        );
        // After the spec, so a malformed request is reported as such first.
        crate::container::propagation::check_host_sources(&record.config.mounts)?;
        // The lexical /proc check cannot see an image symlink: resolve every
        // destination inside the mounted rootfs (openat2 RESOLVE_IN_ROOT per
        // link, never leaving it) as the runtime's mount will.
        crate::spec::check_mount_destinations(&record.config, |p| {
            crate::capabilities::policy::resolve_symlinks(&view, p)
        })?;
        // Compact, as containerd writes it: the monitor's check and
        // libcontainer's build each parse it again.
        let spec_json = serde_json::to_vec(&spec)
            .map_err(|e| NodeError::Internal(format!("cannot encode OCI spec: {e}")))?;
        crate::store::write_replace(&record.bundle.join("config.json"), &spec_json)?;
        crash_point("container.create.after-bundle");
        step.done("bundle");

        if !record.log_path.as_os_str().is_empty()
            && let Some(parent) = record.log_path.parent()
        {
            std::fs::create_dir_all(parent).map_err(|e| NodeError::io(parent, e))?;
        }
        Ok(())
    }

    /// The JSON of a Localhost seccomp profile, read from the node.
    fn localhost_seccomp_profile(
        &self,
        config: &ContainerConfig,
    ) -> Result<Option<String>, NodeError> {
        let Some(profile) = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.seccomp.as_ref())
        else {
            return Ok(None);
        };
        if profile.profile_type != k8s_cri::v1::security_profile::ProfileType::Localhost as i32 {
            return Ok(None);
        }
        let path = PathBuf::from(&profile.localhost_ref);
        if !path.is_absolute() {
            return Err(NodeError::InvalidArgument(format!(
                "seccomp localhost profile {:?} must be an absolute path on the node",
                profile.localhost_ref
            )));
        }
        std::fs::read_to_string(&path).map(Some).map_err(|e| {
            NodeError::InvalidArgument(format!(
                "cannot read seccomp localhost profile {}: {e}; put the profile on the node or fix the path",
                path.display()
            ))
        })
    }

    /// Unmounts and deletes what CreateContainer made. Best effort.
    fn tear_down_container(&self, record: &ContainerRecord) {
        if let Err(e) = unmount(&record.rootfs()) {
            warn!(container.id = %record.id, error = %e, "rootfs unmount failed");
        }
        if let Err(e) = self.images.release(&record.id) {
            warn!(container.id = %record.id, error = %e, "layer lease not released");
        }
        if !unstage(&record.bundle) || !crate::container::image_volumes::unmount_all(&record.bundle)
        {
            // A volume may still be attached under the bundle: never delete
            // recursively through it.
            warn!(container.id = %record.id, "volume mounts still attached; bundle kept");
            return;
        }
        for d in [&record.bundle, &record.writable_dir] {
            if let Err(e) = std::fs::remove_dir_all(d)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!(container.id = %record.id, path = %d.display(), error = %e, "cleanup failed");
            }
        }
    }

    pub async fn start_container(&self, id: &str) -> Result<(), NodeError> {
        let found = self.container(id)?;
        // CreateContainer's warm-up may be over by now (kubelet's start
        // follows its create at once, but a client may wait): the build's
        // move into the container's cgroups comes next.
        crate::host::cgroup_lock::warm();
        let step = crate::util::time::StepTimer::new("start_container", &found.id);
        let _guard = self.container_locks.lock(&found.id).await;
        // Read again under the lock: a start that held it has changed it.
        let record = self.container(&found.id)?;
        if let Some(report) = failed_build(&record) {
            return Err(report);
        }
        // The record's state, not a round trip to the monitor: it is
        // created until a start succeeds, and an exit it has not heard of
        // yet is caught by the monitor's own check below. Unknown (its
        // monitor did not answer once) is left to the monitor to settle.
        if record.state != ContainerState::Unknown {
            record.state.check(ContainerOp::Start, &record.id)?;
        }
        let pod = self.pod(&record.pod_id)?;
        let monitor = self.monitor(&pod).await?;
        let outcome = match monitor.start(&record.id).await {
            Ok(outcome) => outcome,
            Err(e) => {
                // A build or an execve that failed left the container
                // exited (`StartError`): the record says so now, not at the
                // next status call, so the next list shows it. Whatever the
                // error, the cached record is not trusted any more.
                self.exit_tracking.exited(&record.id);
                if let Ok(state) = monitor.state(&record.id).await
                    && state.status == RuntimeStatus::Exited
                {
                    match self.fold_runtime_state(record, &state, RecordWrite::Whole) {
                        Ok(folded) => {
                            if let Some(report) = failed_build(&folded) {
                                return Err(report);
                            }
                        }
                        Err(w) => {
                            warn!(container.id = %found.id, error = %w, "recording a failed start")
                        }
                    }
                }
                return Err(e.into());
            }
        };
        let state = match outcome {
            StartOutcome::Started(state) => state,
            StartOutcome::NotCreated(state) => {
                ContainerState::from(state.status).check(ContainerOp::Start, &record.id)?;
                return Err(NodeError::Internal(format!(
                    "the monitor of container {:?} refused to start it in the {:?} state",
                    record.id, state.status
                )));
            }
            // A monitor started before this daemon's version: it said only Ok.
            StartOutcome::Unknown => monitor.state(&record.id).await?,
        };
        crash_point("container.start.after-monitor");
        step.done("monitor_start");
        // Shown, not written: the monitor wrote the start (its container's
        // state, pid and start time) to its own state file before it
        // answered, and answers for it after a crash of this daemon,
        // exactly as when the crash point above fires (the record on disk
        // still says created; the first list or status after the restart
        // asks the monitor and folds its answer). After a machine crash
        // the record reads Unknown (its monitor is gone) whether it said
        // created or running. So the start's fsync (about a millisecond on
        // a disk, a quarter of StartContainer once the container is built)
        // protected nothing; the next write of the record (its exit, a
        // stop, an update) carries the start with it.
        let record = self.fold_runtime_state(record, &state, RecordWrite::Memory)?;
        step.done("record");
        if record.state == ContainerState::Exited
            && !record.message.is_empty()
            && record.started_at == 0
        {
            return Err(NodeError::StartFailed {
                container: record.id,
                message: record.message,
            });
        }
        self.events
            .emit(EventKind::Started, &record.id, &record.pod_id);
        info!(pod.id = %record.pod_id, container.id = %record.id, "container started");
        Ok(())
    }

    pub async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), NodeError> {
        let Some(record) = self.find_container(id) else {
            return Ok(());
        };
        let (pod_id, ctr) = (record.pod_id.clone(), record.id.clone());
        let _guard = watch_stop_step(
            self.container_locks.lock(&record.id),
            STOP_STEP_PATIENCE,
            &pod_id,
            &ctr,
            "container lock (another call on this container holds it)",
        )
        .await;
        let pod = self.pod(&record.pod_id)?;
        let stopped = async {
            let monitor = watch_stop_step(
                self.monitor(&pod),
                STOP_STEP_PATIENCE,
                &pod_id,
                &ctr,
                "monitor connection",
            )
            .await?;
            // A container this record saw running is stopped straight away
            // (the monitor answers at once for one that has exited since):
            // one monitor round trip less on the common path. Otherwise ask
            // first, so a created container is not signalled.
            let running = record.state == ContainerState::Running
                || watch_stop_step(
                    monitor.state(&record.id),
                    STOP_STEP_PATIENCE,
                    &pod_id,
                    &ctr,
                    "state before the stop",
                )
                .await?
                .status
                    == RuntimeStatus::Running;
            if running {
                watch_stop_step(
                    monitor.stop(&record.id, timeout, self.stop_signal(&record)),
                    timeout + STOP_STEP_PATIENCE,
                    &pod_id,
                    &ctr,
                    "signal and wait for the exit (monitor)",
                )
                .await?;
            }
            let state = watch_stop_step(
                monitor.state(&record.id),
                STOP_STEP_PATIENCE,
                &pod_id,
                &ctr,
                "state after the stop",
            )
            .await?;
            Ok::<_, NodeError>(state)
        };
        match stopped.await {
            Ok(state) => {
                self.apply_runtime_state(record, &state)?;
                Ok(())
            }
            Err(NodeError::Runtime(RuntimeError::NotFound { .. })) => {
                // Its monitor no longer holds it (a RemoveContainer that a
                // crash interrupted after the delete): nothing runs to stop;
                // status reports it unknown until it is removed.
                warn!(container.id = %record.id, "the pod monitor no longer holds the container; nothing to stop");
                Ok(())
            }
            Err(NodeError::Runtime(RuntimeError::MonitorUnreachable { .. })) => {
                // Its monitor is gone: the exit code cannot be known, but the
                // container must still stop (kubelet retries StopPodSandbox).
                warn!(container.id = %record.id, "pod monitor gone; killing the orphaned container directly");
                lock(&self.monitors).remove(&pod.id);
                self.kill_orphan(&pod, &record.id).await;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// A container whose monitor died (SIGKILL, OOM) still runs, reparented
    /// to init. Kill it by the pid the monitor persisted, after checking the
    /// pid still belongs to the container's cgroup (pids are reused), then
    /// whatever else is in its cgroup, then remove its cgroups and
    /// libcontainer state.
    pub(crate) async fn kill_orphan(&self, pod: &PodSandbox, id: &str) {
        let cgroup = self.pod_cgroup(pod).container_dir(id);
        if let Ok(state) = crate::monitor_api::read_persisted_state(&pod.pod_dir, id)
            && let Some(pid) = state.pid
        {
            let cgroups =
                std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            if cgroups.lines().any(|l| l.ends_with(&cgroup)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                for _ in 0..100 {
                    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        // A monitor that died while it built the container (CreateContainer
        // had answered) persisted no pid, and libcontainer's intermediate
        // or init process may still be in the container's own cgroup (the
        // init waits for a start that cannot come): everything there is the
        // container's.
        let group = crate::host::CgroupPath::new(std::path::Path::new(&cgroup));
        if !crate::util::task::blocking(|| group.kill_all(Duration::from_secs(2))) {
            warn!(container.id = %id, cgroup = %cgroup, "processes left in the orphaned container's cgroup");
        }
        for h in crate::util::cgroupfs::hierarchies() {
            let dir = h.join(cgroup.trim_start_matches('/'));
            if let Err(e) = std::fs::remove_dir(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!(container.id = %id, path = %dir.display(), error = %e, "cgroup not removed");
            }
        }
        let _ = std::fs::remove_dir_all(self.config.runtime_root().join(id));
    }

    /// The image's STOPSIGNAL, as containerd honours it; SIGTERM otherwise.
    fn stop_signal(&self, record: &ContainerRecord) -> i32 {
        self.images
            .resolve(&record.image_id)
            .and_then(|img| {
                img.config
                    .config()
                    .as_ref()
                    .and_then(|c| c.stop_signal().clone())
            })
            .and_then(|s| parse_signal(&s))
            .unwrap_or(libc::SIGTERM)
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), NodeError> {
        let Some(record) = self.find_container(id) else {
            return Ok(());
        };
        let guard = self.container_locks.lock(&record.id).await;
        let step = crate::util::time::StepTimer::new("remove_container", &record.id);
        if let Some(pod) = self.find_pod(&record.pod_id) {
            let deleted = match self.monitor(&pod).await {
                Ok(m) => m.delete(&record.id).await.map_err(NodeError::from),
                Err(e) => Err(e),
            };
            match deleted {
                Ok(()) | Err(NodeError::Runtime(RuntimeError::NotFound { .. })) => {}
                Err(NodeError::Runtime(RuntimeError::MonitorUnreachable { .. })) => {
                    warn!(container.id = %record.id, "pod monitor gone; killing the orphaned container directly");
                    lock(&self.monitors).remove(&pod.id);
                    self.kill_orphan(&pod, &record.id).await;
                }
                Err(e) => return Err(e),
            }
        }
        crash_point("container.remove.after-monitor");
        step.done("monitor_delete");
        // A user-namespace container's idmapped binds (its volumes among
        // them) are detached before the answer: nothing of the host's stays
        // mounted under a removed container, even for a moment.
        if crate::container::idmapped::staging_dir(&record.bundle).exists() {
            crate::util::task::blocking(|| {
                if let Err(e) = unmount(&record.rootfs()) {
                    warn!(container.id = %record.id, error = %e, "rootfs unmount failed");
                }
                crate::container::idmapped::unstage(&record.bundle)
            });
        }
        // The unmount and the deletion happen after the answer; the record
        // goes only once both directories are out of the way (see trash.rs).
        let discarded = match self
            .trash
            .discard(&record.id, &record.bundle, &record.writable_dir)
        {
            Ok(moved) => moved,
            Err(e) => {
                warn!(container.id = %record.id, error = %e, "cannot move to the trash; deleting in place");
                self.tear_down_container(&record);
                Vec::new()
            }
        };
        // The container is gone: its layers may go with the image. (Its
        // rootfs may still be mounted on them until the trash is emptied;
        // nothing runs there any more.)
        if let Err(e) = self.images.release(&record.id) {
            warn!(container.id = %record.id, error = %e, "layer lease not released");
        }
        crash_point("container.remove.after-teardown");
        step.done("trash");
        self.containers.delete(&record.id)?;
        step.done("record");
        if !discarded.is_empty() {
            tokio::task::spawn_blocking(move || {
                for p in discarded {
                    crate::container::trash::delete_entry(&p);
                }
            });
        }
        self.containers.forget(&record.id);
        self.exit_tracking.forget(&record.id);
        self.names.release(&record.name_key());
        self.events
            .emit(EventKind::Deleted, &record.id, &record.pod_id);
        drop(guard);
        self.container_locks.forget(&record.id);
        info!(pod.id = %record.pod_id, container.id = %record.id, "container removed");
        Ok(())
    }

    /// Status with fresh runtime facts from the monitor.
    pub async fn container_status(&self, id: &str) -> Result<ContainerRecord, NodeError> {
        self.map_container_status(id, ContainerRecord::clone).await
    }

    /// `f` of the container's record as [`Self::container_status`] has
    /// it. A record that needs no monitor's word (exited, or running and
    /// current: `refresh` would give it back as it is) is mapped under
    /// the table's lock, without a deep copy (config, capability
    /// decision); only the others are copied out and refreshed.
    pub async fn map_container_status<T>(
        &self,
        id: &str,
        f: impl FnOnce(&ContainerRecord) -> T,
    ) -> Result<T, NodeError> {
        let stale = {
            let containers = self.containers.lock();
            let record = super::find_ref_by_id_or_prefix(&containers, id)
                .ok_or_else(|| NodeError::not_found("container", id))?;
            if self.is_settled(record) {
                return Ok(f(record));
            }
            record.clone()
        };
        Ok(f(&self.refresh(stale).await?))
    }

    /// Whether `refresh` gives `record` back as it is.
    fn is_settled(&self, record: &ContainerRecord) -> bool {
        record.state == ContainerState::Exited
            || (record.state.is_live() && self.exit_tracking.is_current(&record.id))
    }

    async fn refresh(&self, record: ContainerRecord) -> Result<ContainerRecord, NodeError> {
        if self.is_settled(&record) {
            return Ok(record);
        }
        let Some(pod) = self.find_pod(&record.pod_id) else {
            return Ok(record);
        };
        let watch = self.exit_tracking.watch_of(&record.pod_id);
        let state = match self.monitor(&pod).await {
            Ok(m) => m.state(&record.id).await,
            Err(NodeError::Runtime(e)) => Err(e),
            Err(e) => return Err(e),
        };
        match state {
            Ok(s) => {
                let record = self.apply_runtime_state(record, &s)?;
                if record.state.is_live() {
                    self.exit_tracking
                        .refreshed_live(&record.id, &record.pod_id, watch);
                }
                Ok(record)
            }
            Err(RuntimeError::NotFound { .. }) | Err(RuntimeError::MonitorUnreachable { .. }) => {
                let mut r = record;
                if r.state != ContainerState::Unknown {
                    r.state = ContainerState::Unknown;
                    r.reason = "Unknown".into();
                    r.message =
                        "the pod's monitor is gone; the container's fate cannot be known".into();
                    self.containers.put(r.clone())?;
                }
                Ok(r)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Folds the monitor's facts into the record and persists changes.
    fn apply_runtime_state(
        &self,
        record: ContainerRecord,
        state: &ContainerRuntimeState,
    ) -> Result<ContainerRecord, NodeError> {
        self.fold_runtime_state(record, state, RecordWrite::Durable)
    }

    fn fold_runtime_state(
        &self,
        mut record: ContainerRecord,
        state: &ContainerRuntimeState,
        write: RecordWrite,
    ) -> Result<ContainerRecord, NodeError> {
        let before = (
            record.state,
            record.started_at,
            record.finished_at,
            record.exit_code,
        );
        record.state = ContainerState::from(state.status);
        if let Some(t) = state.started_at {
            record.started_at = t;
        }
        record.pid = match record.state {
            ContainerState::Running | ContainerState::Created => state.pid.unwrap_or(0),
            _ => 0,
        };
        if record.state == ContainerState::Exited {
            record.finished_at = state.finished_at.unwrap_or_else(now_nanos);
            record.exit_code = state.exit_code.unwrap_or(-1);
            record.reason = state.reason.clone().unwrap_or_else(|| {
                if record.exit_code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                }
            });
            record.message = state.message.clone().unwrap_or_default();
        }
        if before
            != (
                record.state,
                record.started_at,
                record.finished_at,
                record.exit_code,
            )
        {
            match write {
                RecordWrite::Durable => self.containers.put(record.clone())?,
                RecordWrite::Whole => self.containers.replace(record.clone())?,
                RecordWrite::Memory => self.containers.publish(record.clone()),
            }
        }
        Ok(record)
    }

    /// A container by full id or unique prefix.
    pub fn find_container(&self, id: &str) -> Option<ContainerRecord> {
        find_by_id_or_prefix(&self.containers.lock(), id)
    }

    pub fn container(&self, id: &str) -> Result<ContainerRecord, NodeError> {
        self.find_container(id)
            .ok_or_else(|| NodeError::not_found("container", id))
    }

    pub(crate) fn containers_of(&self, pod_id: &str) -> Vec<ContainerRecord> {
        self.containers
            .lock()
            .values()
            .filter(|c| c.pod_id == pod_id)
            .cloned()
            .collect()
    }

    /// `f` of each container whose id and pod id start with the filter's
    /// (empty matches all) and whose labels hold its selector (`None`:
    /// all), ListContainerStats's filter. `f` runs under the table's lock,
    /// so it copies only what its caller needs.
    pub(crate) fn containers_matching<T>(
        &self,
        filter: Option<(&str, &str, &std::collections::HashMap<String, String>)>,
        f: impl Fn(&ContainerRecord) -> T,
    ) -> Vec<T> {
        self.containers
            .lock()
            .values()
            .filter(|c| container_matches(c, filter))
            .map(f)
            .collect()
    }

    pub async fn list_containers(
        &self,
        filter: Option<&ContainerFilter>,
    ) -> Result<Vec<ContainerRecord>, NodeError> {
        self.map_containers(filter, ContainerRecord::clone).await
    }

    /// `f` of every container the filter matches (its state refreshed
    /// first), oldest first. ListContainers comes every second from
    /// kubelet: a running container whose record is current
    /// (`ExitTracking`) is mapped under the table's lock, without a deep
    /// copy of its record (config, capability decision); only the others
    /// are copied out and refreshed from their monitor.
    pub async fn map_containers<T>(
        &self,
        filter: Option<&ContainerFilter>,
        f: impl FnMut(&ContainerRecord) -> T,
    ) -> Result<Vec<T>, NodeError> {
        Ok(self.map_containers_settled(filter, f).await?.0)
    }

    /// What ListContainers' answer is made from, as numbers that change
    /// with it: the container records, the exit tracking that says which
    /// of them are answered as they are, and the image records their
    /// image names come from. Equal snapshots taken before and after
    /// [`Self::map_containers_settled`] (settled) mean its answer holds
    /// until the snapshot changes.
    pub fn container_list_version(&self) -> ContainerListVersion {
        ContainerListVersion {
            records: self.containers.version(),
            tracking: self.exit_tracking.version(),
            images: self.images.generation(),
        }
    }

    /// [`Self::map_containers`], and whether every record was answered
    /// from the table alone (current, or exited): `false` when a monitor
    /// was asked about one, whose answer may change with no change of
    /// the table (a monitor that cannot be reached now may be later).
    pub async fn map_containers_settled<T>(
        &self,
        filter: Option<&ContainerFilter>,
        mut f: impl FnMut(&ContainerRecord) -> T,
    ) -> Result<(Vec<T>, bool), NodeError> {
        let wanted_state = filter.and_then(|f| f.state.as_ref()).map(|s| s.state);
        let state_ok =
            |c: &ContainerRecord| wanted_state.is_none_or(|s| cri_state(c.state) as i32 == s);
        let mut done: Vec<(i64, T)> = Vec::new();
        let mut stale: Vec<ContainerRecord> = Vec::new();
        {
            let containers = self.containers.lock();
            let tracking = self.exit_tracking.current();
            let by = filter.map(|f| (&*f.id, &*f.pod_sandbox_id, &f.label_selector));
            for c in containers.values().filter(|c| container_matches(c, by)) {
                if c.state.is_live() && tracking.is_current(&c.id) {
                    if state_ok(c) {
                        done.push((c.created_at, f(c)));
                    }
                } else {
                    stale.push(c.clone());
                }
            }
        }
        let settled = stale.iter().all(|c| c.state == ContainerState::Exited);
        for c in stale {
            let c = self.refresh(c).await?;
            if state_ok(&c) {
                done.push((c.created_at, f(&c)));
            }
        }
        done.sort_by_key(|(t, _)| *t);
        Ok((done.into_iter().map(|(_, v)| v).collect(), settled))
    }

    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput, NodeError> {
        let (monitor, record_id, mut spec) = self.exec_target(id, cmd).await?;
        spec.timeout = timeout;
        Ok(monitor.exec_sync(&record_id, spec).await?)
    }

    /// The monitor, the container id and the process of an exec into a
    /// running container: the container's env and cwd, the user of its
    /// process (`spec::exec_process`).
    pub(crate) async fn exec_target(
        &self,
        id: &str,
        cmd: Vec<String>,
    ) -> Result<(crate::monitor_api::MonitorClient, String, ExecSpec), NodeError> {
        if cmd.is_empty() {
            return Err(NodeError::InvalidArgument(
                "exec command is empty: give the command to run".into(),
            ));
        }
        let record = self.container_status(id).await?;
        record.check(ContainerOp::Exec)?;
        // The exec's process joins the container's cgroups once forked: the
        // kernel's wait for that lock starts now (`host::cgroup_lock`).
        crate::host::cgroup_lock::warm();
        let spec_path = record.bundle.join("config.json");
        let spec: oci_spec::runtime::Spec =
            crate::util::json_file::read(&spec_path).map_err(|e| {
                NodeError::Internal(format!("cannot read {}: {e}", spec_path.display()))
            })?;
        let process = crate::spec::exec_process(&spec, cmd.clone())?;
        let user = process.user();
        let pod = self.pod(&record.pod_id)?;
        let monitor = self.monitor(&pod).await?;
        let exec = ExecSpec {
            args: cmd,
            env: process.env().clone().unwrap_or_default(),
            cwd: Some(process.cwd().display().to_string()),
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            timeout: None,
        };
        Ok((monitor, record.id, exec))
    }
}

/// See [`Node::container_list_version`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerListVersion {
    records: u64,
    tracking: u64,
    images: u64,
}

/// How a changed container record is written.
#[derive(Debug, Clone, Copy)]
enum RecordWrite {
    /// `Table::put`: survives a power loss.
    Durable,
    /// `Table::replace`: whole after a power loss, perhaps the old one.
    Whole,
    /// `Table::publish` only: for what the pod monitor itself answers for
    /// after a crash of the daemon (a start), the record on disk keeping
    /// its previous, still valid, version until the next write.
    Memory,
}

/// How long a step of StopContainer may take (past the stop timeout, for
/// the wait on the exit) before the daemon logs that it is still waiting.
const STOP_STEP_PATIENCE: Duration = Duration::from_secs(5);

/// Awaits one step of StopContainer; when it takes longer than `patience`,
/// logs a warning naming the pod, the container and the step, and another
/// when it finally ends, so a stall shows in the daemon's log where it is
/// (issue: two stops hung a minute with nothing logged).
async fn watch_stop_step<T>(
    fut: impl std::future::Future<Output = T>,
    patience: Duration,
    pod: &str,
    container: &str,
    step: &'static str,
) -> T {
    let started = std::time::Instant::now();
    tokio::pin!(fut);
    tokio::select! {
        v = &mut fut => return v,
        _ = tokio::time::sleep(patience) => {
            warn!(pod.id = %pod, container.id = %container, step, waited = ?patience, "StopContainer is still waiting on a step");
        }
    }
    let v = fut.await;
    warn!(pod.id = %pod, container.id = %container, step, elapsed = ?started.elapsed(), "StopContainer step ended late");
    v
}

/// "SIGQUIT", "QUIT" or "3" to a signal number.
pub(crate) fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Some(n);
    }
    let name = s.trim().to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// Modes of a container's own directories under the daemon's umask 077.
/// The upper dir is the root of the container's overlay, so its mode is
/// the container's `/`: 0755, as every image expects. The bundle holds the
/// mounted rootfs (with the image's setuid-root binaries): 0700, so local
/// users cannot reach it (CVE-2021-41091), except that a user-namespaced
/// container's init must walk through it to its rootfs before pivot_root:
/// then 0710 with the group of the pod's root (as Docker does for
/// remapped roots), still closed to everyone else.
fn set_container_dir_modes(
    upper: &std::path::Path,
    bundle: &std::path::Path,
    userns: Option<&crate::spec::PodUserNamespace>,
) -> Result<(), NodeError> {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| NodeError::io(p, e))
    };
    chmod(upper, 0o755)?;
    match userns.and_then(|u| u.gids.to_host(0)) {
        Some(gid) => {
            std::os::unix::fs::chown(bundle, None, Some(gid))
                .map_err(|e| NodeError::io(bundle, e))?;
            chmod(bundle, 0o710)
        }
        None => chmod(bundle, 0o700),
    }
}

/// Whether a container passes a CRI list filter (id prefix, pod id prefix,
/// label selector; None passes everything): ListContainers and
/// ListContainerStats filter the same way.
fn container_matches(
    c: &ContainerRecord,
    filter: Option<(&str, &str, &std::collections::HashMap<String, String>)>,
) -> bool {
    let Some((id, pod_id, selector)) = filter else {
        return true;
    };
    c.id.starts_with(id) && c.pod_id.starts_with(pod_id) && labels_match(&c.config.labels, selector)
}

/// The error of every StartContainer of a container whose build failed
/// after CreateContainer answered (see `set_up_container`): exited with
/// `StartError` without ever starting, libcontainer's report as its
/// message. The same answer whether the record learnt of the failure from
/// this start, an earlier one, or the exit the monitor reported before it.
fn failed_build(record: &ContainerRecord) -> Option<NodeError> {
    (record.state == ContainerState::Exited
        && record.started_at == 0
        && record.reason == "StartError"
        && !record.message.is_empty())
    .then(|| NodeError::StartFailed {
        container: record.id.clone(),
        message: record.message.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_docker() {
        assert_eq!(parse_signal("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("quit"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGNOPE"), None);
    }
}
