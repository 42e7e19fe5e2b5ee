//! The daemon ⇄ monitor protocol: one request, one response per frame; a
//! frame is a 4-byte big-endian length followed by that many bytes of JSON.
//! Pure encoding/decoding, no I/O, so it is unit tested without a monitor.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::{ContainerRuntimeState, CreateContainer, ExecOutput, ExecSpec};

/// Name of the monitor's socket inside the pod directory.
pub(crate) const SOCKET_NAME: &str = "monitor.sock";

/// Exec output is captured in memory; 64 MiB bounds what one frame may ask
/// the reader to allocate, so a corrupt length cannot exhaust memory.
pub const MAX_FRAME_LEN: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Create(CreateContainer),
    Start {
        id: String,
        /// Answer with the container's state after the start
        /// ([`Response::Started`], or [`Response::State`] when it was not
        /// in the created state and nothing was done) instead of `Ok`: one
        /// round trip for StartContainer instead of three. Absent in the
        /// requests of a daemon from before it, so such a daemon still gets
        /// `Ok`; a monitor from before it ignores the field and answers
        /// `Ok`, and the daemon then asks for the state itself.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reply_state: bool,
    },
    Stop {
        id: String,
        timeout: Duration,
        signal: i32,
    },
    Kill {
        id: String,
        signal: i32,
    },
    Delete {
        id: String,
    },
    State {
        id: String,
    },
    /// Reopen the container's CRI log file (kubelet's log rotation).
    ReopenLog {
        id: String,
    },
    ExecSync {
        id: String,
        spec: ExecSpec,
    },
    /// An interactive exec: answered with [`Response::Streams`], whose frame
    /// carries the process's descriptors (SCM_RIGHTS), then, when the
    /// process ends, with [`Response::Exec`] holding only the exit code.
    ExecStream {
        id: String,
        spec: ExecSpec,
        stdin: bool,
        tty: bool,
    },
    /// The container's live output (and its stdin, if it has one and
    /// `stdin` is asked), as descriptors: answered with `Streams`.
    Attach {
        id: String,
        stdin: bool,
    },
    Shutdown,
    /// Subscribe this connection to container exits: answered with
    /// [`Response::Watching`], then one [`Response::Exited`] per exit for as
    /// long as the connection stays open (the daemon's event stream).
    WatchExits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireErrorKind {
    NotFound,
    AlreadyExists,
    Libcontainer,
    ExecFailed,
    InvalidRequest,
    Io,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub kind: WireErrorKind,
    pub container: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Pong {
        pid: u32,
    },
    Created {
        pid: u32,
    },
    /// The answer to a `Create` with `build_after_answer`: the request is
    /// checked and the build runs next (see [`CreateContainer`]).
    Accepted,
    State(ContainerRuntimeState),
    /// The answer to a `Start` with `reply_state`: the container was
    /// started, and this is its state right after (running, or exited if
    /// its command failed at once).
    Started(ContainerRuntimeState),
    Exec(ExecOutput),
    /// Descriptors travel with this frame, in the order of `MonitorClient::exec_stream`:
    /// with `tty` the terminal's master side, then (attach only) the read
    /// end of the output the monitor fans out; otherwise the stdin write
    /// end (if asked), the stdout and the stderr read ends.
    Streams {
        pid: u32,
        tty: bool,
        stdin: bool,
    },
    Error(WireError),
    Watching,
    /// A container of the pod has exited (pushed to watchers).
    Exited {
        id: String,
        exit_code: i32,
    },
}

/// Serialize `msg` into one frame.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, String> {
    let body = serde_json::to_vec(msg).map_err(|e| format!("cannot encode message: {e}"))?;
    if body.len() > MAX_FRAME_LEN {
        return Err(format!(
            "message of {} bytes exceeds the frame limit of {MAX_FRAME_LEN}",
            body.len()
        ));
    }
    let len = u32::try_from(body.len()).map_err(|_| "message too large".to_string())?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Outcome of looking at the start of a receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<T> {
    /// Not a whole frame yet: read more.
    Incomplete,
    /// A frame of `consumed` bytes was taken from the buffer; its body did or
    /// did not parse. A bad body does not desynchronise the stream.
    Frame {
        consumed: usize,
        message: Result<T, String>,
    },
    /// The length prefix itself is unusable; the connection must be closed.
    Fatal(String),
}

