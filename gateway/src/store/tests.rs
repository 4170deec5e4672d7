//! Tests of the store: schema and migrations, group commit, idempotency,
//! failure isolation, session loading, paging, and durability across a
//! SIGKILL of a child process. `bench_store` (ignored) prints figures.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::*;

const TIMEOUT: Duration = Duration::from_secs(30);
const KEY: SessionKey = SessionKey::from_bytes([7; 16]);
const CONV: ConversationId = ConversationId::from_bytes([1; 12]);

fn open_with(path: &Path, f: impl FnOnce(&mut StoreConfig)) -> Store {
    let mut cfg = StoreConfig::new(path);
    f(&mut cfg);
    Store::open(cfg).expect("open store")
}

fn open(path: &Path) -> Store {
    open_with(path, |_| {})
}

/// Calls `f` with a reply that sends to a channel, and waits for it.
fn wait<T: Send + 'static>(f: impl FnOnce(Reply<T>)) -> Result<T, StoreError> {
    let (tx, rx) = flume::bounded(1);
    f(Box::new(move |r| {
        let _ = tx.send(r);
    }));
    rx.recv_timeout(TIMEOUT).expect("store answered in time")
}

fn write(h: &StoreHandle, w: Write) -> Result<(), StoreError> {
    wait(|done| h.write(w, Some(done)))
}

fn load(h: &StoreHandle, key: &SessionKey) -> Option<StoredSession> {
    wait(|r| h.load_session(key, r)).expect("load_session")
}

fn created(key: SessionKey, conversation: ConversationId, site: &str, ms: u64) -> Write {
    Write::SessionCreated {
        key,
        conversation,
        site: site.into(),
        created_ms: ms,
    }
}

fn visitor(conv: ConversationId, seq: u64, id: &str) -> StoredItem {
    let mut it = StoredItem::new(
        conv,
        seq,
        Author::Visitor,
        format!("question {seq}"),
        1000 + seq,
    );
    it.client_id = Some(id.into());
    it
}

fn reply(conv: ConversationId, seq: u64, to: &str) -> StoredItem {
    let mut it = StoredItem::new(conv, seq, Author::Ai, format!("answer {seq}"), 1000 + seq);
    it.reply_id = Some(format!("r{seq}"));
    it.in_reply_to = Some(to.into());
    it.sources_json = Some(r#"[{"chunk":"c1","title":"T","url":"/t","score":0.9}]"#.into());
    it.confidence = Some(0.75);
    it.ttft_ms = Some(120);
    it.total_ms = Some(900);
    it
}

/// Keeps the writer thread busy inside a `done` until the returned sender is
/// dropped or sent to, so that writes queued meanwhile form one batch.
fn hold_writer(h: &StoreHandle) -> flume::Sender<()> {
    let (entered_tx, entered_rx) = flume::bounded(1);
    let (release_tx, release_rx) = flume::bounded::<()>(1);
    h.write(
        Write::SessionSeen { key: KEY, at_ms: 1 },
        Some(Box::new(move |_| {
            let _ = entered_tx.send(());
            let _ = release_rx.recv_timeout(TIMEOUT);
        })),
    );
    entered_rx
        .recv_timeout(TIMEOUT)
        .expect("writer took the write");
    release_tx
}

/// Queues `w` and returns a receiver for its result.
fn queue(h: &StoreHandle, w: Write) -> flume::Receiver<Result<(), StoreError>> {
    let (tx, rx) = flume::bounded(1);
    h.write(
        w,
        Some(Box::new(move |r| {
            let _ = tx.send(r);
        })),
    );
    rx
}

fn fresh_conn(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("fresh connection")
}

#[test]
fn schema_is_created_in_a_new_folder_and_in_an_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/store.db");
    let store = open(&path);
    write(&store.handle(), created(KEY, CONV, "demo", 5)).unwrap();
    store.close().unwrap();
    let c = fresh_conn(&path);
    let v: u32 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, schema::current_version());
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        tables,
        [
            "agents",
            "canned_replies",
            "conversations",
            "items",
            "offline_messages",
            "sessions"
        ]
    );

    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let store = open(&empty);
    assert!(load(&store.handle(), &KEY).is_none());
    store.close().unwrap();
}

