//! A tower layer on the CRI gRPC server that times every call and records
//! it by method and gRPC code.
//!
//! A layer sees every call, including those refused before a handler runs
//! (an unknown method, a message too large) and errors built in the
//! handlers without the `to_status` mapping, which a wrapper at one error
//! site would miss. tonic answers a failed unary call with the status in the
//! response headers, and a successful one with `grpc-status: 0` in the
//! trailers after the message, so headers without a status mean OK.
//!
//! The time is taken when the response headers are ready. For unary calls
//! that is when the handler has finished. For the one server-streaming call,
//! GetContainerEvents, it is the time to set the stream up, not the
//! lifetime of the stream (which would fill the top bucket with hours).

use super::Metrics;
use super::labels::cri_method;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

#[derive(Clone)]
pub struct CriMetricsLayer {
    metrics: Metrics,
}

impl CriMetricsLayer {
    pub fn new(metrics: Metrics) -> CriMetricsLayer {
        CriMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for CriMetricsLayer {
    type Service = CriMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CriMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CriMetricsService<S> {
    inner: S,
    metrics: Metrics,
}

/// The gRPC code of a response whose headers are `headers`.
fn response_code(headers: &http::HeaderMap) -> tonic::Code {
    tonic::Status::from_header_map(headers)
        .map(|s| s.code())
        .unwrap_or(tonic::Code::Ok)
}

impl<S, B, RB> Service<http::Request<B>> for CriMetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = cri_method(req.uri().path());
        let metrics = self.metrics.clone();
        let start = Instant::now();
        let response = self.inner.call(req);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(r) => response_code(r.headers()),
                // The transport failed under tonic: no gRPC status was sent.
                Err(_) => tonic::Code::Unknown,
            };
            metrics.observe_cri_call(method, code, start.elapsed());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_in_headers_is_the_code_and_none_is_ok() {
        let mut h = http::HeaderMap::new();
        assert_eq!(response_code(&h), tonic::Code::Ok);
        h.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(response_code(&h), tonic::Code::NotFound);
        h.insert("grpc-status", http::HeaderValue::from_static("0"));
        assert_eq!(response_code(&h), tonic::Code::Ok);
    }
}
