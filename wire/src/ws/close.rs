//! Close status codes (RFC 6455 section 7.4) that the gateway sends or accepts.

/// Normal closure.
pub const NORMAL: u16 = 1000;
/// The server is going away (shutdown).
pub const GOING_AWAY: u16 = 1001;
/// Protocol violation, such as an unmasked client frame.
pub const PROTOCOL_ERROR: u16 = 1002;
/// Text that is not UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// Policy violation: here, a reader too slow for its outbound queue.
pub const POLICY: u16 = 1008;
/// A frame or message over the size limit.
pub const TOO_BIG: u16 = 1009;
/// Unexpected server condition.
pub const INTERNAL: u16 = 1011;

/// Whether a peer may put `code` in a close frame. 1004-1006 and 1015 are
/// reserved for local use; 1012-1014 are registered with IANA; 3000-4999 belong
/// to libraries and applications.
pub fn is_sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_codes() {
        for ok in [1000, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999] {
            assert!(is_sendable(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000] {
            assert!(!is_sendable(bad), "{bad}");
        }
    }
}
