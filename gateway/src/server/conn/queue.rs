//! A connection's write queue: the output the socket has not taken yet.
//!
//! Writes go straight to the socket; only what it does not take is queued
//! here, in pieces that remember where a WebSocket frame or an HTTP response
//! starts, so that a reader too far behind can be cut off at a frame boundary
//! and still receive a well-framed close. A plain value: no socket, no clock.

use std::collections::VecDeque;

use bytes::{Buf, Bytes};

/// One queued piece of output.
struct Chunk {
    data: Bytes,
    /// First byte of a WebSocket frame or HTTP response: a safe place to cut.
    boundary: bool,
}

/// Output the socket has not taken yet. A connection allocates one only while
/// there is some: an idle connection pays one pointer for its write path.
#[derive(Default)]
pub(crate) struct WriteQueue {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    /// Whether the front chunk has been partly written.
    front_started: bool,
}

impl WriteQueue {
    /// Queues `data`; `boundary` when it starts a frame or a response.
    pub(crate) fn push(&mut self, data: Bytes, boundary: bool) {
        self.bytes += data.len();
        self.chunks.push_back(Chunk { data, boundary });
    }

    /// Queues what a direct write of `head` then a body of `body_len` bytes
    /// left over when the socket took `written` bytes of them. `body_from(i)`
    /// gives the body from byte `i` on (a slice of shared bytes, or a copy).
    pub(crate) fn push_rest(
        &mut self,
        head: &[u8],
        body_len: usize,
        body_from: impl FnOnce(usize) -> Bytes,
        written: usize,
    ) {
        let was_empty = self.chunks.is_empty();
        if written < head.len() {
            self.push(Bytes::copy_from_slice(&head[written..]), written == 0);
            if body_len > 0 {
                self.push(body_from(0), false);
            }
        } else {
            self.push(body_from(written - head.len()), false);
        }
        if was_empty {
            self.front_started = written > 0;
        }
    }

    /// Bytes queued.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The first `max` pieces, in order, for one gathered write.
    pub(crate) fn front(&self, max: usize) -> impl Iterator<Item = &[u8]> {
        self.chunks.iter().take(max).map(|ch| &ch.data[..])
    }

    /// Drops every frame not yet started, keeping the one on its way whole so
    /// the stream stays well framed.
    pub(crate) fn cut_to_frame(&mut self) {
        let keep = match self.chunks.front() {
            Some(front) if self.front_started || !front.boundary => {
                1 + self
                    .chunks
                    .iter()
                    .skip(1)
                    .take_while(|ch| !ch.boundary)
                    .count()
            }
            _ => 0,
        };
        self.chunks.truncate(keep);
        if keep == 0 {
            self.front_started = false;
        }
        self.bytes = self.chunks.iter().map(|ch| ch.data.len()).sum();
    }

    /// Takes `n` written bytes off the front.
    pub(crate) fn consume(&mut self, mut n: usize) {
        self.bytes -= n.min(self.bytes);
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if n >= front.data.len() {
                n -= front.data.len();
                self.chunks.pop_front();
                self.front_started = false;
            } else {
                front.data.advance(n);
                self.front_started = true;
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(q: &WriteQueue) -> Vec<u8> {
        q.front(usize::MAX).flatten().copied().collect()
    }

    #[test]
    fn bytes_count_what_is_queued_and_consumed() {
        let mut q = WriteQueue::default();
        assert!(q.is_empty());
        q.push(Bytes::from_static(b"frame1"), true);
        q.push(Bytes::from_static(b"frame2"), true);
        assert_eq!(q.bytes(), 12);
        q.consume(4);
        assert_eq!((q.bytes(), contents(&q)), (8, b"e1frame2".to_vec()));
        q.consume(8);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn the_rest_of_a_direct_write_keeps_its_boundaries() {
        // Nothing written: the head starts a frame, the body follows it.
        let mut q = WriteQueue::default();
        q.push_rest(b"HEAD", 4, |i| Bytes::from_static(b"body").slice(i..), 0);
        assert_eq!(contents(&q), b"HEADbody");
        q.cut_to_frame();
        assert!(q.is_empty(), "an unstarted frame is dropped whole");

        // Part of the head written: the rest of the frame must stay whole.
        let mut q = WriteQueue::default();
        q.push_rest(b"HEAD", 4, |i| Bytes::from_static(b"body").slice(i..), 2);
        q.push(Bytes::from_static(b"next"), true);
        q.cut_to_frame();
        assert_eq!(contents(&q), b"ADbody");

        // The head and part of the body written: only the body's tail is left.
        let mut q = WriteQueue::default();
        q.push_rest(b"HEAD", 4, |i| Bytes::from_static(b"body").slice(i..), 5);
        assert_eq!((q.bytes(), contents(&q)), (3, b"ody".to_vec()));
    }

    #[test]
    fn a_cut_keeps_the_frame_on_its_way_and_drops_the_rest() {
        let mut q = WriteQueue::default();
        q.push(Bytes::from_static(b"hdr1"), true);
        q.push(Bytes::from_static(b"payload1"), false);
        q.push(Bytes::from_static(b"hdr2"), true);
        q.push(Bytes::from_static(b"payload2"), false);
        q.consume(2);
        q.cut_to_frame();
        assert_eq!(contents(&q), b"r1payload1");
        assert_eq!(q.bytes(), 10);
        // Once that frame is out, a cut leaves nothing, and new frames queue.
        q.consume(10);
        q.cut_to_frame();
        assert!(q.is_empty());
        q.push(Bytes::from_static(b"close"), true);
        assert_eq!(contents(&q), b"close");
    }

    #[test]
    fn the_front_is_limited_to_what_one_write_takes() {
        let mut q = WriteQueue::default();
        for _ in 0..100 {
            q.push(Bytes::from_static(b"x"), true);
        }
        assert_eq!(q.front(64).count(), 64);
    }
}
