//! The CRI gRPC surface: request validation, mapping to domain calls and
//! mapping domain errors to gRPC status codes. No business logic here.
