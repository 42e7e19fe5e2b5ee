//! The plain HTTP pieces both upgrade paths (SPDY in `server`, WebSocket
//! in `ws`) answer with.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;

pub(crate) type HttpResponse = Response<Full<Bytes>>;

pub(crate) fn plain(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    let mut resp = Response::new(Full::new(Bytes::from(message.into())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Header values of `name`, split on commas, trimmed, non-empty.
pub(crate) fn header_list(req: &Request<Incoming>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}
