//! CreateContainer's device steps: `ContainerConfig.devices` (and a
//! privileged container's host /dev) and CDI devices into the OCI spec.
//! The host reads are `container::devices` and `container::cdi`, the
//! translation `spec::devices` and `spec::cdi`.

use std::path::Path;

use oci_spec::runtime::Spec;

use crate::container::ContainerRecord;
use crate::container::cdi::CdiRegistry;
use crate::container::devices::{host_dev_nodes, resolve_request};
use crate::node::{Node, NodeError};
use crate::spec::SpecError;

impl Node {
    /// CreateContainer's device step: the requested devices (and a
    /// privileged container's host /dev) into the spec, with their device
    /// cgroup rules.
    pub(super) fn add_devices(
        &self,
        record: &ContainerRecord,
        spec: &mut Spec,
        user_namespace: bool,
    ) -> Result<(), NodeError> {
        let config = &record.config;
        let privileged = crate::spec::security_context(config).is_some_and(|sc| sc.privileged);
        let requests = crate::spec::device_requests(config)?;
        let mut devices = if privileged {
            crate::spec::host_devices_for_privileged(host_dev_nodes())
        } else {
            Vec::new()
        };
        for req in &requests {
            let resolved = resolve_request(req, config)?;
            if user_namespace
                && let Some(d) = resolved
                    .iter()
                    .find(|d| d.host.host_path != Path::new(&d.container_path))
            {
                // libcontainer bind-mounts a user namespace's device nodes
                // (mknod needs the initial namespace) from the host path
                // equal to the container path: another container path
                // would get another device.
                return Err(SpecError::invalid(
                    format!("devices[{}].container_path", req.index),
                    format!(
                        "{:?}: in a pod with its own user namespace (hostUsers: false) a device is bind-mounted from the same path on the host, and the host's node is {}; use {} as the container path or run the pod with hostUsers: true",
                        d.container_path,
                        d.host.host_path.display(),
                        d.host.host_path.display()
                    ),
                )
                .into());
            }
            devices.extend(resolved);
        }
        let ownership = crate::spec::DeviceOwnership::for_container(
            self.config.device_ownership_from_security_context,
            config,
        );
        crate::spec::apply_devices(spec, &devices, ownership, privileged);
        Ok(())
    }

    /// CreateContainer's CDI step: the container's CDI devices (CDI_devices
    /// and cdi.k8s.io/ annotations) applied to its spec. The spec
    /// directories are read only when a container asks for a device.
    pub(super) fn add_cdi_devices(
        &self,
        record: &ContainerRecord,
        spec: &mut Spec,
        user_namespace: bool,
    ) -> Result<(), NodeError> {
        let names = crate::spec::requested_cdi_devices(&record.config)?;
        if names.is_empty() {
            return Ok(());
        }
        let dirs = &self.config.cdi_spec_dirs;
        let registry = CdiRegistry::load(dirs);
        for (path, why) in &registry.broken {
            tracing::warn!(container.id = %record.id, file = %path.display(), error = %why, "CDI spec file not used");
        }
        registry.inject(spec, &names, dirs, user_namespace)?;
        Ok(())
    }
}