#[test]
fn migrations_apply_in_order_and_refuse_newer_or_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open(&path);
    write(&store.handle(), created(KEY, CONV, "demo", 5)).unwrap();
    store.close().unwrap();

    // A later migration upgrades the file in place and keeps its rows.
    let mut c = Connection::open(&path).unwrap();
    let mut more = schema::MIGRATIONS.to_vec();
    more.push(schema::Migration {
        name: "test column",
        sql: "ALTER TABLE conversations ADD COLUMN tag TEXT",
    });
    let current = schema::current_version();
    assert_eq!(schema::migrate(&mut c, &more).unwrap(), current);
    assert_eq!(schema::migrate(&mut c, &more).unwrap(), current + 1);
    let n: i64 = c
        .query_row(
            "SELECT count(*) FROM conversations WHERE tag IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);

    // That file is now newer than this build knows.
    drop(c);
    let err = Store::open(StoreConfig::new(&path)).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, .. } if found == current + 1),
        "{err}"
    );
    assert!(err.to_string().contains("store.db"), "{err}");

    // Another program's database is left alone.
    let foreign = dir.path().join("foreign.db");
    Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let err = Store::open(StoreConfig::new(&foreign)).unwrap_err();
    assert!(matches!(err, StoreError::ForeignFile { .. }), "{err}");
    let mode: String = fresh_conn(&foreign)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "the foreign file was left as it was");
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open(&path);
    let h = store.handle();
    write(&h, created(KEY, CONV, "demo", 100)).unwrap();
    write(
        &h,
        Write::PageInfo {
            conversation: CONV,
            lang: Some("de".into()),
            page: Some("https://shop.example/cart".into()),
            referrer: None,
        },
    )
    .unwrap();
    write(&h, Write::Item(visitor(CONV, 1, "m1"))).unwrap();
    write(&h, Write::Item(reply(CONV, 2, "m1"))).unwrap();
    let mut agent = StoredItem::new(CONV, 3, Author::Agent, "hello, Anna here", 1300);
    agent.agent_name = Some("Anna".into());
    write(&h, Write::Item(agent.clone())).unwrap();
    for w in [
        Write::NeedsHuman {
            conversation: CONV,
            reason: "visitor asked".into(),
            at_ms: 1200,
        },
        Write::Assigned {
            conversation: CONV,
            agent: Some("Anna".into()),
            at_ms: 1250,
        },
        Write::Ended {
            conversation: CONV,
            reason: "resolved".into(),
            at_ms: 1400,
        },
        Write::Csat {
            conversation: CONV,
            score: 5,
            comment: Some("great".into()),
        },
        Write::OfflineMessage {
            conversation: CONV,
            email: "v@example.com".into(),
            text: "call me".into(),
            at_ms: 1500,
        },
        Write::SessionSeen {
            key: KEY,
            at_ms: 2000,
        },
    ] {
        write(&h, w).unwrap();
    }
    drop(h);
    store.close().unwrap();

    let store = open(&path);
    let h = store.handle();
    let s = load(&h, &KEY).expect("session");
    assert_eq!(
        (s.site.as_str(), s.created_ms, s.last_seen_ms),
        ("demo", 100, 2000)
    );
    let c = &s.conversation;
    assert_eq!(c.id, CONV);
    assert_eq!(c.page.lang.as_deref(), Some("de"));
    assert_eq!(c.page.page.as_deref(), Some("https://shop.example/cart"));
    assert_eq!(c.page.referrer, None);
    assert_eq!(
        c.needs_human,
        Some(Mark {
            reason: "visitor asked".into(),
            at_ms: 1200
        })
    );
    assert_eq!(
        c.assigned,
        Some(Assignment {
            agent: "Anna".into(),
            at_ms: 1250
        })
    );
    assert_eq!(
        c.ended.as_ref().map(|m| m.reason.as_str()),
        Some("resolved")
    );
    assert_eq!(
        c.csat,
        Some(CsatRating {
            score: 5,
            comment: Some("great".into())
        })
    );
    assert_eq!(
        s.items,
        vec![visitor(CONV, 1, "m1"), reply(CONV, 2, "m1"), agent]
    );
    assert_eq!(s.next_seq, 4);
    assert_eq!(s.client_ids, HashMap::from([("m1".to_string(), 1)]));

    let t = wait(|r| h.transcript(&CONV, r))
        .unwrap()
        .expect("transcript");
    assert_eq!(t.items, s.items);
    assert_eq!(t.conversation, s.conversation);
    assert_eq!(t.offline.len(), 1);
    assert_eq!(t.offline[0].email, "v@example.com");
    assert!(
        wait(|r| h.transcript(&ConversationId::from_bytes([9; 12]), r))
            .unwrap()
            .is_none()
    );
    assert!(load(&h, &SessionKey::from_bytes([9; 16])).is_none());
}

