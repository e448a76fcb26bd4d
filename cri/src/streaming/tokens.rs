//! The request cache behind the streaming URLs: an RPC stores its request under a random
//! token; the client's first connection to `/<kind>/<token>` takes it out. Tokens are 32
//! random bytes (base64url), single-use and expire after a minute, as upstream's defaults.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;

use super::{Request, StreamingError};

/// How long a token stays valid (upstream's default).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// How many requests may wait for their clients at once (upstream's default).
pub const MAX_IN_FLIGHT: usize = 1000;

/// Pending requests by token.
#[derive(Debug)]
pub struct RequestCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Request, Instant)>>,
}

impl Default for RequestCache {
    fn default() -> Self {
        RequestCache::new(TOKEN_TTL)
    }
}

impl RequestCache {
    /// A cache whose tokens live for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        RequestCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Request, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores `request`; returns its token.
    pub fn insert(&self, request: Request) -> Result<String, StreamingError> {
        let mut entries = self.lock();
        let now = Instant::now();
        entries.retain(|_, (_, expires)| *expires > now);
        if entries.len() >= MAX_IN_FLIGHT {
            return Err(StreamingError::TooManyRequests(MAX_IN_FLIGHT));
        }
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        entries.insert(token.clone(), (request, now + self.ttl));
        Ok(token)
    }

    /// Takes the request of `token` out, if it is there and not expired.
    pub fn consume(&self, token: &str) -> Option<Request> {
        let (request, expires) = self.lock().remove(token)?;
        (expires > Instant::now()).then_some(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1 as cri;

    fn request() -> Request {
        Request::PortForward(cri::PortForwardRequest {
            pod_sandbox_id: "abc".into(),
            port: vec![80],
        })
    }

    #[test]
    fn tokens_are_single_use_and_unguessable() {
        let cache = RequestCache::default();
        let a = cache.insert(request()).unwrap();
        let b = cache.insert(request()).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert!(cache.consume(&a).is_some());
        assert!(cache.consume(&a).is_none(), "used once");
        assert!(cache.consume("nope").is_none());
        assert!(cache.consume(&b).is_some());
    }

    #[test]
    fn tokens_expire() {
        let cache = RequestCache::new(Duration::from_millis(1));
        let token = cache.insert(request()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.consume(&token).is_none());
    }

    #[test]
    fn in_flight_requests_are_bounded() {
        let cache = RequestCache::default();
        for _ in 0..MAX_IN_FLIGHT {
            cache.insert(request()).unwrap();
        }
        assert!(matches!(
            cache.insert(request()),
            Err(StreamingError::TooManyRequests(_))
        ));
    }
}
