//! `GET /metrics` over HTTP/1 (hyper, already capcri's HTTP stack for the
//! streaming server): the OpenMetrics text of the registry, after the node's
//! container states were refreshed from the pod monitors.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a scrape waits for the pod monitors before answering with the
/// states last seen: a hung monitor must not hang the scrape.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// Brings what the collectors read up to date before each scrape.
pub type Refresh = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "cannot listen for metrics on {addr}: {source}; pick a free address with --metrics-address or leave it unset"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

struct Scrape {
    registry: Registry,
    refresh: Refresh,
}

/// The bound metrics endpoint; [`MetricsServer::serve`] runs it.
pub struct MetricsServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    scrape: Arc<Scrape>,
}

impl MetricsServer {
    pub async fn bind(
        addr: SocketAddr,
        registry: Registry,
        refresh: Refresh,
    ) -> Result<MetricsServer, MetricsError> {
        let bind_err = |source| MetricsError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        Ok(MetricsServer {
            listener,
            local_addr,
            scrape: Arc::new(Scrape { registry, refresh }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes; scrapes in flight then finish on
    /// their own tasks.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(address = %self.local_addr, "metrics served at GET /metrics");
        tokio::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                _ = &mut shutdown => return,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "metrics server: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let scrape = self.scrape.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| respond(req, scrape.clone()));
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "metrics connection ended with an error");
                }
            });
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn respond(
    req: Request<Incoming>,
    scrape: Arc<Scrape>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(route(req.method(), req.uri().path(), &scrape).await)
}

async fn route(method: &Method, path: &str, scrape: &Scrape) -> Response<Full<Bytes>> {
    if path != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found: capcri serves its metrics at GET /metrics\n",
        );
    }
    if method != Method::GET {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET /metrics\n",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    if tokio::time::timeout(REFRESH_TIMEOUT, (scrape.refresh)())
        .await
        .is_err()
    {
        tracing::warn!(
            "metrics: pod monitors did not answer in time; container states are those last seen"
        );
    }
    match super::encode(&scrape.registry) {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics: encoding failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics encoding failed; see capcri's log\n",
            )
        }
    }
}