#[test]
fn concurrent_writes_group_commit_and_done_runs_after_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open_with(&path, |c| c.max_batch = 1024);
    let h = store.handle();
    write(&h, created(KEY, CONV, "demo", 1)).unwrap();

    let release = hold_writer(&h);
    let commits_before = store.stats().commits.load(Ordering::SeqCst);
    let (tx, rx) = flume::unbounded();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let h = h.clone();
            let tx = tx.clone();
            let path = path.clone();
            std::thread::spawn(move || {
                for i in 0..100u64 {
                    let seq = 1 + t * 100 + i;
                    let tx = tx.clone();
                    let path = path.clone();
                    h.write(
                        Write::Item(visitor(CONV, seq, &format!("m{seq}"))),
                        Some(Box::new(move |r| {
                            // Visible to a connection that did not exist before the commit.
                            let seen: i64 = fresh_conn(&path)
                                .query_row(
                                    "SELECT count(*) FROM items WHERE seq = ?1",
                                    [seq],
                                    |r| r.get(0),
                                )
                                .unwrap_or(-1);
                            let _ = tx.send((seq, r.is_ok(), seen));
                        })),
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(h.queue_depth(), 400);
    drop(release);
    let mut seen = Vec::new();
    for _ in 0..400 {
        let (seq, ok, visible) = rx.recv_timeout(TIMEOUT).expect("every done runs");
        assert!(ok, "write {seq} failed");
        assert_eq!(visible, 1, "write {seq}'s done ran before it was visible");
        seen.push(seq);
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=400).collect::<Vec<_>>());
    let commits = store.stats().commits.load(Ordering::SeqCst) - commits_before;
    assert!(commits <= 2, "400 queued writes took {commits} commits");
    assert_eq!(h.queue_depth(), 0);
    // One batch of 257-512 writes.
    let big = BATCH_BUCKETS.iter().position(|&b| b == 512).unwrap();
    assert_eq!(store.stats().batch_sizes[big].load(Ordering::SeqCst), 1);
}

#[test]
fn a_visitor_resend_is_stored_once_and_reported_ok() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store.db"));
    let h = store.handle();
    write(&h, created(KEY, CONV, "demo", 1)).unwrap();
    write(&h, Write::Item(visitor(CONV, 1, "m1"))).unwrap();
    // The same message again, and again under another seq (a resend after a restart).
    write(&h, Write::Item(visitor(CONV, 1, "m1"))).unwrap();
    write(&h, Write::Item(visitor(CONV, 2, "m1"))).unwrap();
    assert_eq!(store.stats().duplicates.load(Ordering::SeqCst), 2);
    let s = load(&h, &KEY).unwrap();
    assert_eq!(s.items.len(), 1);
    assert_eq!(s.next_seq, 2);
    assert_eq!(s.client_ids["m1"], 1);
    // The same client id in another conversation is another message.
    let other = ConversationId::from_bytes([2; 12]);
    write(
        &h,
        created(SessionKey::from_bytes([8; 16]), other, "demo", 1),
    )
    .unwrap();
    write(&h, Write::Item(visitor(other, 1, "m1"))).unwrap();
    assert_eq!(store.stats().duplicates.load(Ordering::SeqCst), 2);
}

#[test]
fn a_failed_write_fails_alone_in_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store.db"));
    let h = store.handle();
    write(&h, created(KEY, CONV, "demo", 1)).unwrap();
    let release = hold_writer(&h);
    let commits_before = store.stats().commits.load(Ordering::SeqCst);
    let results: Vec<_> = [
        Write::Item(visitor(CONV, 1, "m1")),
        Write::Item(visitor(ConversationId::from_bytes([9; 12]), 1, "x")), // unknown conversation
        Write::Item(visitor(CONV, 2, "m2")),
        Write::Item(visitor(CONV, 1, "other")), // seq 1 taken by another message
        Write::Csat {
            conversation: CONV,
            score: 9,
            comment: None,
        },
        created(SessionKey::from_bytes([8; 16]), CONV, "demo", 1), // conversation id taken: both rows undone
        Write::Ended {
            conversation: CONV,
            reason: "resolved".into(),
            at_ms: 5,
        },
    ]
    .into_iter()
    .map(|w| queue(&h, w))
    .collect();
    drop(release);
    let results: Vec<_> = results
        .iter()
        .map(|rx| rx.recv_timeout(TIMEOUT).unwrap())
        .collect();
    let ok: Vec<bool> = results.iter().map(|r| r.is_ok()).collect();
    assert_eq!(ok, [true, false, true, false, false, false, true]);
    let msg = |i: usize| results[i].as_ref().unwrap_err().to_string();
    assert!(msg(1).contains("c_CQkJCQkJCQkJCQkJ"), "{}", msg(1));
    assert!(msg(3).contains("UNIQUE"), "{}", msg(3));
    assert!(msg(4).contains("score 9"), "{}", msg(4));
    assert_eq!(
        store.stats().commits.load(Ordering::SeqCst) - commits_before,
        1
    );
    assert_eq!(store.stats().batch_retries.load(Ordering::SeqCst), 0);
    assert_eq!(store.stats().write_errors.load(Ordering::SeqCst), 4);
    let s = load(&h, &KEY).unwrap();
    assert_eq!(s.items.iter().map(|i| i.seq).collect::<Vec<_>>(), [1, 2]);
    assert!(s.conversation.ended.is_some());
    // The half of the failed SessionCreated that would have worked is not there.
    assert!(load(&h, &SessionKey::from_bytes([8; 16])).is_none());
}

