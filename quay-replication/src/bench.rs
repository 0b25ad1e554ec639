//! A replication benchmark for operators (`quayctl bench`): how fast can blobs be copied from
//! one real location to another, by the path replication takes?
//!
//! [`run`] writes `blobs` test blobs of `size` bytes under a scratch prefix of the source
//! (`quay-bench-<random>/`, never a path the registry uses), copies each into the same prefix
//! of the target with the production copy path
//! ([`copy_blob`](quay_core::registry::copy::copy_blob): streamed, hashed on the way, a sized
//! write), `concurrency` at a time, and reports MB/s and blobs/s of the copies. Whatever
//! happens, it then removes everything under the prefix in both locations, and says whether
//! anything was left.
//!
//! The blobs are made of a 1 MiB random block repeated, behind a header unique to each blob:
//! nothing is held whole in memory, and no storage can deduplicate them.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use quay_core::registry::copy::copy_blob;
use quay_core::storage::{EntryStream, ObjectEntry};
use quay_core::{
    ByteStream, Digest, DigestHasher, Error, ErrorKind, ObjectMeta, Result, StorageCapabilities,
    StorageEngine,
};

/// The size of the random block blobs are made of.
const BLOCK: usize = 1 << 20;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Test blobs to copy.
    pub blobs: usize,
    /// Size of each, in bytes.
    pub size: u64,
    /// Copies at once (a worker's `QUAY_REPLICATION_WORKERS`).
    pub concurrency: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            blobs: 32,
            size: 16 << 20,
            concurrency: 8,
        }
    }
}

/// Which part of the benchmark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Writing the test blobs into the source.
    Writing,
    /// Copying them into the target (the measured part).
    Copying,
}

/// Where the benchmark stands, given to the progress callback after each blob.
#[derive(Debug, Clone)]
pub struct BenchProgress {
    /// The part running.
    pub phase: Phase,
    /// Blobs done in this phase.
    pub done: usize,
    /// Blobs in all.
    pub total: usize,
    /// Bytes done in this phase.
    pub bytes: u64,
    /// Time spent in this phase.
    pub elapsed: Duration,
}

impl BenchProgress {
    /// Megabytes (10^6 bytes) per second so far.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The outcome.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The scratch prefix used in both locations.
    pub prefix: String,
    /// Blobs copied.
    pub blobs: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Time the copies took.
    pub copy_time: Duration,
    /// Time writing the blobs into the source took (for comparison: the source's write speed).
    pub write_time: Duration,
    /// Objects found under the prefix after the clean-up (0 unless a removal failed).
    pub left_behind: usize,
}

impl BenchReport {
    /// Megabytes (10^6 bytes) copied per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.copy_time.as_secs_f64().max(1e-9)
    }

    /// Blobs copied per second.
    pub fn blobs_per_sec(&self) -> f64 {
        self.blobs as f64 / self.copy_time.as_secs_f64().max(1e-9)
    }

    /// Megabytes (10^6 bytes) written into the source per second.
    pub fn write_mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.write_time.as_secs_f64().max(1e-9)
    }
}

/// Runs the benchmark from `source` to `target` (see the [module docs](self)), calling
/// `progress` after each blob written or copied. Fails with the first error of a write or a
/// copy, after the clean-up.
pub async fn run(
    source: Arc<dyn StorageEngine>,
    target: Arc<dyn StorageEngine>,
    options: &BenchOptions,
    progress: &mut (dyn FnMut(&BenchProgress) + Send),
) -> Result<BenchReport> {
    if options.blobs == 0 || options.size == 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "the benchmark needs at least one blob of at least one byte",
        ));
    }
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("quay-bench-{run_id}/");
    let from: Arc<dyn StorageEngine> = Arc::new(Scratch::new(source.clone(), &prefix));
    let to: Arc<dyn StorageEngine> = Arc::new(Scratch::new(target.clone(), &prefix));
    let block = random_block(&run_id);
    let outcome = measure(&from, &to, &block, &run_id, options, progress).await;
    // The clean-up runs whatever happened, and is checked.
    let mut left_behind = 0;
    for engine in [&source, &target] {
        let _ = engine.delete_all(&prefix).await;
        left_behind += engine.list(&prefix).await.map_or(0, |l| l.len());
    }
    let (write_time, copy_time) = outcome?;
    Ok(BenchReport {
        prefix,
        blobs: options.blobs,
        bytes: options.size * options.blobs as u64,
        copy_time,
        write_time,
        left_behind,
    })
}

/// The two phases: writes the blobs into `from`, then copies them to `to`. Returns the time
/// of each.
async fn measure(
    from: &Arc<dyn StorageEngine>,
    to: &Arc<dyn StorageEngine>,
    block: &Bytes,
    run_id: &str,
    options: &BenchOptions,
    progress: &mut (dyn FnMut(&BenchProgress) + Send),
) -> Result<(Duration, Duration)> {
    let size = options.size;
    let total = options.blobs;
    let at_once = options.concurrency.max(1);
    let mut digests = Vec::with_capacity(total);
    for i in 0..total {
        digests.push(digest_of(blob(block, run_id, i, size)).await?);
    }

    let started = Instant::now();
    let mut writes = futures::stream::iter(digests.iter().enumerate().map(|(i, digest)| {
        let data = blob(block, run_id, i, size);
        async move {
            from.write_sized(&digest.object_path(), data, size)
                .await
                .map(drop)
        }
    }))
    .buffer_unordered(at_once);
    let mut done = 0;
    while let Some(r) = writes.next().await {
        r?;
        done += 1;
        progress(&BenchProgress {
            phase: Phase::Writing,
            done,
            total,
            bytes: done as u64 * size,
            elapsed: started.elapsed(),
        });
    }
    let write_time = started.elapsed();

    let started = Instant::now();
    let mut copies = futures::stream::iter(digests.iter().map(|digest| async move {
        copy_blob(from, to, digest, size, false)
            .await
            .map_err(|e| e.into_inner())
    }))
    .buffer_unordered(at_once);
    let mut done = 0;
    while let Some(r) = copies.next().await {
        r?;
        done += 1;
        progress(&BenchProgress {
            phase: Phase::Copying,
            done,
            total,
            bytes: done as u64 * size,
            elapsed: started.elapsed(),
        });
    }
    Ok((write_time, started.elapsed()))
}

