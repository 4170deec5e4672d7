//! Reader threads: each with its own read-only connection.
//!
//! WAL lets readers run beside the writer without blocking it or being blocked
//! by it: a read sees the last commit made before it started. An agent paging
//! through a site's conversations never delays a visitor's `ack`, and a read
//! does not queue behind writes that came after it.
//!
//! Consistency: a read is queued with the number of writes handed to the store
//! so far, and before running waits until the writer has finished that many
//! (usually it already has; otherwise this is the wait for the batches in
//! flight). So a read sees every write queued before it, from any thread: a
//! session evicted and loaded again at once still sees its last items.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::records::{
    Assignment, Author, CannedReply, ConversationState, ConversationSummary, CsatRating,
    DeskDirectory, Mark, OfflineMessage, PageCursor, PageInfo, StoredAgent, StoredItem,
    StoredSession, Transcript,
};
use super::writer::key_hash;
use super::{Shared, StoreError};
use crate::ids::{ConversationId, SessionKey};

/// A read, as a job for whichever reader takes it.
pub(super) type ReadJob = Box<dyn FnOnce(&mut ReadConn) + Send>;

/// What a reader thread receives.
pub(super) enum ReadCmd {
    Read {
        /// Writes handed to the store before this read: wait until applied.
        after: u64,
        queued_at: Instant,
        job: ReadJob,
    },
    Shutdown,
}

/// A reader thread's connection and settings.
pub(super) struct ReadConn {
    pub conn: Connection,
    pub path: PathBuf,
    pub history_limit: usize,
}

/// The conversation columns [`conversation_state`] reads, in its order.
const CONV_COLS: &str = "c.public_id, c.site, c.started_ms, c.lang, c.page, c.referrer, \
     c.needs_human_reason, c.needs_human_ms, c.agent, c.assigned_ms, c.ended_reason, c.ended_ms, \
     c.csat_score, c.csat_comment";
const CONV_NCOLS: usize = 14;

/// The item columns [`item`] reads, in its order.
const ITEM_COLS: &str = "seq, author, text, ts_ms, client_id, reply_id, in_reply_to, sources, \
     confidence, ttft_ms, total_ms, agent_name";

fn conversation_state(r: &Row<'_>) -> rusqlite::Result<ConversationState> {
    let mark = |reason: Option<String>, at_ms: Option<u64>| {
        reason.map(|reason| Mark {
            reason,
            at_ms: at_ms.unwrap_or(0),
        })
    };
    let agent: Option<String> = r.get(8)?;
    let assigned_ms: Option<u64> = r.get(9)?;
    let score: Option<u8> = r.get(12)?;
    let comment: Option<String> = r.get(13)?;
    Ok(ConversationState {
        id: r.get(0)?,
        site: r.get(1)?,
        started_ms: r.get(2)?,
        page: PageInfo {
            lang: r.get(3)?,
            page: r.get(4)?,
            referrer: r.get(5)?,
        },
        needs_human: mark(r.get(6)?, r.get(7)?),
        assigned: agent.map(|agent| Assignment {
            agent,
            at_ms: assigned_ms.unwrap_or(0),
        }),
        ended: mark(r.get(10)?, r.get(11)?),
        csat: score.map(|score| CsatRating { score, comment }),
    })
}

fn item(conversation: &ConversationId, r: &Row<'_>) -> rusqlite::Result<StoredItem> {
    let author: String = r.get(1)?;
    let author = Author::parse(&author).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Text,
            format!("unknown author {author:?}").into(),
        )
    })?;
    Ok(StoredItem {
        conversation: *conversation,
        seq: r.get(0)?,
        author,
        text: r.get(2)?,
        ts_ms: r.get(3)?,
        client_id: r.get(4)?,
        reply_id: r.get(5)?,
        in_reply_to: r.get(6)?,
        sources_json: r.get(7)?,
        confidence: r.get(8)?,
        ttft_ms: r.get(9)?,
        total_ms: r.get(10)?,
        agent_name: r.get(11)?,
    })
}