#[test]
fn a_failed_commit_retries_the_batch_write_by_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store.db"));
    let h = store.handle();
    write(&h, created(KEY, CONV, "demo", 1)).unwrap();
    let release = hold_writer(&h);
    store
        .handle()
        .shared
        .fail_commits
        .store(1, Ordering::SeqCst);
    let results: Vec<_> = [
        Write::Item(visitor(CONV, 1, "m1")),
        Write::Item(visitor(ConversationId::from_bytes([9; 12]), 1, "x")),
        Write::Item(visitor(CONV, 2, "m2")),
    ]
    .into_iter()
    .map(|w| queue(&h, w))
    .collect();
    drop(release);
    let ok: Vec<bool> = results
        .iter()
        .map(|rx| rx.recv_timeout(TIMEOUT).unwrap().is_ok())
        .collect();
    assert_eq!(ok, [true, false, true]);
    assert_eq!(store.stats().batch_retries.load(Ordering::SeqCst), 1);
    let s = load(&h, &KEY).unwrap();
    assert_eq!(s.next_seq, 3);
}

#[test]
fn write_many_stores_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store.db"));
    let h = store.handle();
    // A new session with its first message, under one `done`.
    wait(|done| {
        h.write_many(
            vec![
                created(KEY, CONV, "demo", 1),
                Write::Item(visitor(CONV, 1, "m1")),
            ],
            Some(done),
        )
    })
    .unwrap();
    // The second write fails (seq 1 is taken): the first is undone with it.
    let err = wait(|done| {
        h.write_many(
            vec![
                Write::Item(visitor(CONV, 2, "m2")),
                Write::Item(visitor(CONV, 1, "m3")),
            ],
            Some(done),
        )
    })
    .unwrap_err();
    assert!(err.to_string().contains("UNIQUE"), "{err}");
    let s = load(&h, &KEY).unwrap();
    assert_eq!(s.items.len(), 1);
    assert_eq!(s.next_seq, 2);
    assert!(!s.client_ids.contains_key("m2"));
}