/// A block of pseudo-random bytes (xorshift, seeded from the run id).
fn random_block(seed: &str) -> Bytes {
    let mut x = seed.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
        (h ^ u64::from(b)).rotate_left(7)
    }) | 1;
    let mut out = Vec::with_capacity(BLOCK);
    while out.len() < BLOCK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(BLOCK);
    Bytes::from(out)
}

/// Blob `i` of the run: a header naming it, then the block repeated, `size` bytes in all.
fn blob(block: &Bytes, run_id: &str, i: usize, size: u64) -> ByteStream {
    let header = Bytes::from(format!("quay-bench {run_id} blob {i:08}\n"));
    let block = block.clone();
    let mut left = size;
    let mut offset = 0usize;
    let mut first = Some(header);
    Box::pin(futures::stream::poll_fn(move |_| {
        if left == 0 {
            return std::task::Poll::Ready(None);
        }
        let chunk = match first.take() {
            Some(h) => h,
            None => {
                let end = block.len().min(offset + 256 * 1024);
                let c = block.slice(offset..end);
                offset = if end == block.len() { 0 } else { end };
                c
            }
        };
        let take = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        left -= take as u64;
        std::task::Poll::Ready(Some(Ok(chunk.slice(..take))))
    }))
}

async fn digest_of(mut data: ByteStream) -> Result<Digest> {
    let mut hasher = DigestHasher::new(quay_core::Algorithm::Sha256);
    while let Some(chunk) = data.try_next().await? {
        hasher.update(&chunk);
    }
    Ok(hasher.finish())
}

/// A location seen through a folder of it: every path is under `prefix`.
#[derive(Debug)]
struct Scratch {
    inner: Arc<dyn StorageEngine>,
    prefix: String,
}

impl Scratch {
    fn new(inner: Arc<dyn StorageEngine>, prefix: &str) -> Self {
        Scratch {
            inner,
            prefix: prefix.to_owned(),
        }
    }

    fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    fn strip(&self, path: String) -> String {
        path.strip_prefix(&self.prefix)
            .map(str::to_owned)
            .unwrap_or(path)
    }
}

#[async_trait]
impl StorageEngine for Scratch {
    fn capabilities(&self) -> StorageCapabilities {
        // The benchmark copies whole blobs: multipart uploads are not forwarded.
        StorageCapabilities {
            multipart: false,
            ..self.inner.capabilities()
        }
    }
    async fn stat(&self, path: &str) -> Result<ObjectMeta> {
        self.inner.stat(&self.path(path)).await
    }
    async fn read(&self, path: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        self.inner.read(&self.path(path), range).await
    }
    async fn write(&self, path: &str, data: ByteStream) -> Result<u64> {
        self.inner.write(&self.path(path), data).await
    }
    async fn write_sized(&self, path: &str, data: ByteStream, size: u64) -> Result<u64> {
        self.inner.write_sized(&self.path(path), data, size).await
    }
    async fn delete(&self, path: &str) -> Result<()> {
        self.inner.delete(&self.path(path)).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let found = self.inner.list(&self.path(prefix)).await?;
        Ok(found.into_iter().map(|p| self.strip(p)).collect())
    }
    async fn list_entries(&self, prefix: &str) -> Result<EntryStream> {
        let inner = self.inner.list_entries(&self.path(prefix)).await?;
        let strip = self.prefix.clone();
        Ok(Box::pin(inner.map_ok(move |e| {
            ObjectEntry {
                path: e
                    .path
                    .strip_prefix(&strip)
                    .map(str::to_owned)
                    .unwrap_or(e.path),
                ..e
            }
        })))
    }
    async fn delete_all(&self, prefix: &str) -> Result<()> {
        self.inner.delete_all(&self.path(prefix)).await
    }
    async fn probe(&self) -> Result<()> {
        self.inner.probe().await
    }
    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.inner.copy(&self.path(from), &self.path(to)).await
    }
    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.inner.rename(&self.path(from), &self.path(to)).await
    }
    async fn presign_read(&self, path: &str, expires: Duration) -> Result<String> {
        self.inner.presign_read(&self.path(path), expires).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_have_their_size_and_differ() {
        let block = random_block("seed");
        assert_eq!(block.len(), BLOCK);
        let mut seen = std::collections::BTreeSet::new();
        for (i, size) in [
            (0, 1u64),
            (1, 3 * BLOCK as u64 + 17),
            (2, 3 * BLOCK as u64 + 17),
        ] {
            let chunks: Vec<Bytes> = blob(&block, "run", i, size).try_collect().await.unwrap();
            let len: usize = chunks.iter().map(Bytes::len).sum();
            assert_eq!(len as u64, size);
            assert!(chunks.iter().all(|c| c.len() <= 256 * 1024), "no big chunk");
            seen.insert(digest_of(blob(&block, "run", i, size)).await.unwrap());
        }
        assert_eq!(seen.len(), 3, "every blob has its own digest");
    }
}
