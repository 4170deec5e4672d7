//! WebSocket frame decode and encode: the gateway's sans-IO codec beside
//! tungstenite 0.30's protocol engine, on the same bytes.

use std::hint::black_box;
use std::io::{Cursor, Read, Write};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tungstenite::protocol::{Role as TRole, WebSocket, WebSocketConfig};
use wire::ws::frame::{encode_frame, write_header, MAX_HEADER_LEN};
use wire::ws::{Event, Limits, OpCode, Receiver, Role};

/// A typical chat frame.
const CHAT: &str = r#"{"type":"message","id":"m-1732400000-42","text":"Hi! Do you ship to Norway, and how long does it take?"}"#;

/// `n` masked client text frames carrying `payload`.
fn client_frames(payload: &[u8], n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let key = (i as u32).wrapping_mul(2654435761).to_be_bytes();
        encode_frame(&mut out, OpCode::Text, payload, Some(key));
    }
    out
}

/// A stream that reads from a buffer and discards writes.
struct Io(Cursor<Vec<u8>>);

impl Read for Io {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(b)
    }
}

impl Write for Io {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    let limits = Limits {
        max_frame: 1 << 24,
        max_message: 1 << 24,
    };
    for (name, payload, n) in [
        ("chat_115B_x100", CHAT.as_bytes().to_vec(), 100usize),
        ("text_16KiB_x8", "é".repeat(8192).into_bytes(), 8),
    ] {
        let wire = client_frames(&payload, n);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_with_input(BenchmarkId::new("gateway", name), &wire, |b, wire| {
            let mut buf = wire.clone();
            b.iter(|| {
                // Masked bytes are unmasked in place, so start each round from the wire image.
                buf.copy_from_slice(wire);
                let mut rx = Receiver::default();
                let mut count = 0;
                let used = rx
                    .feed(&mut buf, Role::Server, &limits, |e| {
                        if let Event::Text(t) = e {
                            count += t.len();
                        }
                    })
                    .expect("valid frames");
                black_box((used, count))
            });
        });
        g.bench_with_input(BenchmarkId::new("tungstenite", name), &wire, |b, wire| {
            let cfg = WebSocketConfig::default()
                .read_buffer_size(4096)
                .max_message_size(Some(1 << 24))
                .max_frame_size(Some(1 << 24));
            b.iter(|| {
                let mut ws = WebSocket::from_raw_socket(
                    Io(Cursor::new(wire.clone())),
                    TRole::Server,
                    Some(cfg),
                );
                let mut count = 0;
                for _ in 0..n {
                    count += ws.read().expect("valid frames").len();
                }
                black_box(count)
            });
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    let payload = CHAT.as_bytes();
    g.throughput(Throughput::Elements(100));
    g.bench_function("gateway/chat_115B_x100", |b| {
        let mut out = Vec::with_capacity(16 * 1024);
        b.iter(|| {
            out.clear();
            for _ in 0..100 {
                let mut hdr = [0u8; MAX_HEADER_LEN];
                let n = write_header(&mut hdr, true, OpCode::Text, payload.len(), None);
                out.extend_from_slice(&hdr[..n]);
                out.extend_from_slice(payload);
            }
            black_box(out.len())
        });
    });
    g.bench_function("tungstenite/chat_115B_x100", |b| {
        let mut ws = WebSocket::from_raw_socket(Io(Cursor::new(Vec::new())), TRole::Server, None);
        b.iter(|| {
            for _ in 0..100 {
                ws.write(tungstenite::Message::text(CHAT)).expect("write");
            }
            ws.flush().expect("flush");
        });
    });
    g.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
