//! SPDY/3.1 frame encoding and decoding (draft-mbelshe-httpbis-spdy-00 and the
//! 3.1 errata). Pure: bytes in, frames out; header blocks stay compressed here
//! and are handled by [`super::HeaderCodec`], because zlib state spans frames.

use super::SpdyError;

/// The only protocol version kubelet's and crictl's SPDY client speaks.
pub const VERSION: u16 = 3;
/// Control and data frames carry a 24-bit length.
pub const MAX_FRAME_LENGTH: usize = (1 << 24) - 1;
/// Data and control flag bit meaning "last frame of this stream in this direction".
pub const FLAG_FIN: u8 = 0x01;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// SETTINGS id of the initial per-stream window (spec section 2.6.4).
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// RST_STREAM status codes used by this server (spec section 2.6.3).
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_INVALID_STREAM: u32 = 2;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;

/// One SPDY frame; header blocks are the compressed bytes as on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_id: u32,
        priority: u8,
        flags: u8,
        header_block: Vec<u8>,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        header_block: Vec<u8>,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        header_block: Vec<u8>,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame of a type this server does not know; the spec says
    /// to ignore it (CREDENTIAL, NOOP of older drafts).
    Unknown {
        frame_type: u16,
    },
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Frame {
    /// Tries to decode one frame from the front of `buf`. Returns the frame and
    /// the number of bytes it used, or `None` when `buf` holds only part of a
    /// frame. `max_len` bounds what a peer may make us buffer.
    pub fn decode(buf: &[u8], max_len: usize) -> Result<Option<(Frame, usize)>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let flags = buf[4];
        let len = (u32::from_be_bytes([0, buf[5], buf[6], buf[7]])) as usize;
        if len > max_len {
            return Err(SpdyError::FrameTooLarge { len, max: max_len });
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let body = &buf[8..8 + len];
        let used = 8 + len;
        if buf[0] & 0x80 == 0 {
            let stream_id = be32(buf) & 0x7fff_ffff;
            return Ok(Some((
                Frame::Data {
                    stream_id,
                    flags,
                    data: body.to_vec(),
                },
                used,
            )));
        }
        let version = u16::from_be_bytes([buf[0] & 0x7f, buf[1]]);
        if version != VERSION {
            return Err(SpdyError::UnsupportedVersion(version));
        }
        let frame_type = u16::from_be_bytes([buf[2], buf[3]]);
        let need = |n: usize| {
            if len < n {
                Err(SpdyError::ShortControlFrame { frame_type, len })
            } else {
                Ok(())
            }
        };
        let frame = match frame_type {
            TYPE_SYN_STREAM => {
                need(10)?;
                Frame::SynStream {
                    stream_id: be32(body) & 0x7fff_ffff,
                    associated_id: be32(&body[4..]) & 0x7fff_ffff,
                    priority: body[8] >> 5,
                    flags,
                    header_block: body[10..].to_vec(),
                }
            }
            TYPE_SYN_REPLY => {
                need(4)?;
                Frame::SynReply {
                    stream_id: be32(body) & 0x7fff_ffff,
                    flags,
                    header_block: body[4..].to_vec(),
                }
            }
            TYPE_RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    stream_id: be32(body) & 0x7fff_ffff,
                    status: be32(&body[4..]),
                }
            }
            TYPE_SETTINGS => {
                need(4)?;
                let count = be32(body) as usize;
                if count.checked_mul(8).and_then(|n| n.checked_add(4)) != Some(len) {
                    return Err(SpdyError::ShortControlFrame { frame_type, len });
                }
                let entries = body[4..]
                    .chunks_exact(8)
                    .map(|e| {
                        (
                            e[0],
                            u32::from_be_bytes([0, e[1], e[2], e[3]]),
                            be32(&e[4..]),
                        )
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                need(4)?;
                Frame::Ping { id: be32(body) }
            }
            TYPE_GOAWAY => {
                need(4)?;
                // SPDY/3 added the status word; tolerate its absence (SPDY/2 peers).
                let status = if len >= 8 { be32(&body[4..]) } else { 0 };
                Frame::GoAway {
                    last_good_stream_id: be32(body) & 0x7fff_ffff,
                    status,
                }
            }
            TYPE_HEADERS => {
                need(4)?;
                Frame::Headers {
                    stream_id: be32(body) & 0x7fff_ffff,
                    flags,
                    header_block: body[4..].to_vec(),
                }
            }
            TYPE_WINDOW_UPDATE => {
                need(8)?;
                Frame::WindowUpdate {
                    stream_id: be32(body) & 0x7fff_ffff,
                    delta: be32(&body[4..]) & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { frame_type: other },
        };
        Ok(Some((frame, used)))
    }

    /// Appends the wire form of this frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), SpdyError> {
        let mut control = |frame_type: u16, flags: u8, body: &[u8]| -> Result<(), SpdyError> {
            if body.len() > MAX_FRAME_LENGTH {
                return Err(SpdyError::FrameTooLarge {
                    len: body.len(),
                    max: MAX_FRAME_LENGTH,
                });
            }
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&frame_type.to_be_bytes());
            out.push(flags);
            out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(body);
            Ok(())
        };
        match self {
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                flags,
                header_block,
            } => {
                let mut body = Vec::with_capacity(10 + header_block.len());
                body.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                body.extend_from_slice(&(associated_id & 0x7fff_ffff).to_be_bytes());
                body.push((priority & 0x7) << 5);
                body.push(0);
                body.extend_from_slice(header_block);
                control(TYPE_SYN_STREAM, *flags, &body)
            }
            Frame::SynReply {
                stream_id,
                flags,
                header_block,
            } => {
                let mut body = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(header_block);
                control(TYPE_SYN_REPLY, *flags, &body)
            }
            Frame::RstStream { stream_id, status } => {
                let mut body = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(TYPE_RST_STREAM, 0, &body)
            }
            Frame::Settings { flags, entries } => {
                let mut body = (entries.len() as u32).to_be_bytes().to_vec();
                for (flag, id, value) in entries {
                    body.push(*flag);
                    body.extend_from_slice(&id.to_be_bytes()[1..]);
                    body.extend_from_slice(&value.to_be_bytes());
                }
                control(TYPE_SETTINGS, *flags, &body)
            }
            Frame::Ping { id } => control(TYPE_PING, 0, &id.to_be_bytes()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut body = (last_good_stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(TYPE_GOAWAY, 0, &body)
            }
            Frame::Headers {
                stream_id,
                flags,
                header_block,
            } => {
                let mut body = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(header_block);
                control(TYPE_HEADERS, *flags, &body)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut body = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                control(TYPE_WINDOW_UPDATE, 0, &body)
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_FRAME_LENGTH {
                    return Err(SpdyError::FrameTooLarge {
                        len: data.len(),
                        max: MAX_FRAME_LENGTH,
                    });
                }
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.push(*flags);
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                Ok(())
            }
            Frame::Unknown { frame_type } => Err(SpdyError::UnknownFrameType(*frame_type)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let mut wire = Vec::new();
        frame.encode(&mut wire).unwrap();
        let (back, used) = Frame::decode(&wire, MAX_FRAME_LENGTH).unwrap().unwrap();
        assert_eq!(back, frame);
        assert_eq!(used, wire.len());
        // Every strict prefix is "need more bytes", never an error or a panic.
        for cut in 0..wire.len() {
            assert!(
                Frame::decode(&wire[..cut], MAX_FRAME_LENGTH)
                    .unwrap()
                    .is_none()
            );
        }
    }

    #[test]
    fn frames_round_trip() {
        round_trip(Frame::SynStream {
            stream_id: 1,
            associated_id: 0,
            priority: 3,
            flags: FLAG_FIN,
            header_block: vec![1, 2, 3],
        });
        round_trip(Frame::SynReply {
            stream_id: 3,
            flags: 0,
            header_block: vec![9],
        });
        round_trip(Frame::RstStream {
            stream_id: 5,
            status: RST_CANCEL,
        });
        round_trip(Frame::Settings {
            flags: 0,
            entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 65536), (1, 4, 100)],
        });
        round_trip(Frame::Ping { id: 7 });
        round_trip(Frame::GoAway {
            last_good_stream_id: 9,
            status: 0,
        });
        round_trip(Frame::Headers {
            stream_id: 11,
            flags: FLAG_FIN,
            header_block: vec![],
        });
        round_trip(Frame::WindowUpdate {
            stream_id: 1,
            delta: 4096,
        });
        round_trip(Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: b"hello".to_vec(),
        });
    }

    #[test]
    fn malformed_frames_are_errors() {
        // SYN_STREAM with a 2-byte body.
        let bad = [0x80, 3, 0, 1, 0, 0, 0, 2, 0, 0];
        assert!(Frame::decode(&bad, MAX_FRAME_LENGTH).is_err());
        // Version 2 control frame.
        let v2 = [0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(matches!(
            Frame::decode(&v2, MAX_FRAME_LENGTH),
            Err(SpdyError::UnsupportedVersion(2))
        ));
        // Length above the limit fails before the body arrives.
        let big = [0, 0, 0, 1, 0, 0xff, 0xff, 0xff];
        assert!(Frame::decode(&big, 1024).is_err());
        // SETTINGS whose count does not match its length.
        let settings = [0x80, 3, 0, 4, 0, 0, 0, 4, 0, 0, 0, 5];
        assert!(Frame::decode(&settings, MAX_FRAME_LENGTH).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small deterministic generator: many inputs, no dependency.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut codec = crate::stream::spdy::HeaderCodec::new(1 << 16).unwrap();
        for _ in 0..4_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 2 == 0 && bytes.len() >= 8 {
                // Make it look like a SPDY/3 control frame with a sane length.
                bytes[0] = 0x80;
                bytes[1] = 3;
                bytes[5] = 0;
                bytes[6] = 0;
                bytes[7] = (len - 8) as u8;
            }
            let _ = Frame::decode(&bytes, MAX_FRAME_LENGTH);
            let _ = crate::stream::spdy::Headers::decode_block(&bytes);
            if codec.decompress(&bytes).is_err() {
                codec = crate::stream::spdy::HeaderCodec::new(1 << 16).unwrap();
            }
        }
    }

    #[test]
    fn unknown_control_frames_are_skipped() {
        let credential = [0x80, 3, 0, 10, 0, 0, 0, 1, 0xaa];
        let (frame, used) = Frame::decode(&credential, MAX_FRAME_LENGTH)
            .unwrap()
            .unwrap();
        assert_eq!(frame, Frame::Unknown { frame_type: 10 });
        assert_eq!(used, 9);
    }
}
