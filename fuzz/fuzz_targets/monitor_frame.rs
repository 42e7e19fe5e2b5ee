//! The monitor and the daemon read frames from each other's socket; a
//! corrupt or hostile peer must not crash the reader or make it allocate
//! beyond `MAX_FRAME_LEN`. Decoded messages round-trip through
//! `encode_frame`.

#![no_main]

use capcri::monitor_api::{Decoded, MAX_FRAME_LEN, Request, Response, decode_frame, encode_frame};
use libfuzzer_sys::fuzz_target;
use std::fmt::Debug;

fn check<T>(data: &[u8])
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de> + PartialEq + Debug,
{
    // The monitor's receive loop: decode frames one after the other.
    let mut buf = data;
    loop {
        match decode_frame::<T>(buf) {
            Decoded::Incomplete => break,
            Decoded::Fatal(_) => break,
            Decoded::Frame { consumed, message } => {
                assert!((4..=buf.len()).contains(&consumed));
                assert!(consumed - 4 <= MAX_FRAME_LEN);
                assert!(matches!(
                    decode_frame::<T>(&buf[..consumed - 1]),
                    Decoded::Incomplete
                ));
                if let Ok(msg) = message {
                    let frame = encode_frame(&msg).expect("a decoded message encodes");
                    match decode_frame::<T>(&frame) {
                        Decoded::Frame {
                            consumed,
                            message: Ok(again),
                        } => {
                            assert_eq!(consumed, frame.len());
                            assert_eq!(again, msg);
                        }
                        other => panic!("re-encoded {msg:?} decodes as {other:?}"),
                    }
                }
                buf = &buf[consumed..];
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Request>(data);
    check::<Response>(data);
});