/// Decode the first frame of `buf`, if complete.
pub fn decode_frame<T: for<'de> Deserialize<'de>>(buf: &[u8]) -> Decoded<T> {
    if buf.len() < 4 {
        return Decoded::Incomplete;
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME_LEN {
        return Decoded::Fatal(format!(
            "frame length {len} exceeds the limit of {MAX_FRAME_LEN} bytes"
        ));
    }
    if buf.len() < 4 + len {
        return Decoded::Incomplete;
    }
    let message =
        serde_json::from_slice(&buf[4..4 + len]).map_err(|e| format!("malformed message: {e}"));
    Decoded::Frame {
        consumed: 4 + len,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor_api::types::RuntimeStatus;

    fn roundtrip(req: Request) {
        let frame = encode_frame(&req).unwrap();
        match decode_frame::<Request>(&frame) {
            Decoded::Frame { consumed, message } => {
                assert_eq!(consumed, frame.len());
                assert_eq!(message.unwrap(), req);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn requests_roundtrip() {
        roundtrip(Request::Ping);
        roundtrip(Request::Shutdown);
        roundtrip(Request::ReopenLog { id: "c1".into() });
        roundtrip(Request::Stop {
            id: "c1".into(),
            timeout: Duration::from_millis(1500),
            signal: 15,
        });
        roundtrip(Request::ExecSync {
            id: "c1".into(),
            spec: ExecSpec {
                args: vec!["id".into(), "-u".into()],
                env: vec!["A=b".into()],
                cwd: Some("/".into()),
                uid: 1000,
                gid: 1000,
                additional_gids: vec![5],
                timeout: None,
            },
        });
        roundtrip(Request::Create(CreateContainer {
            id: "c".into(),
            bundle: "/b".into(),
            log_path: None,
            stdin: false,
            stdin_once: false,
            tty: false,
            exec_path: crate::monitor_api::ExecPath::Dmz,
            build_after_answer: true,
        }));
    }

    /// A daemon built before the exec path existed sends no `exec_path`:
    /// the monitor must still understand it, as `direct`.
    #[test]
    fn create_without_exec_path_means_direct() {
        let json =
            r#"{"op":"create","id":"c","bundle":"/b","log_path":null,"stdin":false,"tty":false}"#;
        let req: Request = serde_json::from_str(json).unwrap();
        match req {
            Request::Create(c) => {
                assert_eq!(c.exec_path, crate::monitor_api::ExecPath::Direct);
                // Nor `build_after_answer`: answered after the build.
                assert!(!c.build_after_answer);
            }
            other => panic!("unexpected {other:?}"),
        }
        let json = r#"{"op":"create","id":"c","bundle":"/b","log_path":null,"stdin":false,"tty":false,"exec_path":"dmz"}"#;
        let req: Request = serde_json::from_str(json).unwrap();
        assert!(
            matches!(req, Request::Create(c) if c.exec_path == crate::monitor_api::ExecPath::Dmz)
        );
    }

    #[test]
    fn a_start_asks_for_its_state_without_breaking_either_side_of_an_upgrade() {
        roundtrip(Request::Start {
            id: "c1".into(),
            reply_state: true,
        });
        // A daemon from before the field: the monitor answers Ok as then.
        let old: Request = serde_json::from_str(r#"{"op":"start","id":"c1"}"#).unwrap();
        assert_eq!(
            old,
            Request::Start {
                id: "c1".into(),
                reply_state: false
            }
        );
        // ... and a request without it is written as before.
        let body = serde_json::to_string(&Request::Start {
            id: "c1".into(),
            reply_state: false,
        })
        .unwrap();
        assert_eq!(body, r#"{"op":"start","id":"c1"}"#);
        let started = Response::Started(ContainerRuntimeState {
            status: RuntimeStatus::Running,
            pid: Some(7),
            exit_code: None,
            started_at: Some(3),
            finished_at: None,
            reason: None,
            message: None,
        });
        let frame = encode_frame(&started).unwrap();
        assert!(matches!(
            decode_frame::<Response>(&frame),
            Decoded::Frame { message: Ok(r), .. } if r == started
        ));
    }

    #[test]
    fn response_roundtrip() {
        let state = Response::State(ContainerRuntimeState {
            status: RuntimeStatus::Exited,
            pid: Some(4),
            exit_code: Some(143),
            started_at: Some(1),
            finished_at: Some(2),
            reason: Some("Error".into()),
            message: None,
        });
        for resp in [state, Response::Accepted, Response::Created { pid: 7 }] {
            let frame = encode_frame(&resp).unwrap();
            assert_eq!(
                decode_frame::<Response>(&frame),
                Decoded::Frame {
                    consumed: frame.len(),
                    message: Ok(resp)
                }
            );
        }
    }

    #[test]
    fn exec_output_bytes_travel_as_hex() {
        let resp = Response::Exec(ExecOutput {
            stdout: vec![0, 0xff, b'\n'],
            stderr: b"err".to_vec(),
            exit_code: 2,
            timed_out: false,
        });
        let frame = encode_frame(&resp).unwrap();
        let body = std::str::from_utf8(&frame[4..]).unwrap();
        assert!(body.contains("\"00ff0a\""), "{body}");
        assert!(
            matches!(decode_frame::<Response>(&frame), Decoded::Frame { message: Ok(r), .. } if r == resp)
        );
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let frame = encode_frame(&Request::Ping).unwrap();
        assert_eq!(decode_frame::<Request>(&frame[..2]), Decoded::Incomplete);
        assert_eq!(
            decode_frame::<Request>(&frame[..frame.len() - 1]),
            Decoded::Incomplete
        );
    }

    #[test]
    fn two_frames_in_one_buffer() {
        let mut buf = encode_frame(&Request::Ping).unwrap();
        let first = buf.len();
        buf.extend(encode_frame(&Request::Shutdown).unwrap());
        match decode_frame::<Request>(&buf) {
            Decoded::Frame { consumed, message } => {
                assert_eq!(consumed, first);
                assert_eq!(message.unwrap(), Request::Ping);
                assert!(matches!(
                    decode_frame::<Request>(&buf[consumed..]),
                    Decoded::Frame {
                        message: Ok(Request::Shutdown),
                        ..
                    }
                ));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn malformed_body_is_an_error_not_a_crash() {
        let body = br#"{"op":"launch_missiles"}"#;
        let mut buf = (body.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(body);
        match decode_frame::<Request>(&buf) {
            Decoded::Frame { consumed, message } => {
                assert_eq!(consumed, buf.len());
                assert!(message.unwrap_err().contains("malformed"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let garbage = [0u8, 0, 0, 3, 0xff, 0xfe, 0xfd];
        assert!(matches!(
            decode_frame::<Request>(&garbage),
            Decoded::Frame {
                message: Err(_),
                ..
            }
        ));
    }

    #[test]
    fn oversized_length_is_fatal() {
        let buf = [0xffu8, 0xff, 0xff, 0xff, 0];
        assert!(matches!(decode_frame::<Request>(&buf), Decoded::Fatal(_)));
    }
}
