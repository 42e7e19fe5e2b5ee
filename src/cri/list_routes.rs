//! The RuntimeService as served: k8s-cri's generated server, except for
//! ListPodSandbox and ListContainers, whose answers `list_wire` writes as
//! protobuf bytes. The generated server only sends prost messages, so
//! these two paths are routed here first, through the same tonic unary
//! machinery (framing, max message sizes, status codes) with a codec that
//! sends the bytes as they are.

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

/// The runtime service with its two list calls answered from `list_wire`.
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

    fn grpc<Req>(&self) -> Grpc<EncodedCodec<Req>>
    where
        Req: prost::Message + Default + Send + 'static,
    {
        Grpc::new(EncodedCodec(PhantomData)).apply_max_message_size_config(
            Some(self.max_message_bytes),
            Some(self.max_message_bytes),
        )
    }
}

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
        let service = self.service.clone();
        match req.uri().path() {
            LIST_POD_SANDBOX => {
                let mut grpc = self.grpc::<cri::ListPodSandboxRequest>();
                let method = tower::service_fn(move |r: Request<cri::ListPodSandboxRequest>| {
                    let service = service.clone();
                    async move {
                        let filter = r.into_inner().filter;
                        let bytes = service.list_pod_sandbox_encoded(filter.as_ref());
                        Ok::<_, Status>(Response::new(Encoded(bytes.into())))
                    }
                });
                Box::pin(async move { Ok(grpc.unary(method, req).await) })
            }
            LIST_CONTAINERS => {
                let mut grpc = self.grpc::<cri::ListContainersRequest>();
                let method = tower::service_fn(move |r: Request<cri::ListContainersRequest>| {
                    let service = service.clone();
                    async move {
                        let filter = r.into_inner().filter;
                        let bytes = service
                            .list_containers_encoded(filter.as_ref())
                            .await
                            .map_err(to_status)?;
                        Ok::<_, Status>(Response::new(Encoded(bytes)))
                    }
                });
                Box::pin(async move { Ok(grpc.unary(method, req).await) })
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
