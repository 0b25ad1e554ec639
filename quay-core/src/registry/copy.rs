//! The verified copy of a blob from one location to another: one path shared by the
//! replication worker, repairs and push-time durability.
//!
//! The blob is streamed from the source into the target (never held whole in memory) while it
//! is hashed; the target is written with the blob's known size, so an object store takes it in
//! one request and stores nothing unless the length is right. At the end of the stream, a
//! length or digest other than the blob's fails the stream itself, as an error of the source:
//! the sized write then stores nothing, so a corrupt source copy never becomes an object in
//! the target, even briefly, and the caller tries another holder.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;

use crate::digest::{Digest, DigestHasher};
use crate::error::{Error, ErrorKind, Result};
use crate::storage::{ByteStream, StorageEngine};

/// Which side of a copy failed.
#[derive(Debug)]
pub enum CopyError {
    /// Reading the source failed, or what it held does not verify.
    Source(Error),
    /// Writing the target failed.
    Target(Error),
}

impl CopyError {
    /// The error, whichever side it came from.
    pub fn into_inner(self) -> Error {
        match self {
            CopyError::Source(e) | CopyError::Target(e) => e,
        }
    }
}

/// Copies the blob `digest` of `size` bytes from `source` to `target`, verified as described
/// in the [module docs](self). With `readback`, the written object is read back and hashed
/// again (doubling target reads; for the distrustful).
pub async fn copy_blob(
    source: &Arc<dyn StorageEngine>,
    target: &Arc<dyn StorageEngine>,
    digest: &Digest,
    size: u64,
    readback: bool,
) -> std::result::Result<(), CopyError> {
    let path = digest.object_path();
    // The recorded size bounds the read. What is read is still hashed and its length checked,
    // so a source whose object is shorter or different fails.
    let range = (size > 0).then_some(0..size);
    let stream = source.read(&path, range).await.map_err(CopyError::Source)?;
    let (stream, seen) = verifying(stream, digest, size);
    let written = target.write_sized(&path, stream, size).await.map_err(|e| {
        // An error that came out of the source stream is the source's.
        if seen.source_failed.load(Ordering::SeqCst) {
            CopyError::Source(e)
        } else {
            CopyError::Target(e)
        }
    })?;
    let (bytes, got) = seen.take();
    // `write_sized` succeeds only when the target stored exactly `size` bytes, and those bytes
    // hashed to the digest on their way: no extra request is needed to trust the copy.
    let verified = matches!(got, Some(d) if &d == digest && bytes == size && written == size);
    let verified =
        verified && (!readback || read_back(target, digest).await.map_err(CopyError::Target)?);
    if !verified {
        let _ = target.delete(&path).await;
        return Err(CopyError::Source(Error::new(
            ErrorKind::DigestInvalid,
            format!("copy of {digest} did not verify ({bytes} bytes read, {size} expected)"),
        )));
    }
    Ok(())
}

/// The bytes and digest seen by a [`verifying`] stream.
struct Seen {
    state: Arc<Mutex<(u64, Option<DigestHasher>)>>,
    source_failed: Arc<AtomicBool>,
}

impl Seen {
    fn take(&self) -> (u64, Option<Digest>) {
        let mut g = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let bytes = g.0;
        (bytes, g.1.take().map(DigestHasher::finish))
    }
}

/// `stream`, hashed as it passes. At its end, a length other than `size` or another digest is
/// an error of the source's.
fn verifying(stream: ByteStream, digest: &Digest, size: u64) -> (ByteStream, Seen) {
    let state = Arc::new(Mutex::new((
        0u64,
        Some(DigestHasher::new(digest.algorithm())),
    )));
    let s = state.clone();
    let failed = Arc::new(AtomicBool::new(false));
    let f = failed.clone();
    let out = stream.map(move |chunk| {
        let chunk = chunk.inspect_err(|_| f.store(true, Ordering::SeqCst))?;
        let mut g = match s.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.0 += chunk.len() as u64;
        if let Some(h) = g.1.as_mut() {
            h.update(&chunk);
        }
        Ok(chunk)
    });
    let (check, check_failed, expected) = (state.clone(), failed.clone(), digest.clone());
    let tail = futures::stream::once(async move {
        let (bytes, got) = {
            let g = match check.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            (g.0, g.1.clone().map(DigestHasher::finish))
        };
        if bytes == size && got.as_ref() == Some(&expected) {
            return None;
        }
        check_failed.store(true, Ordering::SeqCst);
        Some(Err(Error::new(
            ErrorKind::DigestInvalid,
            format!(
                "the source's copy of {expected} does not verify ({bytes} bytes read, {size} \
                 expected)"
            ),
        )))
    })
    .filter_map(futures::future::ready);
    (
        Box::pin(out.chain(tail)),
        Seen {
            state,
            source_failed: failed,
        },
    )
}

/// Reads `digest`'s object in `target` and checks its digest.
async fn read_back(target: &Arc<dyn StorageEngine>, digest: &Digest) -> Result<bool> {
    let mut stream = target.read(&digest.object_path(), None).await?;
    let mut h = DigestHasher::new(digest.algorithm());
    while let Some(chunk) = stream.next().await {
        h.update(&chunk?);
    }
    Ok(&h.finish() == digest)
}
