//! The ids every part of the gateway shares: session tokens, public
//! conversation ids, and the address of a subscriber (a socket or a held poll)
//! on its worker.
//!
//! These sit below every other module (the store, the session core, the desk
//! and the server shell all speak them) so that a conversation or a session is
//! one type everywhere, not a newtype in one place and a byte array in another.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The secret that identifies a visitor's session: 128 bits from the operating
/// system's CSPRNG, carried only in the `lc_session` cookie. Never logged, never
/// in a frame; the store keeps only its SHA-256. The worker that owns a
/// session's state is a function of the token, so any worker can route a
/// resumed session without shared state.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey([u8; 16]);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

    /// A key from given bytes (tests, and keys a store hands back).
    pub const fn from_bytes(b: [u8; 16]) -> Self {
        SessionKey(b)
    }

    /// Index of the worker that owns this session's state.
    pub fn owner(&self, workers: usize) -> usize {
        let mut w = [0u8; 8];
        w.copy_from_slice(&self.0[..8]);
        (u64::from_le_bytes(w) % workers.max(1) as u64) as usize
    }

    /// The raw bytes (for the store, which keeps only their hash).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
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
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationId([u8; 12]);

impl ConversationId {
    /// A fresh random id.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut b = [0u8; 12];
        getrandom::fill(&mut b)?;
        Ok(ConversationId(b))
    }

    /// An id from given bytes (tests, and ids read back from a store).
    pub const fn from_bytes(b: [u8; 12]) -> Self {
        ConversationId(b)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 12] {
        &self.0
    }

    /// Parses the written form (`c_` and 16 base64url characters).
    pub fn parse(s: &str) -> Option<Self> {
        let b64 = s.strip_prefix("c_").filter(|r| r.len() == 16)?;
        let v = URL_SAFE_NO_PAD.decode(b64).ok()?;
        Some(ConversationId(v.try_into().ok()?))
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // 12 bytes are exactly 16 base64 characters: written on the stack, as
        // log lines and error messages format ids often.
        let mut out = [0u8; 16];
        let n = URL_SAFE_NO_PAD
            .encode_slice(self.0, &mut out)
            .map_err(|_| fmt::Error)?;
        f.write_str("c_")?;
        f.write_str(std::str::from_utf8(&out[..n]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An agent account's id: the store's row id, chosen by the desk (1, 2, ...).
/// On the wire (an `agents` row, a `transfer`'s `to`, the API's accounts) it
/// is the plain number.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct AgentId(u64);

impl AgentId {
    /// The id with this number.
    pub const fn new(n: u64) -> Self {
        AgentId(n)
    }

    /// Its number (the store's row id).
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A subscriber as the workers address it: a socket or a held long-poll,
/// named by its worker, its connection slot there and that slot's generation
/// (so a message for a connection that has since closed and whose slot was
/// reused is recognised as stale). Opaque outside the server shell.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubId(u64);

impl SubId {
    const SLOT_BITS: u32 = 24;
    const GEN_BITS: u32 = 30;
    const SLOT_MASK: u64 = (1 << Self::SLOT_BITS) - 1;
    const GEN_MASK: u64 = (1 << Self::GEN_BITS) - 1;

    /// The subscriber at `slot` of `worker`, in the slot's generation `gen`
    /// (only its low 30 bits are kept: generations wrap).
    pub const fn new(worker: usize, slot: usize, gen: u64) -> Self {
        SubId(
            ((worker as u64) << (Self::SLOT_BITS + Self::GEN_BITS))
                | ((slot as u64 & Self::SLOT_MASK) << Self::GEN_BITS)
                | (gen & Self::GEN_MASK),
        )
    }

    /// The worker the subscriber lives on.
    pub const fn worker(self) -> usize {
        (self.0 >> (Self::SLOT_BITS + Self::GEN_BITS)) as usize
    }

    /// Its connection slot on that worker.
    pub const fn slot(self) -> usize {
        ((self.0 >> Self::GEN_BITS) & Self::SLOT_MASK) as usize
    }

    /// The slot's generation it was made in (low 30 bits).
    pub const fn generation(self) -> u64 {
        self.0 & Self::GEN_MASK
    }

    /// Whether this names the connection now in a slot of generation `gen`.
    pub const fn is_generation(self, gen: u64) -> bool {
        self.generation() == gen & Self::GEN_MASK
    }
}

impl fmt::Debug for SubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SubId({}:{}#{})",
            self.worker(),
            self.slot(),
            self.generation()
        )
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

    #[test]
    fn conversation_ids_are_written_in_base64url() {
        let id = ConversationId::from_bytes([0xfb; 12]);
        assert_eq!(id.to_string(), "c_-_v7-_v7-_v7-_v7");
        assert_eq!(format!("{id:?}"), id.to_string());
    }

    #[test]
    fn agent_ids_are_plain_numbers_on_the_wire() {
        let id = AgentId::new(42);
        assert_eq!(id.get(), 42);
        assert_eq!(id.to_string(), "42");
        assert_eq!(serde_json::to_string(&id).unwrap(), "42");
        assert_eq!(
            serde_json::from_str::<AgentId>("7").unwrap(),
            AgentId::new(7)
        );
        assert!(serde_json::from_str::<AgentId>("-1").is_err());
    }

    #[test]
    fn sub_ids_pack_and_unpack() {
        for (w, s, g) in [
            (0, 0, 1),
            (3, 123_456, 987_654),
            (1023, (1 << 24) - 1, (1 << 30) - 1),
        ] {
            let sub = SubId::new(w, s, g);
            assert_eq!((sub.worker(), sub.slot(), sub.generation()), (w, s, g));
            assert!(sub.is_generation(g));
        }
        // Generations wrap at 30 bits, and a wrapped one still matches.
        let sub = SubId::new(2, 9, (1 << 30) + 5);
        assert_eq!(sub.generation(), 5);
        assert!(sub.is_generation((1 << 30) + 5));
        assert_ne!(SubId::new(0, 1, 0), SubId::new(1, 0, 0));
    }
}
