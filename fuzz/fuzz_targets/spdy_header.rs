//! SPDY/3 header blocks are zlib streams (with the SPDY dictionary) sent by
//! the peer. Decompression must not panic, hang or grow past its bound (zlib
//! bombs), and parsed blocks round-trip through encode and compress.
//!
//! Input: first byte = number of header blocks the rest is cut into (the
//! zlib state carries over between blocks of one connection).

#![no_main]

use capcri::stream::spdy::{HeaderCodec, Headers};
use libfuzzer_sys::fuzz_target;

const MAX_BLOCK: usize = 64 * 1024;

/// Names sorted, values of one name in order: the block's own grouping.
fn grouped(h: &Headers) -> Vec<(String, String)> {
    let mut v = h.0.clone();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn round_trip(h: &Headers) {
    let block = h.encode_block();
    let again = Headers::decode_block(&block).expect("an encoded block decodes");
    assert_eq!(grouped(&again), grouped(h));
    let mut tx = HeaderCodec::new(MAX_BLOCK).expect("codec");
    let mut rx = HeaderCodec::new(usize::MAX).expect("codec");
    for _ in 0..2 {
        let z = tx.compress(h).expect("compress");
        let back = rx.decompress(&z).expect("decompress what we compressed");
        assert_eq!(grouped(&back), grouped(h));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Headers::decode_block(data) {
        round_trip(&h);
    }
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let blocks = usize::from(n % 4) + 1;
    let size = rest.len().div_ceil(blocks).max(1);
    let Ok(mut codec) = HeaderCodec::new(MAX_BLOCK) else {
        return;
    };
    for block in rest.chunks(size) {
        match codec.decompress(block) {
            Ok(h) => round_trip(&h),
            Err(_) => break,
        }
    }
});