#[test]
fn load_session_returns_the_newest_items_in_order_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open(&path);
    let h = store.handle();
    write(&h, created(KEY, CONV, "demo", 1)).unwrap();
    for pair in 0..1500u64 {
        let (q, a) = (2 * pair + 1, 2 * pair + 2);
        let id = format!("m{q}");
        h.write(Write::Item(visitor(CONV, q, &id)), None);
        h.write(Write::Item(reply(CONV, a, &id)), None);
    }
    drop(h);
    store.close().unwrap();

    let store = open_with(&path, |c| c.history_limit = 200);
    let s = load(&store.handle(), &KEY).unwrap();
    assert_eq!(s.items.len(), 200);
    assert_eq!(
        s.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
        (2801..=3000).collect::<Vec<_>>()
    );
    assert_eq!(s.items[199], reply(CONV, 3000, "m2999"));
    assert_eq!(s.next_seq, 3001);
    assert_eq!(s.client_ids.len(), 1500);
    assert_eq!(s.client_ids["m1"], 1);
    assert_eq!(s.client_ids["m2999"], 2999);
}

#[test]
fn a_read_sees_every_write_queued_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store.db"));
    let h = store.handle();
    h.write(created(KEY, CONV, "demo", 1), None);
    for seq in 1..=500 {
        h.write(Write::Item(visitor(CONV, seq, &format!("m{seq}"))), None);
    }
    // No waiting for the writes: the read waits for them.
    let s = load(&h, &KEY).expect("the session written just before");
    assert_eq!(s.next_seq, 501);
}

#[test]
fn a_new_conversation_follows_an_ended_one_with_its_page_info() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store.db"));
    let h = store.handle();
    let second = ConversationId::from_bytes([2; 12]);
    for w in [
        created(KEY, CONV, "demo", 1),
        Write::PageInfo {
            conversation: CONV,
            lang: Some("fr".into()),
            page: Some("/faq".into()),
            referrer: Some("https://search.example".into()),
        },
        Write::Item(visitor(CONV, 1, "m1")),
        Write::Ended {
            conversation: CONV,
            reason: "timeout".into(),
            at_ms: 50,
        },
    ] {
        write(&h, w).unwrap();
    }
    assert!(load(&h, &KEY).unwrap().conversation.ended.is_some());
    write(
        &h,
        Write::ConversationOpened {
            key: KEY,
            conversation: second,
            site: "demo".into(),
            started_ms: 60,
        },
    )
    .unwrap();
    write(&h, Write::Item(visitor(second, 1, "m1"))).unwrap();
    let s = load(&h, &KEY).unwrap();
    assert_eq!(s.conversation.id, second);
    assert_eq!(s.conversation.ended, None);
    assert_eq!(s.conversation.page.lang.as_deref(), Some("fr"));
    assert_eq!(s.next_seq, 2);
    let old = wait(|r| h.transcript(&CONV, r)).unwrap().unwrap();
    assert_eq!(old.items.len(), 1);
    assert_eq!(old.conversation.ended.unwrap().reason, "timeout");
    // A conversation for a session that does not exist is refused.
    let err = write(
        &h,
        Write::ConversationOpened {
            key: SessionKey::from_bytes([3; 16]),
            conversation: ConversationId::from_bytes([3; 12]),
            site: "demo".into(),
            started_ms: 1,
        },
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::UnknownSession { .. }), "{err}");
}