/// A reader thread's body: answers reads until told to stop.
pub(super) fn run(mut rc: ReadConn, rx: flume::Receiver<ReadCmd>, shared: &Shared) {
    let stats = &shared.stats;
    while let Ok(cmd) = rx.recv() {
        let ReadCmd::Read {
            after,
            queued_at,
            job,
        } = cmd
        else {
            break;
        };
        stats.read_queue_depth.fetch_sub(1, Relaxed);
        shared.wait_applied(after);
        // A panic in a query answers the read with `Closed` (its callback is
        // dropped) and leaves the thread serving the others.
        if catch_unwind(AssertUnwindSafe(|| job(&mut rc))).is_err() {
            tracing::error!("transcript store: a read panicked");
            stats.read_errors.fetch_add(1, Relaxed);
        }
        stats.reads.fetch_add(1, Relaxed);
        stats.read_latency.observe(queued_at.elapsed());
    }
}

impl ReadConn {
    fn sql_err(&self, what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
        let path = self.path.clone();
        let what = what.into();
        move |source| StoreError::Sql { path, what, source }
    }

    /// The session's current conversation, its last `history_limit` items,
    /// next seq and every visitor message id.
    pub fn load_session(&mut self, key: &SessionKey) -> Result<Option<StoredSession>, StoreError> {
        let err = self.sql_err("loading a session");
        let limit = self.history_limit;
        // One read transaction: every query sees the same commit.
        let tx = match self.conn.transaction() {
            Ok(tx) => tx,
            Err(e) => return Err(err(e)),
        };
        let r =
            (|| -> rusqlite::Result<Option<StoredSession>> {
                let session = tx
                .prepare_cached(
                    "SELECT id, site, created_ms, last_seen_ms FROM sessions WHERE key_hash = ?1",
                )?
                .query_row([key_hash(key)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u64>(2)?,
                        r.get::<_, u64>(3)?,
                    ))
                })
                .optional()?;
                let Some((session_id, site, created_ms, last_seen_ms)) = session else {
                    return Ok(None);
                };
                let conv = tx
                    .prepare_cached(&format!(
                        "SELECT {CONV_COLS}, c.id FROM conversations c
                     WHERE c.session_id = ?1 ORDER BY c.id DESC LIMIT 1"
                    ))?
                    .query_row([session_id], |r| {
                        Ok((r.get::<_, i64>(CONV_NCOLS)?, conversation_state(r)?))
                    })
                    .optional()?;
                let Some((conv_id, conversation)) = conv else {
                    // A session always has a conversation; treat a torn one as absent.
                    return Ok(None);
                };
                let mut items = tx
                    .prepare_cached(&format!(
                        "SELECT {ITEM_COLS} FROM items WHERE conv = ?1 ORDER BY seq DESC LIMIT ?2"
                    ))?
                    .query_map(params![conv_id, limit as i64], |r| {
                        item(&conversation.id, r)
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                items.reverse();
                let next_seq: u64 = tx
                    .prepare_cached("SELECT coalesce(max(seq), 0) + 1 FROM items WHERE conv = ?1")?
                    .query_row([conv_id], |r| r.get(0))?;
                let client_ids = tx
                .prepare_cached(
                    "SELECT client_id, seq FROM items WHERE conv = ?1 AND client_id IS NOT NULL",
                )?
                .query_map([conv_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))?
                .collect::<rusqlite::Result<HashMap<_, _>>>()?;
                Ok(Some(StoredSession {
                    site,
                    created_ms,
                    last_seen_ms,
                    conversation,
                    items,
                    next_seq,
                    client_ids,
                }))
            })();
        // Read-only: ending the transaction cannot lose anything.
        let _ = tx.finish();
        r.map_err(err)
    }

