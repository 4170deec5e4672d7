//! Session tokens and public conversation ids.
//!
//! A token is 128 bits from the operating system's CSPRNG, carried only in the
//! `lc_session` cookie. The worker that owns a session's state is a function of
//! the token, so any worker can route a resumed session without shared state.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The secret that identifies a visitor's session. Never logged, never in a frame.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey([u8; 16]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a bearer secret: keep it out of logs and panic messages.
        f.write_str("SessionKey(<redacted>)")
    }
}

impl SessionKey {
    /// A fresh random key.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b)?;
        Ok(SessionKey(b))
    }

    /// A fresh random key owned by `worker` of `workers`, so that a new session
    /// lives on the worker that accepted its connection.
    pub fn random_owned_by(worker: usize, workers: usize) -> Result<Self, getrandom::Error> {
        loop {
            let k = Self::random()?;
            if k.owner(workers) == worker {
                return Ok(k);
            }
        }
    }

    /// Index of the worker that owns this session's state.
    pub fn owner(&self, workers: usize) -> usize {
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.0[..8]);
        (u64::from_le_bytes(w) % workers.max(1) as u64) as usize
    }

    /// The raw bytes (for the store, which keeps only their hash).
    pub fn bytes(&self) -> [u8; 16] {
        self.0
    }

    /// The cookie value: 22 characters of unpadded base64url.
    pub fn to_cookie(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Parses a cookie value; anything that is not exactly a key is `None`.
    pub fn from_cookie(s: &str) -> Option<Self> {
        if s.len() != 22 {
            return None;
        }
        let v = URL_SAFE_NO_PAD.decode(s).ok()?;
        Some(SessionKey(v.try_into().ok()?))
    }
}

/// A public conversation id: 96 random bits, written `c_` and 16 base64url
/// characters. Kept as bytes: an idle session should not pay for a string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ConversationId([u8; 12]);

impl ConversationId {
    /// A fresh random id.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut b = [0u8; 12];
        getrandom::fill(&mut b)?;
        Ok(ConversationId(b))
    }

    /// An id from given bytes (tests, and ids read back from a store).
    pub fn from_bytes(b: [u8; 12]) -> Self {
        ConversationId(b)
    }

    /// The raw bytes.
    pub fn bytes(&self) -> [u8; 12] {
        self.0
    }

    /// Parses the written form (`c_` and 16 base64url characters).
    pub fn parse(s: &str) -> Option<Self> {
        let b64 = s.strip_prefix("c_").filter(|r| r.len() == 16)?;
        let v = URL_SAFE_NO_PAD.decode(b64).ok()?;
        Some(ConversationId(v.try_into().ok()?))
    }
}

impl std::fmt::Display for ConversationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c_{}", URL_SAFE_NO_PAD.encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_round_trip_and_rejects() {
        let k = SessionKey::random().unwrap();
        let c = k.to_cookie();
        assert_eq!(c.len(), 22);
        assert_eq!(SessionKey::from_cookie(&c), Some(k));
        assert_eq!(SessionKey::from_cookie("short"), None);
        assert_eq!(SessionKey::from_cookie(&"!".repeat(22)), None);
        assert!(!format!("{k:?}").contains(&c));
    }

    #[test]
    fn owned_keys_land_on_their_worker() {
        for w in 0..4 {
            let k = SessionKey::random_owned_by(w, 4).unwrap();
            assert_eq!(k.owner(4), w);
        }
    }

    #[test]
    fn conversation_ids_differ() {
        let a = ConversationId::random().unwrap().to_string();
        assert!(a.starts_with("c_") && a.len() == 18);
        assert_ne!(a, ConversationId::random().unwrap().to_string());
        let id = ConversationId::random().unwrap();
        assert_eq!(ConversationId::parse(&id.to_string()), Some(id));
        assert_eq!(ConversationId::parse("c_short"), None);
        assert_eq!(ConversationId::parse("x_AAAAAAAAAAAAAAAA"), None);
    }
}