#[test]
fn conversations_are_listed_by_site_newest_first_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open(&path);
    let h = store.handle();
    // 25 conversations on "a" (start times with ties), 5 on "b".
    for i in 0..30u8 {
        let site = if i < 25 { "a" } else { "b" };
        let conv = ConversationId::from_bytes([i; 12]);
        h.write(
            created(
                SessionKey::from_bytes([i; 16]),
                conv,
                site,
                u64::from(i / 2),
            ),
            None,
        );
        h.write(Write::Item(visitor(conv, 1, "m1")), None);
    }
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = wait(|r| h.list_conversations("a", 10, before, r)).unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(ConversationSummary::cursor);
        pages.push(page);
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
    let all: Vec<_> = pages.concat();
    let ids: Vec<u8> = all
        .iter()
        .map(|s| s.conversation.id.as_bytes()[0])
        .collect();
    assert_eq!(ids, (0..25u8).rev().collect::<Vec<_>>());
    assert!(all
        .iter()
        .all(|s| s.items == 1 && s.last_item_ms == Some(1001)));
    assert!(all.iter().all(|s| s.conversation.site == "a"));

    // One index range, no sort.
    let plan: Vec<String> = fresh_conn(&path)
        .prepare(
            "EXPLAIN QUERY PLAN SELECT id FROM conversations c WHERE c.site = 'a'
             AND (c.started_ms, c.public_id) < (5, x'00')
             ORDER BY c.started_ms DESC, c.public_id DESC LIMIT 10",
        )
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        plan.iter().any(|p| p.contains("conversations_by_site"))
            && !plan.iter().any(|p| p.contains("TEMP B-TREE")),
        "{plan:?}"
    );
}

#[test]
fn the_session_token_is_never_stored_or_shown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let key = SessionKey::from_bytes(*b"SECRET-TOKEN-123");
    let store = open(&path);
    write(&store.handle(), created(key, CONV, "demo", 1)).unwrap();
    store.close().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert!(
        !bytes.windows(16).any(|w| w == key.as_bytes()),
        "token found in the file"
    );
    let shown = format!("{:?}", created(key, CONV, "demo", 1));
    assert!(
        !shown.contains("SECRET") && !shown.contains("83, 69"),
        "{shown}"
    );
    assert!(shown.contains("c_AQEBAQEBAQEBAQEB"), "{shown}");
}

#[test]
fn requests_after_close_get_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store.db"));
    let h = store.handle();
    store.close().unwrap();
    assert!(matches!(
        write(&h, created(KEY, CONV, "demo", 1)),
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        wait(|r| h.load_session(&KEY, r)),
        Err(StoreError::Closed)
    ));
}

#[test]
fn a_panicking_callback_does_not_stop_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("store.db"));
    let h = store.handle();
    h.write(
        created(KEY, CONV, "demo", 1),
        Some(Box::new(|_| {
            panic!("callback panics (expected in this test)")
        })),
    );
    write(&h, Write::Item(visitor(CONV, 1, "m1"))).unwrap();
    assert_eq!(load(&h, &KEY).unwrap().next_seq, 2);
}

#[test]
fn checkpoints_run_beside_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = open_with(&path, |c| c.checkpoint_pages = 8);
    let h = store.handle();
    write(&h, created(KEY, CONV, "demo", 1)).unwrap();
    for seq in 1..=2000 {
        h.write(Write::Item(visitor(CONV, seq, &format!("m{seq}"))), None);
    }
    write(&h, Write::SessionSeen { key: KEY, at_ms: 9 }).unwrap();
    drop(h);
    let stats = Arc::clone(store.stats());
    // Closing joins the checkpoint thread after it has served every wake-up.
    store.close().unwrap();
    assert!(stats.checkpoints.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        stats.checkpoint_latency.count.load(Ordering::SeqCst),
        stats.checkpoints.load(Ordering::SeqCst)
    );
    // Closing checkpointed and truncated the WAL.
    let wal = std::fs::metadata(dir.path().join("store.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0);
    let store = open(&path);
    assert_eq!(load(&store.handle(), &KEY).unwrap().next_seq, 2001);
}

// ---- durability across SIGKILL ----

const CHILD_PATH_ENV: &str = "LC_STORE_CRASH_CHILD_PATH";
const CHILD_SYNC_ENV: &str = "LC_STORE_CRASH_CHILD_SYNC";

/// This module's path without the crate name: `tests` here, `store::tests`
/// inside the gateway.
fn child_test_name() -> String {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, m)| m);
    format!("{module}::crash_child")
}

