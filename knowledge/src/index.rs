//! The vector index: cosine top-k over L2-normalised vectors.
//!
//! Below [`DEFAULT_ANN_THRESHOLD`] vectors a query scans every vector (exact,
//! and fast enough: see the README's figures); from there on an HNSW graph
//! (`instant-distance`) answers instead, and the exact scan stays available.
//! The graph is built whole from the vectors (the crate has no incremental
//! insert) with a fixed seed, so the same vectors give the same graph.
//! Building it takes minutes at 100k vectors, so the knowledge base builds it
//! on a background thread (one core) after each change and at load, and
//! answers exactly until it is ready ([`VectorIndex::ann_builder`]).

use crate::lexical::sort_hits;
use instant_distance::{Builder, HnswMap, Search};
use std::sync::{Arc, OnceLock};

/// Vectors from which the approximate index answers by default: below it an
/// exact scan costs less than a third of embedding the query with MiniLM.
pub const DEFAULT_ANN_THRESHOLD: usize = 50_000;

/// `ef_search` of the HNSW graph: candidates kept while searching.
const EF_SEARCH: usize = 64;
/// `ef_construction` of the HNSW graph.
const EF_CONSTRUCTION: usize = 64;

type Graph = HnswMap<Point, u32>;

/// Dot product, with eight accumulators so the compiler vectorises it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// A vector as a point of the HNSW graph; distance is 1 - cosine.
#[derive(Clone, Debug)]
struct Point(Arc<[f32]>);

impl instant_distance::Point for Point {
    fn distance(&self, other: &Self) -> f32 {
        (1.0 - dot(&self.0, &other.0)).max(0.0)
    }
}

/// Cosine top-k over a fixed set of vectors.
pub struct VectorIndex {
    dim: usize,
    vectors: Vec<Arc<[f32]>>,
    ann: Arc<OnceLock<Graph>>,
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("dim", &self.dim)
            .field("len", &self.vectors.len())
            .field("ann", &self.has_ann())
            .finish()
    }
}

impl VectorIndex {
    /// An index over `vectors` (each `dim` long and unit length, or zero);
    /// the HNSW graph is built now, in this thread (and rayon's global pool),
    /// when there are at least `ann_threshold`.
    pub fn new(dim: usize, vectors: Vec<Arc<[f32]>>, ann_threshold: usize) -> VectorIndex {
        let index = VectorIndex::exact_only(dim, vectors);
        if index.len() >= ann_threshold && !index.is_empty() {
            index.ann_builder()();
        }
        index
    }

    /// An index over `vectors` that scans them all until a graph is built
    /// with [`VectorIndex::ann_builder`].
    pub fn exact_only(dim: usize, vectors: Vec<Arc<[f32]>>) -> VectorIndex {
        debug_assert!(vectors.iter().all(|v| v.len() == dim));
        VectorIndex {
            dim,
            vectors,
            ann: Arc::new(OnceLock::new()),
        }
    }

