//! Stream adapters: hashing and counting bytes as they pass, concatenating objects.

use std::sync::{Arc, Mutex};

use futures::StreamExt;

use crate::digest::{Algorithm, Digest, DigestHasher};
use crate::storage::{ByteStream, StorageEngine};

/// What a [`tap`] saw once its stream has ended.
#[derive(Debug, Clone)]
pub(crate) struct Tapped {
    pub bytes: u64,
    pub digest: Option<Digest>,
}

/// The shared state of a tap, read after the stream is consumed.
#[derive(Debug, Clone)]
pub(crate) struct TapHandle {
    state: Arc<Mutex<(u64, Option<DigestHasher>)>>,
}

impl TapHandle {
    /// Bytes seen and the digest of them (when hashing).
    pub fn finish(&self) -> Tapped {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let bytes = guard.0;
        let digest = guard.1.take().map(DigestHasher::finish);
        Tapped { bytes, digest }
    }
}

/// Wraps `stream` so that every chunk is counted and, with `algorithm`, hashed.
pub(crate) fn tap(stream: ByteStream, algorithm: Option<Algorithm>) -> (ByteStream, TapHandle) {
    let handle = TapHandle {
        state: Arc::new(Mutex::new((0, algorithm.map(DigestHasher::new)))),
    };
    let state = handle.state.clone();
    let out = stream.map(move |chunk| {
        let chunk = chunk?;
        let mut guard = match state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.0 += chunk.len() as u64;
        if let Some(h) = guard.1.as_mut() {
            h.update(&chunk);
        }
        Ok(chunk)
    });
    (Box::pin(out), handle)
}

/// One stream over several objects of one location, read in order.
pub(crate) fn concat(storage: std::sync::Arc<dyn StorageEngine>, paths: Vec<String>) -> ByteStream {
    let s = futures::stream::iter(paths)
        .then(move |path| {
            let storage = storage.clone();
            async move { storage.read(&path, None).await }
        })
        .map(|opened| match opened {
            Ok(stream) => stream,
            Err(e) => Box::pin(futures::stream::once(async move { Err(e) })) as ByteStream,
        })
        .flatten();
    Box::pin(s)
}

/// What [`hold_last`] saw by the end of its input: bytes, their digest, and the held-back last
/// chunk; `None` when the input failed (its error was passed on).
pub(crate) struct HeldTail {
    state: Arc<Mutex<HoldState>>,
}

struct HoldState {
    hasher: Option<DigestHasher>,
    bytes: u64,
    held: Option<bytes::Bytes>,
    failed: bool,
}

impl HeldTail {
    /// The outcome, once the held stream has ended.
    pub fn take(&self) -> Option<(u64, Option<Digest>, Option<bytes::Bytes>)> {
        let mut g = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if g.failed {
            return None;
        }
        let digest = g.hasher.take().map(DigestHasher::finish);
        Some((g.bytes, digest, g.held.take()))
    }
}

/// `stream` hashed as it passes, lagging one chunk behind: every chunk but the last is passed
/// on; the last is kept in the [`HeldTail`] with the count and digest, for the caller to
/// release once it has checked them.
pub(crate) fn hold_last(stream: ByteStream, algorithm: Algorithm) -> (ByteStream, HeldTail) {
    let state = Arc::new(Mutex::new(HoldState {
        hasher: Some(DigestHasher::new(algorithm)),
        bytes: 0,
        held: None,
        failed: false,
    }));
    let shared = state.clone();
    let lagged = stream.filter_map(move |chunk| {
        let mut g = match shared.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let out = match chunk {
            Err(e) => {
                g.failed = true;
                Some(Err(e))
            }
            Ok(chunk) => {
                g.bytes += chunk.len() as u64;
                if let Some(h) = g.hasher.as_mut() {
                    h.update(&chunk);
                }
                g.held.replace(chunk).map(Ok)
            }
        };
        futures::future::ready(out)
    });
    (Box::pin(lagged), HeldTail { state })
}
