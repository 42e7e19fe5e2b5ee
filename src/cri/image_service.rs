//! runtime.v1 ImageService.

use super::{convert, to_status};
use crate::image::RegistryAuth;
use crate::node::{Node, NodeError};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::{Instrument, info_span};

pub struct CriImageService {
    node: Arc<Node>,
}

impl CriImageService {
    pub fn new(node: Arc<Node>) -> Self {
        CriImageService { node }
    }
}

type R<T> = Result<Response<T>, Status>;

fn image_name(spec: Option<&cri::ImageSpec>) -> Result<String, Status> {
    match spec.map(|s| s.image.trim()) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(Status::invalid_argument(
            "no image given: set image.image to a reference or id",
        )),
    }
}

#[tonic::async_trait]
impl ImageService for CriImageService {
    async fn list_images(&self, r: Request<cri::ListImagesRequest>) -> R<cri::ListImagesResponse> {
        let filter = r
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .unwrap_or_default();
        let _span = info_span!("ListImages").entered();
        let images = if filter.is_empty() {
            self.node.images().list()
        } else {
            self.node.images().resolve(&filter).into_iter().collect()
        };
        Ok(Response::new(cri::ListImagesResponse {
            images: images.iter().map(convert::image).collect(),
        }))
    }

    async fn image_status(
        &self,
        r: Request<cri::ImageStatusRequest>,
    ) -> R<cri::ImageStatusResponse> {
        let req = r.into_inner();
        let name = image_name(req.image.as_ref())?;
        let _span = info_span!("ImageStatus", image = %name).entered();
        // CRI: an absent image is a response without image, not an error.
        let Some(image) = self.node.images().resolve(&name) else {
            return Ok(Response::new(cri::ImageStatusResponse::default()));
        };
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            let value = serde_json::json!({ "imageSpec": image.config, "diffIDs": image.diff_ids });
            info.insert("info".to_string(), value.to_string());
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: Some(convert::image(&image)),
            info,
        }))
    }

    async fn pull_image(&self, r: Request<cri::PullImageRequest>) -> R<cri::PullImageResponse> {
        let req = r.into_inner();
        let name = image_name(req.image.as_ref())?;
        let auth = req.auth.map(|a| RegistryAuth {
            username: a.username,
            password: a.password,
            auth: a.auth,
            identity_token: a.identity_token,
            registry_token: a.registry_token,
        });
        let record = self
            .node
            .pull_image(&name, auth.as_ref())
            .instrument(info_span!("PullImage", image = %name))
            .await;
        // A pull's buffers are the daemon's biggest allocations; hand what
        // they leave free back to the kernel (off the runtime's workers).
        tokio::task::spawn_blocking(crate::malloc_tuning::trim);
        let record = record.map_err(to_status)?;
        Ok(Response::new(cri::PullImageResponse {
            image_ref: record.id,
        }))
    }

    async fn remove_image(
        &self,
        r: Request<cri::RemoveImageRequest>,
    ) -> R<cri::RemoveImageResponse> {
        let name = image_name(r.into_inner().image.as_ref())?;
        let _span = info_span!("RemoveImage", image = %name).entered();
        // Removing an absent image succeeds (CRI idempotence).
        self.node
            .images()
            .remove(&name)
            .map_err(|e| to_status(NodeError::Image(e)))?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _r: Request<cri::ImageFsInfoRequest>,
    ) -> R<cri::ImageFsInfoResponse> {
        let _span = info_span!("ImageFsInfo").entered();
        let usage = self
            .node
            .images()
            .fs_usage()
            .map_err(|e| to_status(NodeError::Image(e)))?;
        let fs = cri::FilesystemUsage {
            timestamp: usage.timestamp_nanos,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: usage.mountpoint.display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value {
                value: usage.used_bytes,
            }),
            inodes_used: Some(cri::UInt64Value {
                value: usage.inodes_used,
            }),
        };
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![fs.clone()],
            container_filesystems: vec![fs],
        }))
    }
}
