//! SPDY/3.1 as kubelet's and crictl's streaming client speaks it (Go's
//! `moby/spdystream` under `k8s.io/apimachinery/pkg/util/httpstream/spdy`).
//!
//! `frame` and `header` are pure codecs (also used by the tests' client);
//! `conn` runs a server-side connection over an upgraded HTTP/1.1 socket and
//! hands each client-opened stream out as a pair of in-memory pipes.

pub mod conn;
pub mod frame;
pub mod header;

pub use conn::{IncomingStream, SpdyConnection};
pub use frame::Frame;
pub use header::{HeaderCodec, Headers};

/// What can go wrong on a SPDY connection; every variant ends the connection
/// with a GOAWAY, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error(
        "SPDY frame of {len} bytes exceeds the limit of {max} bytes; the client must split its writes"
    )]
    FrameTooLarge { len: usize, max: usize },
    #[error("SPDY control frame with version {0}; only SPDY/3 (SPDY/3.1 upgrade) is supported")]
    UnsupportedVersion(u16),
    #[error(
        "SPDY control frame of type {frame_type} is too short ({len} bytes); the peer is broken"
    )]
    ShortControlFrame { frame_type: u16, len: usize },
    #[error("SPDY control frame type {0} cannot be sent")]
    UnknownFrameType(u16),
    #[error("malformed SPDY header block: {0}")]
    BadHeaderBlock(&'static str),
    #[error("SPDY header compression failed: {0}")]
    Zlib(String),
    #[error("SPDY stream id {0} is invalid: client streams must be odd and increasing")]
    InvalidStreamId(u32),
    #[error("SPDY connection I/O failed: {0}")]
    Io(#[from] std::io::Error),
}
