//! SPDY/3 name/value header blocks and their zlib compression.
//!
//! Each direction of a SPDY/3 connection is one continuous zlib stream,
//! primed with the dictionary of spec section 2.6.10.1 and sync-flushed at
//! the end of every header block; so a codec must see every block of its
//! direction, in order.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::SpdyError;

/// Header names of the SPDY/3 dictionary, each written as a 4-byte
/// big-endian length followed by the name (spec section 2.6.10.1).
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The raw tail of the SPDY/3 dictionary (status codes, phrases, dates and
/// common values), appended without length prefixes and without a final NUL.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
    "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// Builds the 1423-byte SPDY/3 header compression dictionary.
pub fn spdy3_dictionary() -> Vec<u8> {
    let mut dict = Vec::with_capacity(1423);
    for word in DICTIONARY_WORDS {
        dict.extend_from_slice(&(word.len() as u32).to_be_bytes());
        dict.extend_from_slice(word.as_bytes());
    }
    dict.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    dict
}

/// A decoded header block: lower-case names, values in arrival order
/// (a NUL-separated multi-value becomes several entries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// First value of `name`, compared case-insensitively as Go's
    /// `http.Header.Get` does (kubelet's client writes canonical names).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn from_pairs(pairs: &[(&str, &str)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The uncompressed name/value block (spec section 2.6.10): names are
    /// lower-cased because SPDY/3 forbids upper-case names.
    pub fn encode_block(&self) -> Vec<u8> {
        let mut grouped: Vec<(String, Vec<&str>)> = Vec::new();
        for (name, value) in &self.0 {
            let lower = name.to_ascii_lowercase();
            match grouped.iter_mut().find(|(n, _)| *n == lower) {
                Some((_, values)) => values.push(value),
                None => grouped.push((lower, vec![value])),
            }
        }
        let mut out = (grouped.len() as u32).to_be_bytes().to_vec();
        for (name, values) in grouped {
            let value = values.join("\0");
            out.extend_from_slice(&(name.len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    /// Parses an uncompressed name/value block, rejecting truncation and
    /// non-UTF-8 names or values.
    pub fn decode_block(block: &[u8]) -> Result<Headers, SpdyError> {
        let mut pos = 0usize;
        let mut take = |n: usize| -> Result<&[u8], SpdyError> {
            let end = pos
                .checked_add(n)
                .filter(|end| *end <= block.len())
                .ok_or(SpdyError::BadHeaderBlock("truncated name/value block"))?;
            let s = &block[pos..end];
            pos = end;
            Ok(s)
        };
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let count = be(take(4)?);
        let mut headers = Vec::new();
        for _ in 0..count {
            let name_len = be(take(4)?);
            if name_len == 0 {
                return Err(SpdyError::BadHeaderBlock("empty header name"));
            }
            let name = std::str::from_utf8(take(name_len)?)
                .map_err(|_| SpdyError::BadHeaderBlock("header name is not UTF-8"))?
                .to_ascii_lowercase();
            let value_len = be(take(4)?);
            let value = std::str::from_utf8(take(value_len)?)
                .map_err(|_| SpdyError::BadHeaderBlock("header value is not UTF-8"))?;
            for part in value.split('\0') {
                headers.push((name.clone(), part.to_string()));
            }
        }
        Ok(Headers(headers))
    }
}

/// The zlib state of one SPDY/3 connection: a compressor for the blocks we
/// send and a decompressor for the blocks we receive.
pub struct HeaderCodec {
    dictionary: Vec<u8>,
    compress: Compress,
    decompress: Decompress,
    max_block: usize,
}

impl HeaderCodec {
    /// `max_block` bounds one decompressed block (a zlib bomb in a
    /// SYN_STREAM must not exhaust memory).
    pub fn new(max_block: usize) -> Result<HeaderCodec, SpdyError> {
        let dictionary = spdy3_dictionary();
        let mut compress = Compress::new(Compression::default(), true);
        compress
            .set_dictionary(&dictionary)
            .map_err(|e| SpdyError::Zlib(e.to_string()))?;
        Ok(HeaderCodec {
            dictionary,
            compress,
            decompress: Decompress::new(true),
            max_block,
        })
    }

    /// Compresses the block of `headers` and sync-flushes, so the peer can
    /// decode it without waiting for more.
    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let input = headers.encode_block();
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        let start_in = self.compress.total_in();
        loop {
            let consumed = (self.compress.total_in() - start_in) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            self.compress
                .compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Zlib(e.to_string()))?;
            let consumed = (self.compress.total_in() - start_in) as usize;
            if consumed == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Decompresses one header block and parses it.
    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let start_in = self.decompress.total_in();
        loop {
            let consumed = (self.decompress.total_in() - start_in) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(1024);
            }
            match self.decompress.decompress_vec(
                &block[consumed..],
                &mut out,
                FlushDecompress::Sync,
            ) {
                Ok(Status::StreamEnd) => {
                    return Err(SpdyError::BadHeaderBlock(
                        "zlib stream ended, but SPDY/3 keeps it open",
                    ));
                }
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.decompress
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| SpdyError::Zlib(e.to_string()))?;
                }
                Err(e) => return Err(SpdyError::Zlib(e.to_string())),
            }
            if out.len() > self.max_block {
                return Err(SpdyError::BadHeaderBlock("header block too large"));
            }
            let consumed = (self.decompress.total_in() - start_in) as usize;
            if consumed == block.len() && out.len() < out.capacity() {
                break;
            }
        }
        Headers::decode_block(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let dict = spdy3_dictionary();
        assert_eq!(dict.len(), 1423);
        // Adler-32 of the dictionary as printed in the SPDY/3 draft; zlib
        // writes it into the stream header (FDICT), so a wrong byte would make
        // every Go peer fail with "invalid dictionary".
        let mut a: u32 = 1;
        let mut b: u32 = 0;
        for byte in &dict {
            a = (a + u32::from(*byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn blocks_survive_two_codecs_in_sequence() {
        let mut sender = HeaderCodec::new(1 << 20).unwrap();
        let mut receiver = HeaderCodec::new(1 << 20).unwrap();
        for i in 0..5 {
            let headers = Headers::from_pairs(&[
                ("streamType", "stdout"),
                ("port", "8080"),
                ("requestid", &i.to_string()),
            ]);
            let wire = sender.compress(&headers).unwrap();
            let back = receiver.decompress(&wire).unwrap();
            assert_eq!(back.get("streamtype"), Some("stdout"));
            assert_eq!(back.get("RequestID"), Some(i.to_string().as_str()));
        }
    }

    #[test]
    fn decodes_blocks_from_c_zlib_at_best_compression() {
        // Two consecutive blocks ("streamtype: error", then "streamtype:
        // stdin") compressed by C zlib at level 9 with the SPDY/3 dictionary
        // and a sync flush each, as Go's spdystream framer writes them.
        let first =
            hex::decode("78f9e3c6a7c202a62346703a2b294a4dcc851625aca9a08006000000ffff").unwrap();
        let second = hex::decode("c22e555c02cc2e00000000ffff").unwrap();
        let mut receiver = HeaderCodec::new(1 << 20).unwrap();
        assert_eq!(
            receiver.decompress(&first).unwrap().get("streamType"),
            Some("error")
        );
        assert_eq!(
            receiver.decompress(&second).unwrap().get("streamType"),
            Some("stdin")
        );
    }

    #[test]
    fn multi_values_split_on_nul() {
        let block = Headers::from_pairs(&[("a", "1"), ("A", "2")]).encode_block();
        let back = Headers::decode_block(&block).unwrap();
        assert_eq!(
            back.0,
            vec![("a".into(), "1".into()), ("a".into(), "2".into())]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut receiver = HeaderCodec::new(1 << 20).unwrap();
        assert!(
            receiver
                .decompress(&[0x78, 0xbb, 0xff, 0x00, 0x13])
                .is_err()
        );
        assert!(Headers::decode_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
        assert!(Headers::decode_block(&[0, 0]).is_err());
    }
}
