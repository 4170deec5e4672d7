//! HTTP/1.1 chunked transfer coding (RFC 9112 §7.1), sans-IO.
//!
//! [`ChunkedDecoder`] is fed byte slices however the network split them and
//! hands out the payload as sub-slices of its input (no copy). Chunk
//! extensions are skipped; trailer fields are read and dropped. Bare `LF` line
//! ends are accepted (as most servers' clients do); anything else malformed is
//! a [`ChunkedError`]. [`encode_chunk`] and [`LAST_CHUNK`] are the encoder.

/// Longest chunk-size line (size plus extensions) accepted.
pub const MAX_SIZE_LINE: usize = 4096;
/// Largest trailer section accepted, in bytes.
pub const MAX_TRAILER: usize = 16 * 1024;

/// The terminating zero-size chunk with an empty trailer.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Why a chunked body is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    /// A chunk-size line had a byte that is not a hex digit where one belongs.
    #[error("chunk size line has an unexpected byte 0x{0:02x}")]
    BadSize(u8),
    /// A chunk-size line had no digits.
    #[error("chunk size line has no digits")]
    EmptySize,
    /// More than 16 hex digits.
    #[error("chunk size overflows 64 bits")]
    Overflow,
    /// The size line (with extensions) is over [`MAX_SIZE_LINE`].
    #[error("chunk size line longer than {MAX_SIZE_LINE} bytes")]
    LineTooLong,
    /// Chunk data was not followed by a line end.
    #[error("chunk data is not followed by CRLF (found 0x{0:02x})")]
    MissingCrlf(u8),
    /// The trailer section is over [`MAX_TRAILER`].
    #[error("chunked trailer longer than {MAX_TRAILER} bytes")]
    TrailerTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits.
    Size { value: u64, digits: u8, line: usize },
    /// Skipping extensions up to the line end.
    Ext { value: u64, line: usize },
    /// Saw CR after the size line; expecting LF.
    SizeLf { value: u64 },
    /// Inside chunk data.
    Data { remaining: u64 },
    /// After chunk data; expecting CR (or a bare LF).
    DataCr,
    /// After chunk data and CR; expecting LF.
    DataLf,
    /// In the trailer; `line` bytes of the current line seen.
    Trailer { line: usize, total: usize },
    /// Saw CR in the trailer; expecting LF.
    TrailerLf { line: usize, total: usize },
    /// The last chunk and trailer were read.
    Done,
}

/// Incremental decoder of one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                digits: 0,
                line: 0,
            },
        }
    }

    /// Whether the whole body (last chunk and trailer) has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `input`, calling `on_data` with each run of payload bytes.
    ///
    /// Returns how many bytes were consumed: all of `input`, unless the body
    /// ended inside it (then the rest belongs to whatever follows the body).
    pub fn feed<'a>(
        &mut self,
        input: &'a [u8],
        mut on_data: impl FnMut(&'a [u8]),
    ) -> Result<usize, ChunkedError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                State::Size {
                    value,
                    digits,
                    line,
                } => {
                    if line + 1 > MAX_SIZE_LINE {
                        return Err(ChunkedError::LineTooLong);
                    }
                    match hex(b) {
                        Some(d) => {
                            if digits >= 16 {
                                return Err(ChunkedError::Overflow);
                            }
                            State::Size {
                                value: (value << 4) | d as u64,
                                digits: digits + 1,
                                line: line + 1,
                            }
                        }
                        None if digits == 0 => {
                            return Err(if matches!(b, b'\r' | b'\n') {
                                ChunkedError::EmptySize
                            } else {
                                ChunkedError::BadSize(b)
                            })
                        }
                        None => match b {
                            b';' | b' ' | b'\t' => State::Ext {
                                value,
                                line: line + 1,
                            },
                            b'\r' => State::SizeLf { value },
                            b'\n' => after_size(value),
                            _ => return Err(ChunkedError::BadSize(b)),
                        },
                    }
                }
                State::Ext { value, line } => match b {
                    b'\r' => State::SizeLf { value },
                    b'\n' => after_size(value),
                    _ if line + 1 > MAX_SIZE_LINE => return Err(ChunkedError::LineTooLong),
                    _ => State::Ext {
                        value,
                        line: line + 1,
                    },
                },
                State::SizeLf { value } => match b {
                    b'\n' => after_size(value),
                    _ => return Err(ChunkedError::BadSize(b)),
                },
                State::Data { remaining } => {
                    let avail = (input.len() - i) as u64;
                    let n = remaining.min(avail) as usize;
                    on_data(&input[i..i + n]);
                    i += n;
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                    continue;
                }
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    b'\n' => State::Size {
                        value: 0,
                        digits: 0,
                        line: 0,
                    },
                    _ => return Err(ChunkedError::MissingCrlf(b)),
                },
                State::DataLf => match b {
                    b'\n' => State::Size {
                        value: 0,
                        digits: 0,
                        line: 0,
                    },
                    _ => return Err(ChunkedError::MissingCrlf(b)),
                },
                State::Trailer { line, total } => {
                    if total + 1 > MAX_TRAILER {
                        return Err(ChunkedError::TrailerTooLong);
                    }
                    match b {
                        b'\r' => State::TrailerLf {
                            line,
                            total: total + 1,
                        },
                        b'\n' if line == 0 => State::Done,
                        b'\n' => State::Trailer {
                            line: 0,
                            total: total + 1,
                        },
                        _ => State::Trailer {
                            line: line + 1,
                            total: total + 1,
                        },
                    }
                }
                State::TrailerLf { line, total } => match b {
                    b'\n' if line == 0 => State::Done,
                    b'\n' => State::Trailer {
                        line: 0,
                        total: total + 1,
                    },
                    _ => return Err(ChunkedError::MissingCrlf(b)),
                },
                State::Done => return Ok(i),
            };
            i += 1;
        }
        Ok(i)
    }
}

