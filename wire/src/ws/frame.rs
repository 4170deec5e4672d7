//! RFC 6455 frame layer: header parsing, masking and frame encoding.
//!
//! Plain functions over byte slices. They know nothing of sockets or of message
//! assembly (see [`super::message`]). Both roles are served: the gateway decodes
//! masked client frames and encodes unmasked ones; the load generator does the
//! opposite.

use thiserror::Error;

/// Frame opcodes (RFC 6455 section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// Continuation of a fragmented message.
    Continuation,
    /// First frame of a text message.
    Text,
    /// First frame of a binary message.
    Binary,
    /// Connection close.
    Close,
    /// Ping, answered by a pong carrying the same payload.
    Ping,
    /// Pong.
    Pong,
}

impl OpCode {
    /// The 4-bit wire value.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// Control frames (close, ping, pong) may not be fragmented and carry at most 125 bytes.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// Frame opcode.
    pub opcode: OpCode,
    /// Masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// Length of the header on the wire (2 to 14 bytes).
    pub header_len: usize,
}

impl FrameHeader {
    /// Header plus payload, the number of bytes the whole frame occupies.
    pub fn frame_len(&self) -> u64 {
        self.header_len as u64 + self.payload_len
    }
}

/// Why a frame header cannot be accepted. Each maps to a close code.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// RSV1-3 set while no extension was negotiated.
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// Opcode 0x3-0x7 or 0xB-0xF.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame with FIN clear or a payload over 125 bytes.
    #[error("control frame fragmented or longer than 125 bytes")]
    BadControlFrame,
    /// The most significant bit of a 64-bit length was set.
    #[error("payload length has its most significant bit set")]
    BadLength,
    /// A client frame without a mask, or a server frame with one.
    #[error("frame masking does not match the peer's role")]
    Masking,
    /// The payload is longer than the configured frame size limit.
    #[error("frame of {len} bytes is over the limit of {limit}")]
    TooLarge {
        /// Declared payload length.
        len: u64,
        /// Configured limit.
        limit: u64,
    },
}

/// Parses a frame header from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole header.
/// `expect_masked` is true on the server side, where every frame must be masked.
pub fn parse_header(
    buf: &[u8],
    expect_masked: bool,
    max_payload: u64,
) -> Result<Option<FrameHeader>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(FrameError::ReservedOpcode(b0 & 0x0F))?;
    let masked = b1 & 0x80 != 0;
    if masked != expect_masked {
        return Err(FrameError::Masking);
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() && (!fin || len7 > 125) {
        return Err(FrameError::BadControlFrame);
    }
    let (payload_len, mut pos) = match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(b);
            if len >> 63 != 0 {
                return Err(FrameError::BadLength);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    if payload_len > max_payload {
        return Err(FrameError::TooLarge {
            len: payload_len,
            limit: max_payload,
        });
    }
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let mut m = [0u8; 4];
        m.copy_from_slice(&buf[pos..pos + 4]);
        pos += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask,
        payload_len,
        header_len: pos,
    }))
}

/// XORs `buf` with the masking key, as if `buf` started at byte 0 of the payload.
///
/// Works a word at a time; masking is on the per-byte path of every client frame.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let mask64 = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        let v = u64::from_ne_bytes(w) ^ mask64;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    // The tail starts at a multiple of 8, hence of 4: the key lines up from index 0.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Largest header this module writes: 2 + 8 length bytes + 4 mask bytes.
pub const MAX_HEADER_LEN: usize = 14;

