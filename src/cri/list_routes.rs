//! The RuntimeService as served: k8s-cri's generated server, except for
//! the calls kubelet makes all the time, whose answers are written as
//! protobuf bytes: ListPodSandbox and ListContainers (`list_wire`), and
//! the four stats calls (`stats_wire`). The generated server only sends
//! prost messages, so these paths are routed here first, through the same
//! tonic unary machinery (framing, max message sizes, status codes) with a
//! codec that sends the bytes as they are.

use super::runtime_service::CriRuntimeService;
use super::to_status;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstDecoder;

const LIST_POD_SANDBOX: &str = "/runtime.v1.RuntimeService/ListPodSandbox";
const LIST_CONTAINERS: &str = "/runtime.v1.RuntimeService/ListContainers";
const CONTAINER_STATS: &str = "/runtime.v1.RuntimeService/ContainerStats";
const LIST_CONTAINER_STATS: &str = "/runtime.v1.RuntimeService/ListContainerStats";
const POD_SANDBOX_STATS: &str = "/runtime.v1.RuntimeService/PodSandboxStats";
const LIST_POD_SANDBOX_STATS: &str = "/runtime.v1.RuntimeService/ListPodSandboxStats";

/// The runtime service with its list and stats calls answered from
/// `list_wire` and `stats_wire`.
#[derive(Clone)]
pub struct RuntimeRoutes {
    generated: RuntimeServiceServer<CriRuntimeService>,
    service: Arc<CriRuntimeService>,
    max_message_bytes: usize,
}

impl RuntimeRoutes {
    /// `max_message_bytes` bounds requests and answers of every call.
    pub fn new(service: CriRuntimeService, max_message_bytes: usize) -> Self {
        let service = Arc::new(service);
        let generated = RuntimeServiceServer::from_arc(service.clone())
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        RuntimeRoutes {
            generated,
            service,
            max_message_bytes,
        }
    }

    /// Serves `req` as a unary call of request type `Req` whose answer
    /// `answer` writes as bytes.
    fn encoded<B, Req, F, Fut>(&self, req: http::Request<B>, answer: F) -> RouteFuture
    where
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
        Req: prost::Message + Default + Send + 'static,
        F: Fn(Arc<CriRuntimeService>, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<bytes::Bytes, Status>> + Send + 'static,
    {
        let mut grpc = Grpc::new(EncodedCodec::<Req>(PhantomData)).apply_max_message_size_config(
            Some(self.max_message_bytes),
            Some(self.max_message_bytes),
        );
        let service = self.service.clone();
        let answer = Arc::new(answer);
        let method = tower::service_fn(move |r: Request<Req>| {
            let answered = answer(service.clone(), r.into_inner());
            async move { answered.await.map(|bytes| Response::new(Encoded(bytes))) }
        });
        Box::pin(async move { Ok(grpc.unary(method, req).await) })
    }
}

type RouteFuture = BoxFuture<http::Response<tonic::body::Body>, Infallible>;

impl NamedService for RuntimeRoutes {
    const NAME: &'static str = <RuntimeServiceServer<CriRuntimeService> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for RuntimeRoutes
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            LIST_POD_SANDBOX => self.encoded(req, |s, r: cri::ListPodSandboxRequest| async move {
                Ok(s.list_pod_sandbox_encoded(r.filter.as_ref()))
            }),
            LIST_CONTAINERS => self.encoded(req, |s, r: cri::ListContainersRequest| async move {
                s.list_containers_encoded(r.filter.as_ref())
                    .await
                    .map_err(to_status)
            }),
            CONTAINER_STATS => self.encoded(req, |s, r: cri::ContainerStatsRequest| async move {
                Ok(s.container_stats_encoded(&r.container_id).await?.into())
            }),
            LIST_CONTAINER_STATS => {
                self.encoded(req, |s, r: cri::ListContainerStatsRequest| async move {
                    Ok(s.list_container_stats_encoded(r.filter.as_ref())
                        .await
                        .into())
                })
            }
            POD_SANDBOX_STATS => {
                self.encoded(req, |s, r: cri::PodSandboxStatsRequest| async move {
                    Ok(s.pod_sandbox_stats_encoded(&r.pod_sandbox_id).await?.into())
                })
            }
            LIST_POD_SANDBOX_STATS => {
                self.encoded(req, |s, r: cri::ListPodSandboxStatsRequest| async move {
                    Ok(s.list_pod_sandbox_stats_encoded(r.filter.as_ref())
                        .await
                        .into())
                })
            }
            _ => self.generated.call(req),
        }
    }
}

/// An answer already encoded as a protobuf message (shared: a kept
/// ListContainers answer is not copied to be sent again).
pub struct Encoded(bytes::Bytes);

/// Requests decoded by prost like the generated server's; answers sent as
/// the [`Encoded`] bytes they are.
pub struct EncodedCodec<Req>(PhantomData<fn() -> Req>);

impl<Req> Codec for EncodedCodec<Req>
where
    Req: prost::Message + Default + Send + 'static,
{
    type Encode = Encoded;
    type Decode = Req;
    type Encoder = EncodedEncoder;
    type Decoder = ProstDecoder<Req>;

    fn encoder(&mut self) -> EncodedEncoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<Req> {
        ProstDecoder::default()
    }
}

pub struct EncodedEncoder;

impl Encoder for EncodedEncoder {
    type Item = Encoded;
    type Error = Status;

    fn encode(&mut self, item: Encoded, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use bytes::BufMut;
        dst.reserve(item.0.len());
        dst.put_slice(&item.0);
        Ok(())
    }
}