fn after_size(value: u64) -> State {
    if value == 0 {
        State::Trailer { line: 0, total: 0 }
    } else {
        State::Data { remaining: value }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends `data` as one chunk (nothing for empty data: an empty chunk would
/// end the body).
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    use std::io::Write as _;
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in the given pieces; returns (payload, consumed, done).
    fn decode_pieces(pieces: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), ChunkedError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut consumed = 0;
        for p in pieces {
            consumed += d.feed(p, |s| out.extend_from_slice(s))?;
            if d.is_done() {
                break;
            }
        }
        Ok((out, consumed, d.is_done()))
    }

    fn encoded(payload: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = payload;
        let mut k = 0;
        while !rest.is_empty() {
            let n = sizes[k % sizes.len()].min(rest.len());
            encode_chunk(&rest[..n], &mut out);
            rest = &rest[n..];
            k += 1;
        }
        out.extend_from_slice(LAST_CHUNK);
        out
    }

    #[test]
    fn every_split_position_gives_the_same_payload() {
        let payload: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut body = encoded(&payload, &[1, 17, 100, 3]);
        // Extensions and a trailer, to cover those states too.
        body.truncate(body.len() - LAST_CHUNK.len());
        body.extend_from_slice(b"5;name=\"v\"\r\nabcde\r\n0;x=1\r\nX-Trailer: 1\r\n\r\nNEXT");
        let mut want = payload.clone();
        want.extend_from_slice(b"abcde");
        for i in 0..=body.len() {
            let (got, consumed, done) = decode_pieces(&[&body[..i], &body[i..]]).unwrap();
            assert_eq!(got, want, "split at {i}");
            assert!(done, "split at {i}");
            assert_eq!(
                consumed,
                body.len() - 4,
                "split at {i}: the bytes after the body stay"
            );
        }
        // Byte by byte.
        let singles: Vec<&[u8]> = body.chunks(1).collect();
        let (got, _, done) = decode_pieces(&singles).unwrap();
        assert_eq!(got, want);
        assert!(done);
    }

    #[test]
    fn three_way_splits() {
        let body = encoded(b"hello, chunked world", &[4, 9]);
        for i in 0..=body.len() {
            for j in i..=body.len() {
                let (got, _, done) = decode_pieces(&[&body[..i], &body[i..j], &body[j..]]).unwrap();
                assert_eq!(got, b"hello, chunked world");
                assert!(done);
            }
        }
    }

    #[test]
    fn bare_lf_line_ends_are_accepted() {
        let (got, _, done) = decode_pieces(&[b"3\nabc\n0\n\n"]).unwrap();
        assert_eq!(got, b"abc");
        assert!(done);
    }

    #[test]
    fn upper_case_hex_and_leading_zeros() {
        let mut body = b"000A\r\n".to_vec();
        body.extend_from_slice(b"0123456789\r\n0\r\n\r\n");
        let (got, _, done) = decode_pieces(&[&body]).unwrap();
        assert_eq!(got, b"0123456789");
        assert!(done);
    }

    #[test]
    fn incomplete_body_is_not_done() {
        let (got, _, done) = decode_pieces(&[b"5\r\nab"]).unwrap();
        assert_eq!(got, b"ab");
        assert!(!done);
    }

    #[test]
    fn errors() {
        let cases: &[(&[u8], ChunkedError)] = &[
            (b"zz\r\n", ChunkedError::BadSize(b'z')),
            (b"\r\n", ChunkedError::EmptySize),
            (b"5x\r\n", ChunkedError::BadSize(b'x')),
            (b"11111111111111111\r\n", ChunkedError::Overflow),
            (b"3\r\nabcX", ChunkedError::MissingCrlf(b'X')),
            (b"3\r\nabc\rX", ChunkedError::MissingCrlf(b'X')),
            (b"3\rX", ChunkedError::BadSize(b'X')),
            (b"HTTP/1.1 200 OK\r\n", ChunkedError::BadSize(b'H')),
        ];
        for (input, want) in cases {
            assert_eq!(decode_pieces(&[input]).unwrap_err(), *want, "{input:?}");
        }
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_SIZE_LINE));
        assert_eq!(
            decode_pieces(&[&long]).unwrap_err(),
            ChunkedError::LineTooLong
        );
        let mut trailer = b"0\r\n".to_vec();
        trailer.extend(std::iter::repeat_n(b'a', MAX_TRAILER + 1));
        assert_eq!(
            decode_pieces(&[&trailer]).unwrap_err(),
            ChunkedError::TrailerTooLong
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let n = rng.usize(0..64);
            let bytes: Vec<u8> = (0..n)
                .map(|_| {
                    *rng.choice(b"0123456789abcdefXYZ;\r\n \t".iter())
                        .unwrap_or(&b'0')
                })
                .collect();
            let _ = decode_pieces(&[&bytes]);
        }
    }
}
