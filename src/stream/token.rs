//! Single-use, expiring URL tokens, as kubelet's streaming `requestCache`:
//! the CRI Exec/Attach/PortForward RPC stores the request and returns a URL
//! holding the token; the first HTTP request with it takes the request out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Kubelet's cache allows this many requests in flight; more is an error
/// rather than unbounded memory.
pub const MAX_IN_FLIGHT: usize = 1000;

pub struct TokenCache<T> {
    ttl: Duration,
    entries: HashMap<String, (Instant, T)>,
}

impl<T> TokenCache<T> {
    pub fn new(ttl: Duration) -> TokenCache<T> {
        TokenCache {
            ttl,
            entries: HashMap::new(),
        }
    }

    /// Stores `value` under a fresh token; `None` when the cache is full of
    /// unexpired requests.
    pub fn insert(&mut self, value: T, now: Instant) -> Option<String> {
        self.entries.retain(|_, (expires, _)| *expires > now);
        if self.entries.len() >= MAX_IN_FLIGHT {
            return None;
        }
        // 128 bits from the OS-seeded CSPRNG: unguessable, URL-safe as hex.
        let mut bytes = [0u8; 16];
        rand::fill(&mut bytes);
        let token = hex::encode(bytes);
        self.entries.insert(token.clone(), (now + self.ttl, value));
        Some(token)
    }

    /// Takes the request out; a second use or an expired token finds nothing.
    pub fn consume(&mut self, token: &str, now: Instant) -> Option<T> {
        let (expires, value) = self.entries.remove(token)?;
        (expires > now).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_expire() {
        let mut cache = TokenCache::new(Duration::from_secs(60));
        let now = Instant::now();
        let a = cache.insert(1, now).unwrap();
        let b = cache.insert(2, now).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert_eq!(cache.consume(&a, now), Some(1));
        assert_eq!(cache.consume(&a, now), None);
        assert_eq!(cache.consume(&b, now + Duration::from_secs(61)), None);
        assert_eq!(cache.consume("nope", now), None);
    }

    #[test]
    fn cache_is_bounded() {
        let mut cache = TokenCache::new(Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..MAX_IN_FLIGHT {
            assert!(cache.insert(i, now).is_some());
        }
        assert!(cache.insert(0, now).is_none());
        // Expired entries make room again.
        assert!(cache.insert(0, now + Duration::from_secs(61)).is_some());
    }
}