/// The child process of the crash tests: does nothing unless started by
/// them. It writes items from four threads, 32 in flight each, and prints
/// `acked SEQ` as each write's `done` runs, until it is killed.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_PATH_ENV) else {
        return;
    };
    let full = std::env::var(CHILD_SYNC_ENV).is_ok_and(|s| s == "full");
    let store = open_with(Path::new(&path), |c| {
        c.sync = if full {
            SyncMode::Full
        } else {
            SyncMode::Normal
        }
    });
    let h = store.handle();
    write(&h, created(KEY, CONV, "demo", 1)).unwrap();
    let next = Arc::new(AtomicU64::new(1));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let h = h.clone();
            let next = Arc::clone(&next);
            std::thread::spawn(move || {
                let (permits, returned) = flume::bounded::<()>(32);
                loop {
                    // Blocks while 32 writes of this thread are in flight.
                    if permits.send(()).is_err() {
                        return;
                    }
                    let seq = next.fetch_add(1, Ordering::SeqCst);
                    if seq > 5_000_000 {
                        return;
                    }
                    let returned = returned.clone();
                    h.write(
                        Write::Item(visitor(CONV, seq, &format!("m{seq}"))),
                        Some(Box::new(move |r| {
                            if r.is_ok() {
                                let mut out = std::io::stdout().lock();
                                let _ = writeln!(out, "acked {seq}");
                                let _ = out.flush();
                            }
                            let _ = returned.try_recv();
                        })),
                    );
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

fn crash_durability(sync: &str) {
    use std::os::unix::process::ExitStatusExt;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            &child_test_name(),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_PATH_ENV, &path)
        .env(CHILD_SYNC_ENV, sync)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = flume::unbounded();
    let lines = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(seq) = line.strip_prefix("acked ") {
                let _ = tx.send(seq.parse::<u64>().expect("a seq"));
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acked = Vec::new();
    while acked.len() < 3000 {
        match rx.recv_deadline(deadline) {
            Ok(seq) => acked.push(seq),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child acked only {} writes in 60 s", acked.len());
            }
        }
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "the child was killed mid-stream: {status:?}"
    );
    lines.join().unwrap();
    // Lines printed before the kill count too: their `done` had run.
    acked.extend(rx.drain());

    let store = open(&path);
    let s = load(&store.handle(), &KEY).expect("the session survived");
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|seq| s.client_ids.get(&format!("m{seq}")) != Some(seq))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acked writes lost after SIGKILL ({sync}): {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(s.client_ids.len() >= acked.len());
    println!(
        "sync {sync}: {} acked before SIGKILL, {} stored",
        acked.len(),
        s.client_ids.len()
    );
    store.close().unwrap();
    let ok: String = fresh_conn(&path)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn acked_writes_survive_sigkill_with_sync_normal() {
    crash_durability("normal");
}

#[test]
fn acked_writes_survive_sigkill_with_sync_full() {
    crash_durability("full");
}

// ---- figures (not asserted) ----

struct Figures {
    writes: usize,
    secs: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    commits: u64,
    mean_commit_us: f64,
    checkpoints: u64,
    forced: u64,
    mean_checkpoint_ms: f64,
    wal_bytes: u64,
}

/// `producers` threads, each with `window` writes in flight, `total` writes.
fn run_load(
    path: &Path,
    sync: SyncMode,
    max_batch: usize,
    producers: usize,
    window: usize,
    total: usize,
) -> Figures {
    let store = open_with(path, |c| {
        c.sync = sync;
        c.max_batch = max_batch;
    });
    let h = store.handle();
    let per = total / producers;
    for p in 0..producers {
        write(
            &h,
            created(
                SessionKey::from_bytes([p as u8; 16]),
                ConversationId::from_bytes([p as u8; 12]),
                "bench",
                1,
            ),
        )
        .unwrap();
    }
    let text = "How long does shipping to Lyon take, and can I return the jacket?".to_string();
    let start = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let h = h.clone();
            let text = text.clone();
            std::thread::spawn(move || {
                let (tx, rx) = flume::unbounded::<Duration>();
                let mut lat = Vec::with_capacity(per);
                let mut in_flight = 0;
                for i in 0..per {
                    if in_flight == window {
                        lat.push(rx.recv().unwrap());
                        in_flight -= 1;
                    }
                    let seq = i as u64 + 1;
                    let mut it = StoredItem::new(
                        ConversationId::from_bytes([p as u8; 12]),
                        seq,
                        Author::Visitor,
                        &text,
                        seq,
                    );
                    it.client_id = Some(format!("m{seq}"));
                    let tx = tx.clone();
                    let t0 = Instant::now();
                    h.write(
                        Write::Item(it),
                        Some(Box::new(move |r| {
                            r.expect("bench write");
                            let _ = tx.send(t0.elapsed());
                        })),
                    );
                    in_flight += 1;
                }
                for _ in 0..in_flight {
                    lat.push(rx.recv().unwrap());
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let stats = store.stats();
    let commits = stats.commits.load(Ordering::SeqCst) - producers as u64;
    let commit = &stats.commit_latency;
    let mean_commit_us =
        commit.sum_us.load(Ordering::SeqCst) as f64 / commit.count.load(Ordering::SeqCst) as f64;
    let checkpoints = stats.checkpoints.load(Ordering::SeqCst);
    let forced = stats.writer_checkpoints.load(Ordering::SeqCst);
    let ck = &stats.writer_checkpoint_latency;
    let mean_checkpoint_ms = ck.sum_us.load(Ordering::SeqCst) as f64
        / 1000.0
        / ck.count.load(Ordering::SeqCst).max(1) as f64;
    let mut wal_name = path.as_os_str().to_owned();
    wal_name.push("-wal");
    let wal_bytes = std::fs::metadata(&wal_name).map_or(0, |m| m.len());
    drop(h);
    store.close().unwrap();
    Figures {
        writes: lat.len(),
        secs,
        p50: lat[lat.len() / 2],
        p99: lat[lat.len() * 99 / 100],
        max: lat[lat.len() - 1],
        commits,
        mean_commit_us,
        checkpoints,
        forced,
        mean_checkpoint_ms,
        wal_bytes,
    }
}

/// Prints ack latency (write queued to `done`) and throughput, with group
/// commit and with one write per transaction, in both sync modes. Run with
/// `cargo test --release -- --ignored --nocapture bench_store`; the files go
/// to `LC_STORE_BENCH_DIR` (default: the temporary folder), which should be
/// on the disk the gateway will use.
#[test]
#[ignore = "prints figures; run by hand"]
fn bench_store() {
    let base = std::env::var_os("LC_STORE_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).unwrap();
    println!(
        "{:<7} {:<28} {:>7} {:>9} {:>9} {:>9} {:>9} {:>8} {:>10}",
        "sync",
        "load",
        "writes",
        "writes/s",
        "ack p50",
        "ack p99",
        "ack max",
        "batch",
        "commit avg"
    );
    let mut n = 0;
    for sync in [SyncMode::Normal, SyncMode::Full] {
        // (label, max_batch, producers, in flight each, writes)
        let runs: [(&str, usize, usize, usize, usize); 5] = [
            ("1 writer, 1 in flight", 512, 1, 1, 2_000),
            ("1 writer, 1 in flight, 1/tx", 1, 1, 1, 2_000),
            ("8 x 16 in flight, group", 512, 8, 16, 40_000),
            ("8 x 16 in flight, 1/tx", 1, 8, 16, 8_000),
            ("8 x 16 in flight, group, long", 512, 8, 16, 300_000),
        ];
        for (label, max_batch, producers, window, total) in runs {
            n += 1;
            let f = run_load(
                &dir.path().join(format!("bench{n}.db")),
                sync,
                max_batch,
                producers,
                window,
                total,
            );
            println!(
                "{:<7} {:<28} {:>7} {:>9.0} {:>9.3?} {:>9.3?} {:>9.3?} {:>8.1} {:>8.0}us {:>3}+{} {:>7.1}ms {:>8.1}",
                format!("{sync:?}"),
                label,
                f.writes,
                f.writes as f64 / f.secs,
                f.p50,
                f.p99,
                f.max,
                f.writes as f64 / f.commits.max(1) as f64,
                f.mean_commit_us,
                f.checkpoints,
                f.forced,
                f.mean_checkpoint_ms,
                f.wal_bytes as f64 / (1024.0 * 1024.0),
            );
        }
    }
}
