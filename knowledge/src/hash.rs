//! Stable hashing for document fingerprints and chunk ids: FNV-1a over
//! 64 bits, the same on every platform and in every release (unlike
//! `std::hash`), printed as 16 hex digits.

/// FNV-1a over the concatenation of `parts`, each followed by a 0x1f
/// separator so that `["ab", "c"]` and `["a", "bc"]` differ.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.iter().chain(std::iter::once(&0x1f)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// `h` as 16 lower-case hex digits.
pub fn hex(h: u64) -> String {
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_separated() {
        assert_eq!(hex(fnv1a(&[b"a"])), hex(fnv1a(&[b"a"])));
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        assert_eq!(hex(0xab).len(), 16);
        // Pinned: ids must not change between releases.
        assert_eq!(hex(fnv1a(&[b"shipping.md"])), "530f116d0b41ffb3");
    }
}
