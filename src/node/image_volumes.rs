//! CreateContainer's image volumes (`Mount.image`): resolving, leasing and
//! mounting them under the bundle (the pure parts and the mounts are in
//! `container::image_volumes`).

use std::collections::BTreeMap;

use k8s_cri::v1::ContainerConfig;

use crate::container::ContainerRecord;
use crate::container::image_volumes::{
    image_volumes, mount_image_volume, volumes_dir, with_staged_volumes,
};
use crate::error::NodeError;
use crate::pod::PodSandbox;

use super::Node;

/// What CreateContainer builds the spec from when the container has image
/// volumes: the config with the volumes staged, and their destinations.
pub(crate) struct StagedImageVolumes {
    pub config: ContainerConfig,
    pub destinations: Vec<String>,
}

impl Node {
    /// Resolves, leases and mounts the container's image volumes under its
    /// bundle. None when it has none. Blocking. What it mounted before a
    /// failure is undone by the caller's teardown (`unmount_all`, and the
    /// lease is released with the container's).
    pub(crate) fn stage_image_volumes(
        &self,
        pod: &PodSandbox,
        record: &ContainerRecord,
    ) -> Result<Option<StagedImageVolumes>, NodeError> {
        let volumes = image_volumes(&record.config)?;
        if volumes.is_empty() {
            return Ok(None);
        }
        if pod.user_namespace().is_some() {
            return Err(NodeError::Unsatisfiable(format!(
                "container {:?} mounts image volumes, which capcri does not yet support in a pod with its own user namespace (hostUsers: false); use hostUsers: true for this pod or another volume type",
                record.name()
            )));
        }
        let dir = volumes_dir(&record.bundle);
        std::fs::create_dir_all(&dir).map_err(|e| NodeError::io(&dir, e))?;
        let mut staged = BTreeMap::new();
        for v in &volumes {
            let image = self.images.resolve(&v.image).ok_or_else(|| NodeError::NotFound {
                kind: "image",
                id: format!(
                    "{} (image volume at {} of container {:?}; kubelet pulls it before CreateContainer, by hand: crictl pull {})",
                    v.image,
                    v.container_path,
                    record.name(),
                    v.image
                ),
            })?;
            let image = self.images.lease(&record.id, &image.id)?;
            let layers = self.images.layer_dirs(&image)?;
            let target = dir.join(v.index.to_string());
            std::fs::create_dir(&target).map_err(|e| NodeError::io(&target, e))?;
            mount_image_volume(&layers, &target)?;
            staged.insert(v.index, target);
        }
        Ok(Some(StagedImageVolumes {
            config: with_staged_volumes(&record.config, &staged),
            destinations: volumes.into_iter().map(|v| v.container_path).collect(),
        }))
    }
}
