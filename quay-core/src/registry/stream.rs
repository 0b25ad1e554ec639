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
