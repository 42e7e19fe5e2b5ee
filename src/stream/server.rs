//! HTTP side of the streaming server: token URLs, routing, and the
//! SPDY/WebSocket upgrade handshakes (kubelet's `streaming.Server`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use super::http::{HttpResponse, header_list, plain};
use super::session::{CommandKind, CommandProtocol, CommandTarget, negotiate};
use super::token::TokenCache;
use super::{Backend, StreamBackend, StreamError, spdy_transport, ws};

/// Header carrying the remotecommand/portforward protocol offer and answer.
pub const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";
/// Header listing what the server accepts when negotiation fails.
pub const ACCEPTED_PROTOCOLS_HEADER: &str = "X-Accepted-Stream-Protocol-Versions";
/// The SPDY port-forward protocol name.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// Settings of the streaming server; defaults are kubelet's.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub addr: SocketAddr,
    /// The server has no authentication of its own beyond the token, so it
    /// listens on loopback unless the operator decides otherwise.
    pub allow_non_loopback: bool,
    /// How long a URL stays usable (kubelet: 1 minute).
    pub token_ttl: Duration,
    /// How long a client may take to open its streams (kubelet: 30 s).
    pub stream_creation_timeout: Duration,
}

impl StreamConfig {
    pub fn new(addr: SocketAddr) -> StreamConfig {
        StreamConfig {
            addr,
            allow_non_loopback: false,
            token_ttl: Duration::from_secs(60),
            stream_creation_timeout: Duration::from_secs(30),
        }
    }
}

/// A request parked behind a token.
#[derive(Debug, Clone)]
enum CachedRequest {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

struct Shared {
    backend: Backend,
    cache: Mutex<TokenCache<CachedRequest>>,
    config: StreamConfig,
}

/// Stops accepting connections when the last handle is dropped.
struct AcceptGuard(AbortHandle);

impl Drop for AcceptGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The running streaming server; cheap to clone, Send + Sync.
#[derive(Clone)]
pub struct StreamServer {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    _accept: Arc<AcceptGuard>,
}

impl StreamServer {
    /// Binds on `addr` (loopback only) with kubelet's default timeouts.
    pub async fn bind(
        addr: SocketAddr,
        backend: Arc<dyn StreamBackend>,
    ) -> Result<StreamServer, StreamError> {
        StreamServer::bind_with(StreamConfig::new(addr), backend).await
    }

