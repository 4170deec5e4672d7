//! The long-polling log: the session's server messages addressed by cursor.
//!
//! A cursor counts the server messages delivered to pollers so far; the log
//! keeps the newest `cap` of them (at least 1,000, PROTOCOL.md).

use std::collections::VecDeque;

use bytes::Bytes;

/// What a poller with a given cursor can be told.
#[derive(Debug, PartialEq, Eq)]
pub enum Since {
    /// Messages past the cursor, and the cursor after them.
    Messages(Vec<Bytes>, u64),
    /// Nothing past the cursor yet.
    Nothing,
    /// The cursor is older than what is kept, or from the future.
    Expired,
}

/// Cursor-addressed ring of server messages.
#[derive(Debug)]
pub struct PollLog {
    /// Messages dropped off the front: the cursor of `entries[0]` minus one.
    base: u64,
    entries: VecDeque<Bytes>,
    cap: usize,
}

impl PollLog {
    /// An empty log that keeps the newest `cap` messages.
    pub fn new(cap: usize) -> Self {
        PollLog {
            base: 0,
            entries: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Cursor after the newest message.
    pub fn end(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    /// Appends a message, dropping the oldest past capacity.
    pub fn push(&mut self, msg: Bytes) {
        if self.entries.len() == self.cap {
            self.entries.pop_front();
            self.base += 1;
        }
        self.entries.push_back(msg);
    }

    /// The messages past `cursor`.
    pub fn since(&self, cursor: u64) -> Since {
        if cursor < self.base || cursor > self.end() {
            return Since::Expired;
        }
        if cursor == self.end() {
            return Since::Nothing;
        }
        let from = (cursor - self.base) as usize;
        Since::Messages(self.entries.range(from..).cloned().collect(), self.end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_semantics() {
        let mut log = PollLog::new(3);
        assert_eq!(log.since(0), Since::Nothing);
        for m in ["a", "b", "c", "d"] {
            log.push(Bytes::from(m));
        }
        // "a" fell off: cursor 0 is older than what is kept.
        assert_eq!(log.since(0), Since::Expired);
        assert_eq!(
            log.since(1),
            Since::Messages(
                vec![Bytes::from("b"), Bytes::from("c"), Bytes::from("d")],
                4
            )
        );
        assert_eq!(log.since(3), Since::Messages(vec![Bytes::from("d")], 4));
        assert_eq!(log.since(4), Since::Nothing);
        assert_eq!(log.since(5), Since::Expired);
    }
}