/// Writes a frame header into `out` and returns its length.
pub fn write_header(
    out: &mut [u8; MAX_HEADER_LEN],
    fin: bool,
    opcode: OpCode,
    payload_len: usize,
    mask: Option<[u8; 4]>,
) -> usize {
    out[0] = (if fin { 0x80 } else { 0 }) | opcode.bits();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut pos = if payload_len < 126 {
        out[1] = mask_bit | payload_len as u8;
        2
    } else if payload_len <= usize::from(u16::MAX) {
        out[1] = mask_bit | 126;
        out[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        4
    } else {
        out[1] = mask_bit | 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    };
    if let Some(m) = mask {
        out[pos..pos + 4].copy_from_slice(&m);
        pos += 4;
    }
    pos
}

/// Appends a whole unfragmented frame to `out`; the payload is masked when `mask` is given.
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) {
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = write_header(&mut hdr, true, opcode, payload.len(), mask);
    out.reserve(n + payload.len());
    out.extend_from_slice(&hdr[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[start..], m);
    }
}

/// A close frame's payload: the code in network order, then the UTF-8 reason.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str, mask: Option<[u8; 4]>) {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    // Control frames carry at most 125 bytes; cut the reason on a char boundary.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode_frame(out, OpCode::Close, &payload, mask);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_every_length_class() {
        for &len in &[0usize, 1, 125, 126, 127, 65535, 65536, 1 << 20] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut hdr = [0u8; MAX_HEADER_LEN];
                let n = write_header(&mut hdr, true, OpCode::Binary, len, mask);
                let h = parse_header(&hdr[..n], mask.is_some(), u64::MAX)
                    .expect("valid")
                    .expect("complete");
                assert_eq!(h.payload_len, len as u64);
                assert_eq!(h.header_len, n);
                assert_eq!(h.mask, mask);
                assert!(h.fin);
                assert_eq!(h.opcode, OpCode::Binary);
                // Every strict prefix is incomplete, never an error.
                for cut in 0..n {
                    assert_eq!(
                        parse_header(&hdr[..cut], mask.is_some(), u64::MAX),
                        Ok(None)
                    );
                }
            }
        }
    }

    #[test]
    fn rejects_protocol_violations() {
        // RSV1 set.
        assert_eq!(
            parse_header(&[0xC1, 0x80], true, 100),
            Err(FrameError::ReservedBits)
        );
        // Opcode 3.
        assert_eq!(
            parse_header(&[0x83, 0x80], true, 100),
            Err(FrameError::ReservedOpcode(3))
        );
        // Unmasked client frame.
        assert_eq!(
            parse_header(&[0x81, 0x00], true, 100),
            Err(FrameError::Masking)
        );
        // Fragmented ping.
        assert_eq!(
            parse_header(&[0x09, 0x80], true, 100),
            Err(FrameError::BadControlFrame)
        );
        // Ping with 126-byte payload.
        assert_eq!(
            parse_header(&[0x89, 0xFE], true, 1000),
            Err(FrameError::BadControlFrame)
        );
        // 64-bit length with the top bit set.
        let mut b = vec![0x82, 0xFF];
        b.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse_header(&b, true, u64::MAX), Err(FrameError::BadLength));
        // Over the size limit.
        assert!(matches!(
            parse_header(&[0x82, 0xFE, 0x01, 0x00], true, 100),
            Err(FrameError::TooLarge {
                len: 256,
                limit: 100
            })
        ));
    }

    #[test]
    fn mask_matches_bytewise_reference_at_every_length() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut fast = data.clone();
            apply_mask(&mut fast, mask);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn encode_masked_frame_decodes_back() {
        let mut out = Vec::new();
        encode_frame(&mut out, OpCode::Text, b"hello", Some([9, 8, 7, 6]));
        let h = parse_header(&out, true, 1000).unwrap().unwrap();
        let mut payload = out[h.header_len..].to_vec();
        apply_mask(&mut payload, h.mask.unwrap());
        assert_eq!(payload, b"hello");
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let reason = "é".repeat(100);
        let mut out = Vec::new();
        encode_close(&mut out, 1000, &reason, None);
        let h = parse_header(&out, false, 125).unwrap().unwrap();
        assert!(h.payload_len <= 125);
        assert!(std::str::from_utf8(&out[h.header_len + 2..]).is_ok());
    }
}
