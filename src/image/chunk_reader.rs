//! A blocking `Read` over chunks sent from async code: how a layer's body,
//! arriving on the runtime, reaches the unpacker on a blocking thread
//! without being written to disk first.

use std::io::Read;

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

/// Reads the chunks of `rx` in order; end of input once every sender is
/// gone. The channel is bounded, so a fast download waits for a slow
/// unpack instead of growing the daemon's memory.
pub(crate) struct ChunkReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChunkReader {
    pub(crate) fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        ChunkReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    /// Blocks the calling thread: call it from a blocking thread only
    /// (`spawn_blocking`), never from the runtime.
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_read_in_order_across_boundaries_then_end() {
        let (tx, rx) = mpsc::channel(4);
        let reader = std::thread::spawn(move || {
            let mut r = ChunkReader::new(rx);
            let mut small = [0u8; 3];
            let mut got = Vec::new();
            loop {
                let n = r.read(&mut small).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&small[..n]);
            }
            got
        });
        for chunk in [&b"hello "[..], b"", b"chunked", b" world"] {
            tx.blocking_send(Bytes::copy_from_slice(chunk)).unwrap();
        }
        drop(tx);
        assert_eq!(reader.join().unwrap(), b"hello chunked world");
    }

    #[test]
    fn a_dropped_reader_fails_the_sender_instead_of_blocking_it() {
        let (tx, rx) = mpsc::channel(1);
        drop(ChunkReader::new(rx));
        assert!(tx.blocking_send(Bytes::from_static(b"x")).is_err());
    }
}
