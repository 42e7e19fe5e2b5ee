//! SPDY/3 frames arrive from the network (kubelet, or whoever reaches the
//! streaming port). Decoding never panics, never claims more bytes than
//! given, and every decoded frame encodes back to bytes that decode equal.

#![no_main]

use capcri::stream::spdy::Frame;
use capcri::stream::spdy::conn::MAX_INBOUND_FRAME;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    while let Ok(Some((frame, used))) = Frame::decode(buf, MAX_INBOUND_FRAME) {
        assert!((8..=buf.len()).contains(&used));
        assert!(matches!(
            Frame::decode(&buf[..used - 1], MAX_INBOUND_FRAME),
            Ok(None)
        ));
        let mut wire = Vec::new();
        if frame.encode(&mut wire).is_ok() {
            let again = Frame::decode(&wire, MAX_INBOUND_FRAME);
            assert!(
                matches!(&again, Ok(Some((f, n))) if *f == frame && *n == wire.len()),
                "{frame:?} re-encoded decodes as {again:?}"
            );
        }
        buf = &buf[used..];
    }
});