    /// A site's conversations, newest first, `limit` per page, after `before`.
    pub fn list_conversations(
        &mut self,
        site: &str,
        limit: usize,
        before: Option<PageCursor>,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        let err = self.sql_err(format!("listing the conversations of site {site:?}"));
        // The item count and the newest item's time come from the (conv, seq) index.
        let select = format!(
            "SELECT {CONV_COLS},
                    (SELECT count(*) FROM items i WHERE i.conv = c.id),
                    (SELECT i.ts_ms FROM items i WHERE i.conv = c.id ORDER BY i.seq DESC LIMIT 1)
             FROM conversations c"
        );
        let map = |r: &Row<'_>| {
            Ok(ConversationSummary {
                conversation: conversation_state(r)?,
                items: r.get(CONV_NCOLS)?,
                last_item_ms: r.get(CONV_NCOLS + 1)?,
            })
        };
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = match before {
            None => self
                .conn
                .prepare_cached(&format!(
                    "{select} WHERE c.site = ?1
                     ORDER BY c.started_ms DESC, c.public_id DESC LIMIT ?2"
                ))
                .and_then(|mut s| {
                    s.query_map(params![site, limit], map)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                }),
            Some(cur) => self
                .conn
                .prepare_cached(&format!(
                    "{select} WHERE c.site = ?1 AND (c.started_ms, c.public_id) < (?2, ?3)
                     ORDER BY c.started_ms DESC, c.public_id DESC LIMIT ?4"
                ))
                .and_then(|mut s| {
                    s.query_map(params![site, cur.started_ms, cur.conversation, limit], map)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                }),
        };
        rows.map_err(err)
    }

    /// A whole conversation.
    pub fn transcript(
        &mut self,
        conversation: &ConversationId,
    ) -> Result<Option<Transcript>, StoreError> {
        let err = self.sql_err(format!(
            "reading the transcript of conversation {}",
            conversation
        ));
        let tx = match self.conn.transaction() {
            Ok(tx) => tx,
            Err(e) => return Err(err(e)),
        };
        let r = (|| -> rusqlite::Result<Option<Transcript>> {
            let conv = tx
                .prepare_cached(&format!(
                    "SELECT {CONV_COLS}, c.id FROM conversations c WHERE c.public_id = ?1"
                ))?
                .query_row([conversation], |r| {
                    Ok((r.get::<_, i64>(CONV_NCOLS)?, conversation_state(r)?))
                })
                .optional()?;
            let Some((conv_id, state)) = conv else {
                return Ok(None);
            };
            let items = tx
                .prepare_cached(&format!(
                    "SELECT {ITEM_COLS} FROM items WHERE conv = ?1 ORDER BY seq"
                ))?
                .query_map([conv_id], |r| item(conversation, r))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let offline = tx
                .prepare_cached(
                    "SELECT email, text, at_ms FROM offline_messages WHERE conv = ?1 ORDER BY id",
                )?
                .query_map([conv_id], |r| {
                    Ok(OfflineMessage {
                        email: r.get(0)?,
                        text: r.get(1)?,
                        at_ms: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(Transcript {
                conversation: state,
                items,
                offline,
            }))
        })();
        let _ = tx.finish();
        r.map_err(err)
    }

    /// Every agent account and canned reply.
    pub fn load_desk(&mut self) -> Result<DeskDirectory, StoreError> {
        let err = self.sql_err("loading the agent desk");
        let conn = &self.conn;
        let r = (|| -> rusqlite::Result<DeskDirectory> {
            let list = |s: String| serde_json::from_str::<Vec<String>>(&s).unwrap_or_default();
            let agents = conn
                .prepare(
                    "SELECT id, name, role, languages, skills, capacity, sites, token_hash, created_ms
                     FROM agents ORDER BY id",
                )?
                .query_map([], |r| {
                    Ok(StoredAgent {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        role: r.get(2)?,
                        languages: list(r.get(3)?),
                        skills: list(r.get(4)?),
                        capacity: r.get(5)?,
                        sites: list(r.get(6)?),
                        token_hash: r.get(7)?,
                        created_ms: r.get(8)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let canned = conn
                .prepare("SELECT site, shortcut, text FROM canned_replies ORDER BY site, shortcut")?
                .query_map([], |r| {
                    Ok(CannedReply {
                        site: r.get(0)?,
                        shortcut: r.get(1)?,
                        text: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(DeskDirectory { agents, canned })
        })();
        r.map_err(err)
    }
}
