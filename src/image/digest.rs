//! Blob verification. capcri checks every blob itself (sha256 while it streams
//! to a temp file) instead of trusting the registry client, so a tampered blob
//! never reaches the content store under the digest it claims.

use sha2::{Digest, Sha256};

use super::ImageError;

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The hex part of a `sha256:<64 hex>` digest, refusing anything else (the
/// hex becomes a file name, so it must be exactly 64 lowercase hex digits).
pub fn digest_hex<'a>(object: &str, digest: &'a str) -> Result<&'a str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) => {
            Ok(hex)
        }
        _ => Err(ImageError::Unsupported {
            object: object.to_string(),
            reason: format!(
                "digest {digest:?} is not sha256:<64 lowercase hex>; only sha256 content is supported"
            ),
        }),
    }
}

/// Hashes and counts a blob as it streams, and checks it against the
/// descriptor (digest and size) at the end.
pub struct BlobVerifier {
    object: String,
    expected: String,
    expected_size: Option<u64>,
    hasher: Sha256,
    received: u64,
}

impl BlobVerifier {
    pub fn new(
        object: impl Into<String>,
        expected_digest: &str,
        expected_size: Option<u64>,
    ) -> Result<Self, ImageError> {
        let object = object.into();
        digest_hex(&object, expected_digest)?;
        Ok(BlobVerifier {
            object,
            expected: expected_digest.to_string(),
            expected_size,
            hasher: Sha256::new(),
            received: 0,
        })
    }

    /// Feeds a chunk; refuses more bytes than the descriptor announced
    /// (a registry streaming forever must not fill the disk).
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), ImageError> {
        self.received += chunk.len() as u64;
        if let Some(limit) = self.expected_size
            && self.received > limit
        {
            return Err(ImageError::BodyOverDeclared {
                object: self.object.clone(),
                digest: self.expected.clone(),
                declared: limit,
            });
        }
        self.hasher.update(chunk);
        Ok(())
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// What is being checked, as errors name it.
    pub fn object(&self) -> &str {
        &self.object
    }

    /// The size the descriptor declared, if it declared one.
    pub fn expected_size(&self) -> Option<u64> {
        self.expected_size
    }

    /// The digest of what was received.
    pub fn actual(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }

    /// Checks size and digest.
    pub fn finish(&self) -> Result<(), ImageError> {
        let actual = self.actual();
        if actual != self.expected {
            return Err(ImageError::DigestMismatch {
                object: self.object.clone(),
                expected: self.expected.clone(),
                actual,
            });
        }
        if let Some(size) = self.expected_size
            && size != self.received
        {
            return Err(ImageError::DigestMismatch {
                object: format!("{} (size {} instead of {size})", self.object, self.received),
                expected: self.expected.clone(),
                actual,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_matching_blob_in_chunks() {
        let data = b"hello blob";
        let mut v =
            BlobVerifier::new("blob x", &sha256_digest(data), Some(data.len() as u64)).unwrap();
        v.update(&data[..3]).unwrap();
        v.update(&data[3..]).unwrap();
        v.finish().unwrap();
    }

    #[test]
    fn tampered_blob_names_expected_and_actual() {
        let expected = sha256_digest(b"original");
        let mut v = BlobVerifier::new("layer sha256:aa", &expected, Some(8)).unwrap();
        v.update(b"tampered").unwrap();
        match v.finish().unwrap_err() {
            ImageError::DigestMismatch {
                expected: e,
                actual,
                ..
            } => {
                assert_eq!(e, expected);
                assert_eq!(actual, sha256_digest(b"tampered"));
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn oversize_stream_stops_early() {
        let mut v = BlobVerifier::new("blob", &sha256_digest(b"abc"), Some(3)).unwrap();
        assert!(matches!(
            v.update(b"abcd"),
            Err(ImageError::BodyOverDeclared { .. })
        ));
    }

    #[test]
    fn short_blob_is_a_mismatch() {
        let mut v = BlobVerifier::new("blob", &sha256_digest(b"abc"), Some(3)).unwrap();
        v.update(b"ab").unwrap();
        assert!(matches!(v.finish(), Err(ImageError::DigestMismatch { .. })));
    }

    #[test]
    fn refuses_non_sha256_digests() {
        assert!(BlobVerifier::new("b", "sha512:00", None).is_err());
        assert!(digest_hex("b", "sha256:../../etc").is_err());
    }
}
