//! The CRI gRPC surface: request validation, mapping to domain calls and
//! mapping domain errors to gRPC status codes. No business logic here.

mod convert;
mod events;
mod image_service;
mod list_cache;
mod list_routes;
mod list_wire;
mod pod_metrics;
mod runtime_service;
mod stats_wire;
mod status;
#[cfg(test)]
mod test_records;

pub use image_service::CriImageService;
pub use list_routes::RuntimeRoutes;
pub use runtime_service::CriRuntimeService;
pub use status::to_status;

/// The CRI API version capcri implements.
pub const CRI_API_VERSION: &str = "v1";
pub const RUNTIME_NAME: &str = "capcri";
