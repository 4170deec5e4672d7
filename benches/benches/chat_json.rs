//! Parsing a chat frame into a typed message: the gateway's simd-json path
//! beside serde_json (and simd-json's serde mode) doing the same work.

use std::borrow::Cow;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::Deserialize;

const FRAMES: [&str; 3] = [
    r#"{"type":"message","id":"m-1732400000-42","text":"Hi! Do you ship to Norway, and how long does it take?"}"#,
    r#"{"type":"ping","id":"p-17"}"#,
    r#"{"type":"hello","lang":"de-DE","page":"https://shop.example/products/jacket?color=blue","referrer":"https://www.google.com/"}"#,
];

/// What serde derives for the same fields the gateway reads.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Msg<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    lang: Option<Cow<'a, str>>,
    #[serde(borrow)]
    page: Option<Cow<'a, str>>,
    #[serde(borrow)]
    referrer: Option<Cow<'a, str>>,
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("chat_frame_parse");
    let bytes: usize = FRAMES.iter().map(|f| f.len()).sum();
    g.throughput(Throughput::Bytes(bytes as u64));
    let mut bufs: Vec<Vec<u8>> = FRAMES.iter().map(|f| f.as_bytes().to_vec()).collect();
    g.bench_function("gateway_simd_json_typed", |b| {
        b.iter(|| {
            for (buf, f) in bufs.iter_mut().zip(FRAMES) {
                // simd-json parses in place: restore the frame each round.
                buf.copy_from_slice(f.as_bytes());
                black_box(wire::chat::client::parse(buf, 4096).expect("valid"));
            }
        });
    });
    g.bench_function("serde_json_derive", |b| {
        b.iter(|| {
            for f in FRAMES {
                black_box(serde_json::from_slice::<Msg<'_>>(f.as_bytes()).expect("valid"));
            }
        });
    });
    g.bench_function("simd_json_serde_derive", |b| {
        b.iter(|| {
            for (buf, f) in bufs.iter_mut().zip(FRAMES) {
                buf.copy_from_slice(f.as_bytes());
                black_box(
                    simd_json::serde::from_slice::<Msg<'_>>(buf)
                        .expect("valid")
                        .ty
                        .len(),
                );
            }
        });
    });
    g.bench_function("serde_json_value", |b| {
        b.iter(|| {
            for f in FRAMES {
                black_box(
                    serde_json::from_slice::<serde_json::Value>(f.as_bytes()).expect("valid"),
                );
            }
        });
    });
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