    pub async fn bind_with(
        config: StreamConfig,
        backend: Arc<dyn StreamBackend>,
    ) -> Result<StreamServer, StreamError> {
        if !config.addr.ip().is_loopback() && !config.allow_non_loopback {
            return Err(StreamError::NotLoopback(config.addr));
        }
        let listener =
            TcpListener::bind(config.addr)
                .await
                .map_err(|source| StreamError::Bind {
                    addr: config.addr,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| StreamError::Bind {
            addr: config.addr,
            source,
        })?;
        let shared = Arc::new(Shared {
            backend,
            cache: Mutex::new(TokenCache::new(config.token_ttl)),
            config,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        tracing::info!(%local_addr, "streaming server listening");
        Ok(StreamServer {
            shared,
            local_addr,
            _accept: Arc::new(AcceptGuard(accept.abort_handle())),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// URL for an ExecRequest; validated as kubelet's `GetExec` does.
    pub fn exec_url(&self, req: ExecRequest) -> Result<String, StreamError> {
        let invalid = |reason: &str| StreamError::InvalidRequest {
            rpc: "Exec",
            reason: reason.to_string(),
        };
        if req.container_id.is_empty() {
            return Err(invalid(
                "container_id is empty; name the container to exec in",
            ));
        }
        if req.cmd.is_empty() {
            return Err(invalid("cmd is empty; give the command to run"));
        }
        check_std_streams("Exec", req.tty, req.stdin, req.stdout, req.stderr)?;
        self.url("exec", CachedRequest::Exec(req))
    }

    /// URL for an AttachRequest.
    pub fn attach_url(&self, req: AttachRequest) -> Result<String, StreamError> {
        if req.container_id.is_empty() {
            return Err(StreamError::InvalidRequest {
                rpc: "Attach",
                reason: "container_id is empty; name the container to attach to".into(),
            });
        }
        check_std_streams("Attach", req.tty, req.stdin, req.stdout, req.stderr)?;
        self.url("attach", CachedRequest::Attach(req))
    }

    /// URL for a PortForwardRequest.
    pub fn port_forward_url(&self, req: PortForwardRequest) -> Result<String, StreamError> {
        if req.pod_sandbox_id.is_empty() {
            return Err(StreamError::InvalidRequest {
                rpc: "PortForward",
                reason: "pod_sandbox_id is empty; name the pod to forward to".into(),
            });
        }
        if let Some(bad) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(StreamError::InvalidRequest {
                rpc: "PortForward",
                reason: format!("port {bad} is outside 1-65535"),
            });
        }
        self.url("portforward", CachedRequest::PortForward(req))
    }

    fn url(&self, kind: &str, req: CachedRequest) -> Result<String, StreamError> {
        let token = {
            let mut cache = self
                .shared
                .cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            cache.insert(req, Instant::now())
        }
        .ok_or(StreamError::TooManyInFlight)?;
        Ok(format!("http://{}/{kind}/{token}", self.local_addr))
    }
}

/// Kubelet's request validation: a tty has one output stream, and a
/// session without any stream has nothing to do.
fn check_std_streams(
    rpc: &'static str,
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<(), StreamError> {
    if tty && stderr {
        return Err(StreamError::InvalidRequest {
            rpc,
            reason: "tty and stderr cannot both be true; a terminal merges stderr into stdout"
                .into(),
        });
    }
    if !stdin && !stdout && !stderr {
        return Err(StreamError::InvalidRequest {
            rpc,
            reason: "one of stdin, stdout, or stderr must be set".into(),
        });
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "streaming server accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "streaming HTTP connection ended with error");
            }
        });
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<HttpResponse, Infallible> {
    Ok(route(shared, req))
}

fn route(shared: Arc<Shared>, req: Request<Incoming>) -> HttpResponse {
    if req.method() != Method::GET && req.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST\n");
    }
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (kind, token) = match (parts.next(), parts.next()) {
        (Some(kind), Some(token)) if !token.is_empty() && !token.contains('/') => (kind, token),
        _ => return plain(StatusCode::NOT_FOUND, "404 page not found\n"),
    };
    if !matches!(kind, "exec" | "attach" | "portforward") {
        return plain(StatusCode::NOT_FOUND, "404 page not found\n");
    }
    let cached = {
        let mut cache = shared
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.consume(token, Instant::now())
    };
    let timeout = shared.config.stream_creation_timeout;
    let backend = shared.backend.clone();
    match (kind, cached) {
        ("exec", Some(CachedRequest::Exec(r))) => command(
            req,
            backend,
            timeout,
            CommandTarget {
                container_id: r.container_id,
                kind: CommandKind::Exec { cmd: r.cmd },
                tty: r.tty,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
            },
        ),
        ("attach", Some(CachedRequest::Attach(r))) => command(
            req,
            backend,
            timeout,
            CommandTarget {
                container_id: r.container_id,
                kind: CommandKind::Attach,
                tty: r.tty,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
            },
        ),
        ("portforward", Some(CachedRequest::PortForward(r))) => {
            port_forward(req, backend, timeout, r)
        }
        _ => {
            tracing::info!(path = %path, "streaming request with unknown, used or expired token");
            plain(StatusCode::NOT_FOUND, "404 page not found\n")
        }
    }
}

fn command(
    req: Request<Incoming>,
    backend: Backend,
    timeout: Duration,
    target: CommandTarget,
) -> HttpResponse {
    if ws::is_websocket(&req) {
        return ws::serve_command(req, backend, target);
    }
    let (resp, protocol, on_upgrade) = match spdy_upgrade(req, &CommandProtocol::SPDY_NAMES) {
        Ok(ok) => ok,
        Err(resp) => return *resp,
    };
    let Some(protocol) = CommandProtocol::from_name(&protocol) else {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "negotiated unknown protocol\n",
        );
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                spdy_transport::serve_command(
                    TokioIo::new(upgraded),
                    backend,
                    target,
                    protocol,
                    timeout,
                )
                .await
            }
            Err(e) => {
                tracing::warn!(container_id = %target.container_id, error = %e, "SPDY upgrade failed")
            }
        }
    });
    resp
}

fn port_forward(
    req: Request<Incoming>,
    backend: Backend,
    timeout: Duration,
    pf: PortForwardRequest,
) -> HttpResponse {
    if ws::is_websocket(&req) {
        return ws::serve_port_forward(req, backend, pf);
    }
    let (resp, _protocol, on_upgrade) = match spdy_upgrade(req, &[PORT_FORWARD_PROTOCOL]) {
        Ok(ok) => ok,
        Err(resp) => return *resp,
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                spdy_transport::serve_port_forward(
                    TokioIo::new(upgraded),
                    backend,
                    pf.pod_sandbox_id,
                    timeout,
                )
                .await
            }
            Err(e) => {
                tracing::warn!(pod_id = %pf.pod_sandbox_id, error = %e, "SPDY upgrade failed")
            }
        }
    });
    resp
}

/// The checks and answer of `httpstream.Handshake` and the SPDY response
/// upgrader: negotiate the protocol (403 on no overlap), require the
/// `Connection: Upgrade` / `Upgrade: SPDY/3.1` pair (400), answer 101.
fn spdy_upgrade(
    mut req: Request<Incoming>,
    supported: &[&'static str],
) -> Result<(HttpResponse, String, hyper::upgrade::OnUpgrade), Box<HttpResponse>> {
    let offered = header_list(&req, PROTOCOL_HEADER);
    let chosen = if offered.is_empty() {
        String::new()
    } else {
        let offered_refs: Vec<&str> = offered.iter().map(String::as_str).collect();
        match negotiate(&offered_refs, supported) {
            Some(p) => p.to_string(),
            None => {
                let mut resp = plain(
                    StatusCode::FORBIDDEN,
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}\n"
                    ),
                );
                for p in supported {
                    resp.headers_mut()
                        .append(ACCEPTED_PROTOCOLS_HEADER, HeaderValue::from_static(p));
                }
                return Err(Box::new(resp));
            }
        }
    };
    let connection_upgrade = header_list(&req, "connection")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("upgrade"));
    let spdy = header_list(&req, "upgrade")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("SPDY/3.1"));
    if !connection_upgrade || !spdy {
        return Err(Box::new(plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request: expected Connection: Upgrade and Upgrade: SPDY/3.1 (or a WebSocket upgrade)\n",
        )));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    if let Ok(v) = HeaderValue::from_str(&chosen)
        && !chosen.is_empty()
    {
        headers.insert(PROTOCOL_HEADER, v);
    }
    Ok((resp, chosen, on_upgrade))
}