    /// A job that builds the HNSW graph and installs it in this index (and
    /// nowhere else): run it on any thread; searches use the graph from
    /// then on. Running it again, or after the graph is there, does nothing.
    pub fn ann_builder(&self) -> impl FnOnce() + Send + 'static {
        let vectors = self.vectors.clone();
        let cell = self.ann.clone();
        move || {
            if cell.get().is_some() || vectors.is_empty() {
                return;
            }
            let points = vectors.into_iter().map(Point).collect::<Vec<_>>();
            let ids = (0..points.len() as u32).collect();
            let graph = Builder::default()
                .ef_construction(EF_CONSTRUCTION)
                .ef_search(EF_SEARCH)
                .seed(0x6b62)
                .build(points, ids);
            let _ = cell.set(graph);
        }
    }

    /// Dimensions of the vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// How many vectors are indexed.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// Whether no vector is indexed.
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// Whether the approximate index is built.
    pub fn has_ann(&self) -> bool {
        self.ann.get().is_some()
    }

    /// The vector at `i`.
    pub fn vector(&self, i: usize) -> Option<&Arc<[f32]>> {
        self.vectors.get(i)
    }

    /// Cosine of `query` with vector `i` (0 when out of range).
    pub fn cosine(&self, query: &[f32], i: usize) -> f32 {
        self.vectors.get(i).map_or(0.0, |v| dot(query, v))
    }

    /// The `k` vectors most similar to `query` by a full scan, best first,
    /// as (position, cosine); ties by position.
    pub fn exact(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        if k == 0 {
            return Vec::new();
        }
        let mut top: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
        let mut floor = f32::NEG_INFINITY;
        for (i, v) in self.vectors.iter().enumerate() {
            let s = dot(query, v);
            if top.len() == k && s <= floor {
                continue;
            }
            let at = top.partition_point(|&(_, t)| t >= s);
            top.insert(at, (i, s));
            if top.len() > k {
                top.pop();
            }
            if top.len() == k {
                floor = top[k - 1].1;
            }
        }
        top
    }

    /// The `k` nearest by the HNSW graph (up to its `ef_search` of 64), best
    /// first; `None` when the graph is not built.
    pub fn approximate(&self, query: &[f32], k: usize) -> Option<Vec<(usize, f32)>> {
        let ann = self.ann.get()?;
        let mut search = Search::default();
        let mut out: Vec<(usize, f32)> = ann
            .search(&Point(Arc::from(query)), &mut search)
            .take(k)
            .map(|item| (*item.value as usize, 1.0 - item.distance))
            .collect();
        // Report exact cosines (the graph's distance is clamped).
        for h in &mut out {
            h.1 = self.cosine(query, h.0);
        }
        sort_hits(&mut out);
        Some(out)
    }

    /// The `k` most similar: approximate when the graph is built, else exact.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<(usize, f32)> {
        self.approximate(query, k)
            .unwrap_or_else(|| self.exact(query, k))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic pseudo-random unit vectors (xorshift).
    pub(crate) fn random_vectors(n: usize, dim: usize, seed: u64) -> Vec<Arc<[f32]>> {
        let mut s = seed.max(1);
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        (0..n)
            .map(|_| {
                let mut v: Vec<f32> = (0..dim).map(|_| next()).collect();
                normalize(&mut v);
                Arc::from(v)
            })
            .collect()
    }

    #[test]
    fn exact_top_k_is_ordered() {
        let v: Vec<Arc<[f32]>> = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6], [1.0, 0.0]]
            .iter()
            .map(|x| Arc::from(&x[..]))
            .collect();
        let idx = VectorIndex::new(2, v, usize::MAX);
        let hits = idx.exact(&[1.0, 0.0], 3);
        assert_eq!(
            hits.iter().map(|h| h.0).collect::<Vec<_>>(),
            [0, 4, 3],
            "ties by position"
        );
        assert!((hits[2].1 - 0.8).abs() < 1e-6);
        assert_eq!(idx.exact(&[0.0, 1.0], 10).len(), 5);
        assert!(idx.exact(&[0.0, 1.0], 0).is_empty());
        assert_eq!(idx.search(&[0.0, 1.0], 1)[0].0, 1);
        assert!(idx.approximate(&[0.0, 1.0], 1).is_none());
    }

    #[test]
    fn exact_matches_a_full_sort() {
        let v = random_vectors(500, 16, 7);
        let idx = VectorIndex::new(16, v.clone(), usize::MAX);
        let q = random_vectors(1, 16, 99).remove(0);
        let mut all: Vec<(usize, f32)> =
            v.iter().enumerate().map(|(i, x)| (i, dot(&q, x))).collect();
        sort_hits(&mut all);
        assert_eq!(idx.exact(&q, 10), all[..10].to_vec());
    }

    #[test]
    fn ann_agrees_with_exact() {
        // 600 vectors of 16 dimensions: the graph's top 5 must mostly be
        // the exact top 5 (recall@5 over 50 queries).
        let v = random_vectors(600, 16, 3);
        let idx = VectorIndex::new(16, v, 500);
        assert!(idx.has_ann());
        let queries = random_vectors(50, 16, 11);
        let mut found = 0;
        for q in &queries {
            let exact: Vec<usize> = idx.exact(q, 5).iter().map(|h| h.0).collect();
            let ann = idx.approximate(q, 5).unwrap();
            assert_eq!(ann.len(), 5);
            assert!(ann.windows(2).all(|w| w[0].1 >= w[1].1));
            found += ann.iter().filter(|h| exact.contains(&h.0)).count();
        }
        let recall = found as f64 / (5.0 * queries.len() as f64);
        assert!(recall >= 0.9, "ANN recall@5 {recall}");
        // A stored vector finds itself first.
        let me = idx.vector(42).unwrap().clone();
        assert_eq!(idx.search(&me, 1)[0].0, 42);
        // Built later, on another thread: exact until then.
        let late = VectorIndex::exact_only(16, random_vectors(600, 16, 3));
        assert!(!late.has_ann());
        assert_eq!(late.search(&me, 1)[0].0, 42);
        std::thread::spawn(late.ann_builder()).join().unwrap();
        assert!(late.has_ann());
        assert_eq!(
            late.approximate(&me, 5).unwrap(),
            idx.approximate(&me, 5).unwrap()
        );
    }
}
