//! Between sessions and the store: what a session asks to make durable
//! becomes store writes, a stored session becomes a session again, and the
//! worker's side of both (commits whose completion comes back through the
//! inbox, loads that hold a session's operations until it is in memory).

use std::sync::Arc;
use std::time::Instant;

use crate::chat::server::{Author, Item, Source};
use crate::ids::{ConversationId, SessionKey};
use crate::session::{NotStored, PageInfo, Record, Restored, Session};
use crate::store::{self, StoredItem, StoredSession, Write};

/// Whose records are written: the session, its current conversation and site.
pub(crate) struct Owner<'a> {
    pub(crate) key: SessionKey,
    pub(crate) conversation: ConversationId,
    pub(crate) site: &'a str,
}

impl From<&store::StoreError> for NotStored {
    fn from(e: &store::StoreError) -> Self {
        match e {
            store::StoreError::Closed => NotStored::Closed,
            _ => NotStored::Failed,
        }
    }
}

/// The store's form of a session record.
pub(crate) fn write_for(record: Record, owner: &Owner<'_>, at_ms: u64) -> Write {
    let conversation = owner.conversation;
    match record {
        Record::Item {
            item,
            in_reply_to,
            confidence,
            ttft_ms,
            total_ms,
        } => {
            let author = match item.from {
                Author::Visitor => store::Author::Visitor,
                Author::Ai => store::Author::Ai,
                Author::Agent => store::Author::Agent,
            };
            let mut s = StoredItem::new(conversation, item.seq, author, item.text, item.ts);
            s.client_id = item.id;
            s.reply_id = item.reply;
            s.in_reply_to = in_reply_to;
            s.sources_json = item.sources.and_then(|v| serde_json::to_string(&v).ok());
            s.confidence = confidence;
            s.ttft_ms = ttft_ms;
            s.total_ms = total_ms;
            s.agent_name = item.name;
            Write::Item(s)
        }
        Record::NeedsHuman { reason } => Write::NeedsHuman {
            conversation,
            reason,
            at_ms,
        },
        Record::Csat { score, comment } => Write::Csat {
            conversation,
            score,
            comment,
        },
        Record::Assigned { agent } => Write::Assigned {
            conversation,
            agent,
            at_ms,
        },
        Record::Ended { reason } => Write::Ended {
            conversation,
            reason,
            at_ms,
        },
        Record::Offline { email, text } => Write::OfflineMessage {
            conversation,
            email,
            text,
            at_ms,
        },
        Record::ConversationOpened => Write::ConversationOpened {
            key: owner.key,
            conversation,
            site: owner.site.to_string(),
            started_ms: at_ms,
        },
        Record::Page(p) => Write::PageInfo {
            conversation,
            lang: p.lang().map(str::to_owned),
            page: p.page().map(str::to_owned),
            referrer: p.referrer().map(str::to_owned),
        },
    }
}

/// A transcript item from its stored form.
fn item_from(s: StoredItem) -> Item {
    Item {
        seq: s.seq,
        from: match s.author {
            store::Author::Visitor => Author::Visitor,
            store::Author::Ai => Author::Ai,
            store::Author::Agent => Author::Agent,
        },
        text: s.text,
        ts: s.ts_ms,
        id: s.client_id,
        reply: s.reply_id,
        sources: s
            .sources_json
            .and_then(|j| serde_json::from_str::<Vec<Source>>(&j).ok()),
        name: s.agent_name,
    }
}

/// A session from its stored form.
pub(crate) fn session_from(key: SessionKey, st: StoredSession, now: Instant) -> Session {
    let c = st.conversation;
    let page =
        (c.page.lang.is_some() || c.page.page.is_some() || c.page.referrer.is_some()).then(|| {
            PageInfo::from_parts(
                c.page.lang.as_deref(),
                c.page.page.as_deref(),
                c.page.referrer.as_deref(),
            )
        });
    let restored = Restored {
        items: st.items.into_iter().map(item_from).collect(),
        next_seq: st.next_seq,
        acked: st.client_ids.into_iter().collect(),
        page,
        needs_human: c.needs_human.map(|m| m.reason),
        ended: c.ended.is_some(),
    };
    Session::restore(key, c.id, Arc::from(st.site), now, restored)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
