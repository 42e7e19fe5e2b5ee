//! The one place where domain errors become gRPC status codes.

use crate::image::ImageError;
use crate::monitor_api::RuntimeError;
use crate::node::NodeError;
use crate::spec::SpecError;
use tonic::{Code, Status};

pub fn to_status(err: NodeError) -> Status {
    let code = match &err {
        NodeError::NotFound { .. } => Code::NotFound,
        NodeError::AlreadyExists { .. } => Code::AlreadyExists,
        NodeError::InvalidArgument(_) => Code::InvalidArgument,
        NodeError::Unsatisfiable(_)
        | NodeError::BadImageContent { .. }
        | NodeError::WrongState(_)
        | NodeError::StartFailed { .. }
        | NodeError::PolicyDenied { .. } => Code::FailedPrecondition,
        NodeError::Spec(e) => spec_code(e),
        NodeError::Image(e) => image_code(e),
        NodeError::Runtime(e) => runtime_code(e),
        NodeError::Network(crate::network::CniError::InvalidRequest { .. }) => {
            Code::InvalidArgument
        }
        NodeError::Io { .. }
        | NodeError::Host(_)
        | NodeError::Store(_)
        | NodeError::Network(_)
        | NodeError::Internal(_) => Code::Internal,
    };
    // A failed call is logged where it is answered, inside the call's span
    // (pod and container ids), so the daemon log explains every error.
    tracing::warn!(code = ?code, error = %err, "request failed");
    Status::new(code, err.to_string())
}

fn spec_code(_e: &SpecError) -> Code {
    // Every spec error is a property of the request (or of the image it
    // names), never a transient failure: retrying the same request fails again.
    Code::InvalidArgument
}

fn image_code(e: &ImageError) -> Code {
    match e {
        ImageError::NotFound { .. } => Code::NotFound,
        ImageError::InvalidReference { .. } => Code::InvalidArgument,
        ImageError::Unauthorized { .. } => Code::PermissionDenied,
        ImageError::Registry { .. } => Code::Unavailable,
        ImageError::DigestMismatch { .. }
        | ImageError::HostileLayer { .. }
        | ImageError::InvalidUser { .. }
        | ImageError::DeviceNodeNotPermitted { .. }
        | ImageError::TooLarge { .. }
        | ImageError::BlobTooLarge { .. }
        | ImageError::ManifestTooLarge { .. }
        | ImageError::BodyOverDeclared { .. }
        | ImageError::Unsupported { .. } => Code::FailedPrecondition,
        _ => Code::Internal,
    }
}

fn runtime_code(e: &RuntimeError) -> Code {
    match e {
        RuntimeError::NotFound { .. } => Code::NotFound,
        RuntimeError::MonitorUnreachable { .. } => Code::Unavailable,
        _ => Code::Internal,
    }
}
