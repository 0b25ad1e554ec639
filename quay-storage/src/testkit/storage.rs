//! The conformance suite of [`StorageEngine`]: one small case per behaviour of its `# Behavior`
//! contract, written once and run against every backend.
//!
//! A backend joins the suite by implementing [`StorageFactory`] and expanding
//! [`storage_conformance_tests!`](crate::storage_conformance_tests) in an integration test, which
//! writes one `#[tokio::test]` per case, named after it:
//!
//! ```ignore
//! // tests/storage_memory.rs (the crate needs tokio with `macros` and `rt-multi-thread`)
//! quay_storage::storage_conformance_tests!(quay_storage::testkit::storage::MemoryFactory);
//! ```
//!
//! [`run_all`] runs every case in sequence instead.
//!
//! # Isolation and leftovers
//!
//! Each case runs under its own random prefix (`conformance-<uuid>/`) of the engine the factory
//! returns, so a factory may hand out engines over one shared bucket or folder. Each case deletes
//! what it wrote; after it, [`run_case`] lists the prefix and fails the case if any object
//! remains (then removes them, so a shared bucket does not fill up).
//!
//! # Optional operations
//!
//! Cases of `copy`, `rename` and `presign_read` follow the engine's
//! [`capabilities`](StorageEngine::capabilities): where an operation is declared they check it
//! works; where it is not, they check that it answers [`ErrorKind::Unsupported`]. A backend that
//! declares presigned reads must implement [`StorageFactory::fetch`] so that the URL is fetched.

use std::collections::BTreeSet;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::future::{try_join_all, BoxFuture};
use futures::{stream, FutureExt, StreamExt};
use quay_core::{
    Algorithm, ByteStream, Digest, DigestHasher, Error, ErrorKind, Result, StorageEngine,
};

use crate::OpendalStorage;

/// Makes the engine each case runs on.
#[async_trait]
pub trait StorageFactory: Send + Sync {
    /// An engine for one case: a fresh one, or a handle on a shared one (each case keeps to its
    /// own prefix). Fails (never skips) when the backing service is missing, with a message that
    /// says how to start it.
    async fn create(&self) -> Result<Arc<dyn StorageEngine>>;

    /// Fetches `url` with a plain HTTP `GET` and returns the body. Called only when the engine
    /// declares presigned reads. The default fails, so such a backend cannot pass the presign
    /// case without its URL being fetched.
    async fn fetch(&self, url: &str) -> Result<Bytes> {
        let _ = url;
        Err(Error::new(
            ErrorKind::Unsupported,
            "the engine declares presigned reads: implement StorageFactory::fetch (an HTTP GET, \
             e.g. with reqwest) so the suite can fetch the URL",
        ))
    }
}

/// [`OpendalStorage::memory`], a fresh one per case.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryFactory;

#[async_trait]
impl StorageFactory for MemoryFactory {
    async fn create(&self) -> Result<Arc<dyn StorageEngine>> {
        Ok(Arc::new(OpendalStorage::memory("memory-conformance")?))
    }
}

/// [`OpendalStorage::fs`] on a temporary folder, removed when the factory is dropped.
#[derive(Debug)]
pub struct FsFactory {
    dir: tempfile::TempDir,
}

impl FsFactory {
    /// Creates the temporary folder.
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("quay-test-storage-")
            .tempdir()
            .map_err(|e| {
                Error::new(ErrorKind::Unavailable, "cannot create a temporary folder")
                    .with_source(e)
            })?;
        Ok(FsFactory { dir })
    }

    /// The root folder of the engines this factory makes.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

#[async_trait]
impl StorageFactory for FsFactory {
    async fn create(&self) -> Result<Arc<dyn StorageEngine>> {
        Ok(Arc::new(OpendalStorage::fs(
            self.dir.path(),
            "fs-conformance",
        )?))
    }
}

/// What a case works with: the engine under test and the case's own prefix.
pub struct Case<'a> {
    /// The engine under test.
    pub engine: Arc<dyn StorageEngine>,
    /// The case's prefix, `conformance-<uuid>/`; every path the case touches is under it.
    pub prefix: String,
    /// The factory that made the engine.
    pub factory: &'a dyn StorageFactory,
}

impl std::fmt::Debug for Case<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("engine", &self.engine)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Case<'_> {
    /// The full path of `relative` under the case's prefix.
    pub fn path(&self, relative: &str) -> String {
        format!("{}{relative}", self.prefix)
    }

    /// Writes `content` (in one chunk) to `relative` and returns the full path.
    pub async fn put(&self, relative: &str, content: &[u8]) -> Result<String> {
        let path = self.path(relative);
        let written = self.engine.write(&path, chunks([content.to_vec()])).await?;
        assert_eq!(
            written,
            content.len() as u64,
            "write of {path} reported a wrong size"
        );
        Ok(path)
    }

    /// Reads the whole object, or `range` of it, into memory (small objects only).
    pub async fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<Bytes> {
        let mut stream = self.engine.read(path, range).await?;
        let mut out = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.freeze())
    }

    /// Deletes every path in `paths`.
    pub async fn remove(&self, paths: &[&str]) -> Result<()> {
        for path in paths {
            self.engine.delete(path).await?;
        }
        Ok(())
    }

    /// Every object under `relative` (a folder-like prefix ending in `/`), sorted.
    pub async fn list_sorted(&self, relative: &str) -> Result<Vec<String>> {
        let mut paths = self.engine.list(&self.path(relative)).await?;
        paths.sort();
        Ok(paths)
    }
}

/// Runs one case on an engine from `factory`, under a fresh random prefix; then fails the case
/// if it left any object under that prefix. Panics with the case's name when the case fails.
pub async fn run_case<F, C>(name: &str, factory: &F, case: C)
where
    F: StorageFactory,
    C: for<'a> FnOnce(&'a Case<'a>) -> BoxFuture<'a, Result<()>>,
{
    let engine = match factory.create().await {
        Ok(engine) => engine,
        Err(e) => panic!("{name}: cannot create the storage engine: {e}"),
    };
    let cx = Case {
        engine,
        prefix: format!("conformance-{}/", uuid::Uuid::new_v4().simple()),
        factory,
    };
    let outcome = AssertUnwindSafe(case(&cx)).catch_unwind().await;
    let leftovers = cx.engine.list(&cx.prefix).await;
    if let Ok(paths) = &leftovers {
        for path in paths {
            // Best effort: the leftover itself is what gets reported.
            let _ = cx.engine.delete(path).await;
        }
    }
    match outcome {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(Err(e)) => panic!("{name} failed: {e} ({e:?})"),
        Ok(Ok(())) => {}
    }
    match leftovers {
        Err(e) => panic!(
            "{name}: cannot list {} to check for leftovers: {e}",
            cx.prefix
        ),
        Ok(paths) if !paths.is_empty() => {
            panic!("{name} left objects behind: {paths:?}")
        }
        Ok(_) => {}
    }
}

/// Runs every case on engines from `factory`, one after the other.
pub async fn run_all<F: StorageFactory>(factory: &F) {
    crate::__storage_cases!(run factory);
}

/// Expands to one `#[tokio::test]` per case of the storage conformance suite, each run on an
/// engine from the given [`StorageFactory`] expression (evaluated once per test). The calling
/// crate needs `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! storage_conformance_tests {
    ($factory:expr) => {
        $crate::__storage_cases!(tests $factory);
    };
}

/// The list of cases, written once for both the test macro and [`run_all`].
#[doc(hidden)]
#[macro_export]
macro_rules! __storage_cases {
    (@tests $factory:expr; $($case:ident)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let factory = $factory;
                $crate::testkit::storage::run_case(
                    ::std::stringify!($case),
                    &factory,
                    |cx| ::std::boxed::Box::pin($crate::testkit::storage::$case(cx)),
                )
                .await;
            }
        )*
    };
    (@run $factory:expr; $($case:ident)*) => {
        $(
            $crate::testkit::storage::run_case(
                ::std::stringify!($case),
                $factory,
                |cx| ::std::boxed::Box::pin($crate::testkit::storage::$case(cx)),
            )
            .await;
        )*
    };
    ($mode:ident $factory:expr) => {
        $crate::__storage_cases!(@$mode $factory;
            write_then_read_back
            write_returns_the_byte_count
            stat_reports_the_size
            stat_of_missing_object_is_not_found
            read_of_missing_object_is_not_found
            stat_of_a_prefix_is_not_found
            delete_then_stat_is_not_found
            delete_of_missing_object_is_ok
            overwrite_replaces_content
            list_returns_exactly_the_objects_under_a_prefix
            list_of_missing_prefix_is_empty
            ranged_read_returns_exactly_the_range
            range_past_the_end_is_an_error
            inverted_range_returns_no_bytes
            empty_object_round_trips
            large_object_streams_through
            failed_input_stream_leaves_no_object
            failed_overwrite_keeps_previous_content
            sized_write_of_a_large_object_round_trips
            sized_write_of_the_wrong_length_leaves_no_object
            sized_write_whose_input_fails_leaves_no_object
            concurrent_writes_of_different_objects_succeed
            dropped_write_leaves_nothing_behind
            list_entries_gives_the_objects_with_their_sizes
            delete_all_removes_everything_under_a_prefix
            multipart_upload_assembles_its_parts
            copy_duplicates_content
            copy_of_missing_object_is_not_found
            rename_moves_content
            rename_of_missing_object_is_not_found
            presigned_url_serves_the_object
            probe_succeeds
        );
    };
}

// Fixtures.

const MIB: usize = 1024 * 1024;

/// A byte stream of the given chunks.
fn chunks<I>(parts: I) -> ByteStream
where
    I: IntoIterator<Item = Vec<u8>>,
    I::IntoIter: Send + 'static,
{
    Box::pin(stream::iter(parts.into_iter().map(|c| Ok(Bytes::from(c)))))
}

/// Deterministic, non-repeating content of `len` bytes made from `seed`.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Chunk `index` of a large object: a shared block stamped with its index, so that a lost,
/// repeated or reordered chunk changes the digest.
fn large_chunk(block: &Bytes, index: u64) -> Bytes {
    let mut chunk = BytesMut::from(&block[..]);
    chunk[..8].copy_from_slice(&index.to_le_bytes());
    chunk.freeze()
}

/// Asserts that `result` failed with `kind`.
#[track_caller]
fn assert_kind<T: std::fmt::Debug>(result: Result<T>, kind: ErrorKind, what: &str) {
    match result {
        Err(e) if e.kind() == kind => {}
        other => panic!("{what}: expected a {kind} error, got {other:?}"),
    }
}

/// Asserts that `result` failed with one of `kinds`.
#[track_caller]
fn assert_kind_in<T: std::fmt::Debug>(result: Result<T>, kinds: &[ErrorKind], what: &str) {
    match result {
        Err(e) if kinds.contains(&e.kind()) => {}
        other => panic!("{what}: expected an error of kind {kinds:?}, got {other:?}"),
    }
}

// Cases: writing and reading.

/// Bytes written are read back unchanged.
pub async fn write_then_read_back(cx: &Case<'_>) -> Result<()> {
    let data = content(1, 10_000);
    let path = cx.put("blob", &data).await?;
    assert_eq!(cx.get(&path, None).await?, data, "content read back");
    cx.remove(&[&path]).await
}

/// `write` returns the number of bytes it took from the stream, across many chunks (some empty).
pub async fn write_returns_the_byte_count(cx: &Case<'_>) -> Result<()> {
    let path = cx.path("chunked");
    let parts = vec![
        content(2, 1000),
        Vec::new(),
        content(3, 1),
        content(4, 70_000),
        Vec::new(),
    ];
    let whole = parts.concat();
    let written = cx.engine.write(&path, chunks(parts)).await?;
    assert_eq!(written, 71_001, "bytes reported by write");
    assert_eq!(
        cx.get(&path, None).await?,
        whole,
        "content of a chunked write"
    );
    cx.remove(&[&path]).await
}

/// `stat` reports the object's size.
pub async fn stat_reports_the_size(cx: &Case<'_>) -> Result<()> {
    let path = cx.put("sized", &content(5, 12_345)).await?;
    assert_eq!(cx.engine.stat(&path).await?.size, 12_345, "stat size");
    cx.remove(&[&path]).await
}

/// `stat` of a path never written fails with `NotFound`.
pub async fn stat_of_missing_object_is_not_found(cx: &Case<'_>) -> Result<()> {
    assert_kind(
        cx.engine.stat(&cx.path("missing")).await,
        ErrorKind::NotFound,
        "stat of a missing object",
    );
    Ok(())
}

/// `read` of a path never written fails with `NotFound`, when it opens or on the first chunk,
/// with or without a range.
pub async fn read_of_missing_object_is_not_found(cx: &Case<'_>) -> Result<()> {
    let path = cx.path("missing");
    assert_kind(
        cx.get(&path, None).await,
        ErrorKind::NotFound,
        "read of a missing object",
    );
    assert_kind(
        cx.get(&path, Some(0..4)).await,
        ErrorKind::NotFound,
        "ranged read of a missing object",
    );
    Ok(())
}

/// A prefix that holds objects is not itself an object.
pub async fn stat_of_a_prefix_is_not_found(cx: &Case<'_>) -> Result<()> {
    let path = cx.put("dir/object", b"inside").await?;
    assert_kind(
        cx.engine.stat(&cx.path("dir")).await,
        ErrorKind::NotFound,
        "stat of a prefix",
    );
    cx.remove(&[&path]).await
}

/// A deleted object is gone.
pub async fn delete_then_stat_is_not_found(cx: &Case<'_>) -> Result<()> {
    let path = cx.put("doomed", b"short-lived").await?;
    cx.engine.delete(&path).await?;
    assert_kind(
        cx.engine.stat(&path).await,
        ErrorKind::NotFound,
        "stat after delete",
    );
    assert_kind(
        cx.get(&path, None).await,
        ErrorKind::NotFound,
        "read after delete",
    );
    Ok(())
}

/// Deleting a path that holds no object succeeds, twice.
pub async fn delete_of_missing_object_is_ok(cx: &Case<'_>) -> Result<()> {
    let path = cx.path("never/written");
    cx.engine.delete(&path).await?;
    cx.engine.delete(&path).await
}

/// Writing over an object replaces its content, whether the new content is longer or shorter.
pub async fn overwrite_replaces_content(cx: &Case<'_>) -> Result<()> {
    let path = cx.put("replaced", &content(6, 1000)).await?;
    let longer = content(7, 5000);
    cx.put("replaced", &longer).await?;
    assert_eq!(
        cx.get(&path, None).await?,
        longer,
        "after a longer overwrite"
    );
    assert_eq!(cx.engine.stat(&path).await?.size, 5000);
    let shorter = content(8, 10);
    cx.put("replaced", &shorter).await?;
    assert_eq!(
        cx.get(&path, None).await?,
        shorter,
        "after a shorter overwrite"
    );
    assert_eq!(cx.engine.stat(&path).await?.size, 10);
    cx.remove(&[&path]).await
}

// Cases: listing.

/// `list` returns every object under a prefix, nested ones too, and nothing from a sibling
/// prefix that merely starts with the same characters.
pub async fn list_returns_exactly_the_objects_under_a_prefix(cx: &Case<'_>) -> Result<()> {
    let mut inside = Vec::new();
    for relative in ["a/one", "a/two", "a/b/three", "a/b/c/four"] {
        inside.push(cx.put(relative, relative.as_bytes()).await?);
    }
    let sibling = cx.put("ab/sibling", b"not in a/").await?;
    let outside = cx.put("top", b"not in a/").await?;
    inside.sort();
    assert_eq!(cx.list_sorted("a/").await?, inside, "list of a/");
    assert_eq!(
        cx.list_sorted("a/b/").await?,
        [cx.path("a/b/c/four"), cx.path("a/b/three")],
        "list of a/b/"
    );
    let mut all = inside.clone();
    all.extend([sibling.clone(), outside.clone()]);
    all.sort();
    assert_eq!(cx.list_sorted("").await?, all, "list of the case's prefix");
    let mut paths: Vec<&str> = inside.iter().map(String::as_str).collect();
    paths.extend([sibling.as_str(), outside.as_str()]);
    cx.remove(&paths).await
}

/// `list` of a prefix under which nothing was written is empty, not an error.
pub async fn list_of_missing_prefix_is_empty(cx: &Case<'_>) -> Result<()> {
    assert_eq!(cx.list_sorted("nothing/here/").await?, Vec::<String>::new());
    assert_eq!(cx.list_sorted("").await?, Vec::<String>::new());
    Ok(())
}

// Cases: ranges.

/// A ranged read returns exactly the bytes of the range: at the start, in the middle, at the
/// end, a single byte, the whole object.
pub async fn ranged_read_returns_exactly_the_range(cx: &Case<'_>) -> Result<()> {
    let data = content(9, 100_000);
    let path = cx.put("ranged", &data).await?;
    for range in [
        0..10,
        40_000..60_001,
        99_990..100_000,
        0..1,
        12_345..12_346,
        99_999..100_000,
        0..100_000,
    ] {
        let expected = &data[range.start as usize..range.end as usize];
        assert_eq!(
            cx.get(&path, Some(range.clone())).await?,
            expected,
            "bytes of range {range:?}"
        );
    }
    cx.remove(&[&path]).await
}

/// A range that starts at or past the end, or runs past it, fails (when it opens or while
/// streaming) with `RangeInvalid` or `Internal`; it never panics nor returns short content.
pub async fn range_past_the_end_is_an_error(cx: &Case<'_>) -> Result<()> {
    let path = cx.put("short", &content(10, 100)).await?;
    for range in [100..101, 100..200, 150..160, 90..110] {
        assert_kind_in(
            cx.get(&path, Some(range.clone())).await,
            &[ErrorKind::RangeInvalid, ErrorKind::Internal],
            &format!("read of range {range:?} of a 100-byte object"),
        );
    }
    cx.remove(&[&path]).await
}

/// A range whose end is before its start never panics and never returns bytes.
pub async fn inverted_range_returns_no_bytes(cx: &Case<'_>) -> Result<()> {
    let path = cx.put("inverted", &content(11, 100)).await?;
    #[allow(clippy::reversed_empty_ranges)]
    let range = 50..10;
    if let Ok(bytes) = cx.get(&path, Some(range)).await {
        assert!(
            bytes.is_empty(),
            "an inverted range returned {} bytes",
            bytes.len()
        );
    }
    cx.remove(&[&path]).await
}

/// An empty object is written (0 bytes reported), stats with size 0 and reads back empty.
pub async fn empty_object_round_trips(cx: &Case<'_>) -> Result<()> {
    let path = cx.path("empty");
    let written = cx.engine.write(&path, chunks(Vec::new())).await?;
    assert_eq!(written, 0, "bytes reported by an empty write");
    assert_eq!(
        cx.engine.stat(&path).await?.size,
        0,
        "stat of an empty object"
    );
    assert!(
        cx.get(&path, None).await?.is_empty(),
        "read of an empty object"
    );
    assert_eq!(cx.list_sorted("").await?, [path.as_str()], "listed");
    cx.remove(&[&path]).await
}

/// A 64 MiB object streamed in 1 MiB chunks is stored and read back intact (by sha256), with
/// neither side holding it whole.
pub async fn large_object_streams_through(cx: &Case<'_>) -> Result<()> {
    const CHUNKS: u64 = 64;
    let path = cx.path("large");
    let block = Bytes::from(content(12, MIB));
    let mut expected = DigestHasher::new(Algorithm::Sha256);
    for i in 0..CHUNKS {
        expected.update(&large_chunk(&block, i));
    }
    let expected = expected.finish();

    let source = block.clone();
    let data: ByteStream = Box::pin(stream::iter(
        (0..CHUNKS).map(move |i| Ok(large_chunk(&source, i))),
    ));
    let size = CHUNKS * MIB as u64;
    assert_eq!(cx.engine.write(&path, data).await?, size, "bytes reported");
    assert_eq!(cx.engine.stat(&path).await?.size, size, "stat size");

    let (digest, read) = digest_of(cx, &path, None).await?;
    assert_eq!(read, size, "bytes read back");
    assert_eq!(digest, expected, "digest of the content read back");

    // A range across chunk boundaries of a large object.
    let start = 3 * MIB as u64 - 10;
    let range = start..start + 2 * MIB as u64 + 20;
    let mut expected = DigestHasher::new(Algorithm::Sha256);
    let mut whole = BytesMut::new();
    for i in 2..6 {
        whole.extend_from_slice(&large_chunk(&block, i));
    }
    let offset = (range.start - 2 * MIB as u64) as usize;
    expected.update(&whole[offset..offset + (range.end - range.start) as usize]);
    let (digest, read) = digest_of(cx, &path, Some(range.clone())).await?;
    assert_eq!(read, range.end - range.start, "bytes of range {range:?}");
    assert_eq!(digest, expected.finish(), "digest of range {range:?}");
    cx.remove(&[&path]).await
}

/// Streams the object through a hasher, returning its digest and size.
async fn digest_of(cx: &Case<'_>, path: &str, range: Option<Range<u64>>) -> Result<(Digest, u64)> {
    let mut stream = cx.engine.read(path, range).await?;
    let mut hasher = DigestHasher::new(Algorithm::Sha256);
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((hasher.finish(), size))
}

/// An input stream that yields `chunks` chunks of 1 MiB, then fails.
fn failing_stream(chunks: u64) -> ByteStream {
    let block = Bytes::from(content(13, MIB));
    let good = stream::iter((0..chunks).map(move |i| Ok(large_chunk(&block, i))));
    let bad = stream::once(async {
        Err(Error::new(
            ErrorKind::BlobUploadInvalid,
            "injected input failure",
        ))
    });
    Box::pin(good.chain(bad))
}

/// Chunks before the injected failure: more than one part of a multipart upload
/// ([`WRITE_CHUNK`](crate::opendal::WRITE_CHUNK)), so object stores have parts to abort.
const CHUNKS_BEFORE_FAILURE: u64 = (crate::opendal::WRITE_CHUNK / MIB) as u64 + 1;

/// A write whose input fails midway returns that error and leaves no object at the path.
pub async fn failed_input_stream_leaves_no_object(cx: &Case<'_>) -> Result<()> {
    let path = cx.path("failed");
    let result = cx
        .engine
        .write(&path, failing_stream(CHUNKS_BEFORE_FAILURE))
        .await;
    match result {
        Err(e) => assert!(
            e.kind() == ErrorKind::BlobUploadInvalid && e.message() == "injected input failure",
            "write returned another error than its input's: {e:?}"
        ),
        Ok(n) => panic!("a write whose input failed succeeded with {n} bytes"),
    }
    assert_kind(
        cx.engine.stat(&path).await,
        ErrorKind::NotFound,
        "stat after a failed write",
    );
    assert_eq!(
        cx.list_sorted("").await?,
        Vec::<String>::new(),
        "listed after a failed write"
    );
    Ok(())
}

/// A write whose future is dropped midway (its client went away, a timeout above it fired)
/// leaves no object and, once its cleanup has run, no temporary data (`.tmp/` of the
/// filesystem backend, an unfinished multipart upload elsewhere).
pub async fn dropped_write_leaves_nothing_behind(cx: &Case<'_>) -> Result<()> {
    let path = cx.path("dropped");
    let first: ByteStream = chunks(vec![content(21, MIB)]);
    let input: ByteStream = Box::pin(first.chain(stream::pending()));
    let write = cx.engine.write(&path, input);
    let cut = tokio::time::timeout(Duration::from_millis(300), write).await;
    assert!(cut.is_err(), "a write whose input never ends finished");
    let mut left = Vec::new();
    for _ in 0..50 {
        left = cx.engine.list(TEMPORARY_AREA).await?;
        left.extend(cx.list_sorted("").await?);
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, Vec::<String>::new(), "left behind by a dropped write");
    assert_kind(cx.engine.stat(&path).await, ErrorKind::NotFound, "stat");
    Ok(())
}

/// Where the filesystem backend keeps the files of writes in progress.
const TEMPORARY_AREA: &str = ".tmp/";

/// `list_entries` finds the same objects as `list`, with their sizes where it gives them.
pub async fn list_entries_gives_the_objects_with_their_sizes(cx: &Case<'_>) -> Result<()> {
    let a = cx.put("entries/a", &content(22, 10)).await?;
    let b = cx.put("entries/sub/b", &content(23, 2000)).await?;
    let started = quay_core::metadata::now_ms();
    let mut entries = Vec::new();
    let mut listed = cx.engine.list_entries(&cx.path("entries/")).await?;
    while let Some(entry) = listed.next().await {
        entries.push(entry?);
    }
    entries.sort_by(|x, y| x.path.cmp(&y.path));
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, [a.as_str(), b.as_str()], "listed entries");
    for (entry, size) in entries.iter().zip([10u64, 2000]) {
        if let Some(got) = entry.size {
            assert_eq!(got, size, "size of {}", entry.path);
        }
        if let Some(t) = entry.last_modified {
            let day = 24 * 3600 * 1000;
            assert!(
                (started - day..started + day).contains(&t),
                "modification time of {} is {t}, now is {started}",
                entry.path
            );
        }
    }
    let mut none = cx.engine.list_entries(&cx.path("nothing/")).await?;
    assert!(none.next().await.is_none(), "entries of a missing prefix");
    cx.remove(&[&a, &b]).await
}

/// `delete_all` removes every object under a folder prefix and nothing beside it.
pub async fn delete_all_removes_everything_under_a_prefix(cx: &Case<'_>) -> Result<()> {
    cx.put("tree/a", b"a").await?;
    cx.put("tree/sub/b", b"b").await?;
    let beside = cx.put("treetop", b"c").await?;
    cx.engine.delete_all(&cx.path("tree/")).await?;
    assert_eq!(cx.list_sorted("tree/").await?, Vec::<String>::new());
    assert_eq!(cx.list_sorted("").await?, vec![beside.clone()]);
    // Again, on nothing: not an error.
    cx.engine.delete_all(&cx.path("tree/")).await?;
    cx.remove(&[&beside]).await
}

/// A write over an existing object whose input fails midway leaves the previous content.
pub async fn failed_overwrite_keeps_previous_content(cx: &Case<'_>) -> Result<()> {
    let before = content(14, 3000);
    let path = cx.put("kept", &before).await?;
    let result = cx.engine.write(&path, failing_stream(2)).await;
    assert_kind(result, ErrorKind::BlobUploadInvalid, "failed overwrite");
    assert_eq!(
        cx.get(&path, None).await?,
        before,
        "content after a failed overwrite"
    );
    cx.remove(&[&path]).await
}

/// `MIB` chunks of a large object, as a stream.
fn large_stream(block: &Bytes, chunks: u64) -> ByteStream {
    let block = block.clone();
    Box::pin(stream::iter(
        (0..chunks).map(move |i| Ok(large_chunk(&block, i))),
    ))
}

/// Chunks of the sized writes: above [`SINGLE_PUT_MIN`](crate::opendal::SINGLE_PUT_MIN), so S3
/// takes its one-request path.
const SIZED_CHUNKS: u64 = (crate::opendal::SINGLE_PUT_MIN / MIB as u64) + 4;

/// A write of announced size stores exactly the bytes given.
pub async fn sized_write_of_a_large_object_round_trips(cx: &Case<'_>) -> Result<()> {
    let path = cx.path("sized");
    let block = Bytes::from(content(21, MIB));
    let mut expected = DigestHasher::new(Algorithm::Sha256);
    for i in 0..SIZED_CHUNKS {
        expected.update(&large_chunk(&block, i));
    }
    let size = SIZED_CHUNKS * MIB as u64;
    let written = cx
        .engine
        .write_sized(&path, large_stream(&block, SIZED_CHUNKS), size)
        .await?;
    assert_eq!(written, size, "bytes reported");
    assert_eq!(cx.engine.stat(&path).await?.size, size, "stat size");
    let (digest, read) = digest_of(cx, &path, None).await?;
    assert_eq!(
        (digest, read),
        (expected.finish(), size),
        "content read back"
    );
    cx.remove(&[&path]).await
}

/// A sized write whose data is shorter or longer than announced fails and leaves no object.
pub async fn sized_write_of_the_wrong_length_leaves_no_object(cx: &Case<'_>) -> Result<()> {
    let block = Bytes::from(content(22, MIB));
    let size = SIZED_CHUNKS * MIB as u64;
    for (name, chunks) in [("short", SIZED_CHUNKS - 1), ("long", SIZED_CHUNKS + 1)] {
        let path = cx.path(name);
        let result = cx
            .engine
            .write_sized(&path, large_stream(&block, chunks), size)
            .await;
        assert!(
            result.is_err(),
            "a {name} sized write succeeded: {result:?}"
        );
        assert_kind(
            cx.engine.stat(&path).await,
            ErrorKind::NotFound,
            &format!("stat after a {name} sized write"),
        );
    }
    assert_eq!(
        cx.list_sorted("").await?,
        Vec::<String>::new(),
        "listed after sized writes of the wrong length"
    );
    Ok(())
}

/// A sized write whose input fails returns the input's error and leaves no object.
pub async fn sized_write_whose_input_fails_leaves_no_object(cx: &Case<'_>) -> Result<()> {
    let path = cx.path("sized-failed");
    let size = SIZED_CHUNKS * MIB as u64;
    let result = cx
        .engine
        .write_sized(&path, failing_stream(SIZED_CHUNKS - 2), size)
        .await;
    match result {
        Err(e) => assert!(
            e.kind() == ErrorKind::BlobUploadInvalid && e.message() == "injected input failure",
            "a sized write returned another error than its input's: {e:?}"
        ),
        Ok(n) => panic!("a sized write whose input failed succeeded with {n} bytes"),
    }
    assert_kind(
        cx.engine.stat(&path).await,
        ErrorKind::NotFound,
        "stat after a failed sized write",
    );
    Ok(())
}

/// Writes of different objects at once all succeed, and each object holds its own content.
pub async fn concurrent_writes_of_different_objects_succeed(cx: &Case<'_>) -> Result<()> {
    const WRITERS: u64 = 16;
    let writes = (0..WRITERS).map(|i| {
        let path = cx.path(&format!("concurrent/{i}"));
        let parts: Vec<Vec<u8>> = (0..4).map(|j| content(100 + i * 4 + j, 16_384)).collect();
        let engine = cx.engine.clone();
        async move { engine.write(&path, chunks(parts)).await }
    });
    let sizes = try_join_all(writes).await?;
    assert!(sizes.iter().all(|&n| n == 4 * 16_384), "sizes {sizes:?}");
    let mut expected = BTreeSet::new();
    for i in 0..WRITERS {
        let path = cx.path(&format!("concurrent/{i}"));
        let data: Vec<u8> = (0..4)
            .flat_map(|j| content(100 + i * 4 + j, 16_384))
            .collect();
        assert_eq!(cx.get(&path, None).await?, data, "content of {path}");
        expected.insert(path);
    }
    let listed: BTreeSet<String> = cx.list_sorted("concurrent/").await?.into_iter().collect();
    assert_eq!(listed, expected, "listed after concurrent writes");
    try_join_all(expected.iter().map(|p| cx.engine.delete(p))).await?;
    Ok(())
}

// Cases: optional operations.

/// Where declared, `copy` duplicates an object to a new (nested) path and keeps the source;
/// otherwise it answers `Unsupported`.
pub async fn copy_duplicates_content(cx: &Case<'_>) -> Result<()> {
    let data = content(15, 4096);
    let from = cx.put("copy/source", &data).await?;
    let to = cx.path("copy/deeper/target");
    if !cx.engine.capabilities().copy {
        assert_kind(
            cx.engine.copy(&from, &to).await,
            ErrorKind::Unsupported,
            "copy on an engine that does not declare it",
        );
        return cx.remove(&[&from]).await;
    }
    cx.engine.copy(&from, &to).await?;
    assert_eq!(cx.get(&to, None).await?, data, "content of the copy");
    assert_eq!(cx.get(&from, None).await?, data, "source after copy");
    cx.remove(&[&from, &to]).await
}

/// Where declared, a multipart upload shows nothing until it completes, then the parts in
/// number order (parts not listed are dropped); an aborted one leaves nothing. Otherwise every
/// multipart operation answers `Unsupported`.
pub async fn multipart_upload_assembles_its_parts(cx: &Case<'_>) -> Result<()> {
    let to = cx.path("multipart/object");
    if !cx.engine.capabilities().multipart {
        assert_kind(
            cx.engine.multipart_start(&to).await,
            ErrorKind::Unsupported,
            "multipart on an engine that does not declare it",
        );
        return Ok(());
    }
    let min = quay_core::storage::MULTIPART_MIN_PART as usize;
    let (a, b, c) = (content(31, min), content(32, 1000), content(33, 1234));
    let id = cx.engine.multipart_start(&to).await?;
    let mut parts = Vec::new();
    for (number, data) in [(1u32, &a), (2, &b)] {
        let etag = cx
            .engine
            .multipart_put_part(&to, &id, number, chunks([data.clone()]), data.len() as u64)
            .await?;
        parts.push(quay_core::storage::MultipartPart {
            number,
            etag,
            size: data.len() as u64,
        });
    }
    // A part that completion does not list.
    cx.engine
        .multipart_put_part(&to, &id, 3, chunks([c.clone()]), c.len() as u64)
        .await?;
    assert_kind(
        cx.engine.stat(&to).await,
        ErrorKind::NotFound,
        "stat of an object whose multipart upload is not complete",
    );
    cx.engine.multipart_complete(&to, &id, &parts).await?;
    let mut whole = a.clone();
    whole.extend_from_slice(&b);
    assert_eq!(cx.get(&to, None).await?, whole, "the completed object");

    let aborted = cx.path("multipart/aborted");
    let id = cx.engine.multipart_start(&aborted).await?;
    cx.engine
        .multipart_put_part(&aborted, &id, 1, chunks([b.clone()]), b.len() as u64)
        .await?;
    // Aborted once: a second abort of an unknown upload id is NoSuchUpload on S3 but
    // AccessDenied on s3s-fs, so it proves nothing portable.
    cx.engine.multipart_abort(&aborted, &id).await?;
    assert_kind(
        cx.engine.stat(&aborted).await,
        ErrorKind::NotFound,
        "stat of an aborted upload's object",
    );
    cx.remove(&[&to]).await
}

/// Where declared, `copy` of a missing object fails with `NotFound` and creates nothing;
/// otherwise it answers `Unsupported`.
pub async fn copy_of_missing_object_is_not_found(cx: &Case<'_>) -> Result<()> {
    let (from, to) = (cx.path("missing"), cx.path("target"));
    let expected = match cx.engine.capabilities().copy {
        true => ErrorKind::NotFound,
        false => ErrorKind::Unsupported,
    };
    assert_kind(
        cx.engine.copy(&from, &to).await,
        expected,
        "copy of a missing object",
    );
    assert_kind(cx.engine.stat(&to).await, ErrorKind::NotFound, "target");
    Ok(())
}

/// Where declared, `rename` moves an object to a new (nested) path and removes the source;
/// otherwise it answers `Unsupported`.
pub async fn rename_moves_content(cx: &Case<'_>) -> Result<()> {
    let data = content(16, 4096);
    let from = cx.put("rename/source", &data).await?;
    let to = cx.path("rename/deeper/target");
    if !cx.engine.capabilities().rename {
        assert_kind(
            cx.engine.rename(&from, &to).await,
            ErrorKind::Unsupported,
            "rename on an engine that does not declare it",
        );
        return cx.remove(&[&from]).await;
    }
    cx.engine.rename(&from, &to).await?;
    assert_eq!(cx.get(&to, None).await?, data, "content after rename");
    assert_kind(
        cx.engine.stat(&from).await,
        ErrorKind::NotFound,
        "source after rename",
    );
    assert_eq!(cx.list_sorted("rename/").await?, [to.as_str()], "listed");
    cx.remove(&[&to]).await
}

/// Where declared, `rename` of a missing object fails with `NotFound` and creates nothing;
/// otherwise it answers `Unsupported`.
pub async fn rename_of_missing_object_is_not_found(cx: &Case<'_>) -> Result<()> {
    let (from, to) = (cx.path("missing"), cx.path("target"));
    let expected = match cx.engine.capabilities().rename {
        true => ErrorKind::NotFound,
        false => ErrorKind::Unsupported,
    };
    assert_kind(
        cx.engine.rename(&from, &to).await,
        expected,
        "rename of a missing object",
    );
    assert_kind(cx.engine.stat(&to).await, ErrorKind::NotFound, "target");
    Ok(())
}

/// Where declared, a presigned URL serves the object's content to a plain HTTP client (through
/// [`StorageFactory::fetch`]); otherwise `presign_read` answers `Unsupported`.
pub async fn presigned_url_serves_the_object(cx: &Case<'_>) -> Result<()> {
    let data = content(17, 2048);
    let path = cx.put("presigned", &data).await?;
    let presigned = cx
        .engine
        .presign_read(&path, Duration::from_secs(300))
        .await;
    if !cx.engine.capabilities().presign {
        assert_kind(
            presigned,
            ErrorKind::Unsupported,
            "presign on an engine that does not declare it",
        );
        return cx.remove(&[&path]).await;
    }
    let url = presigned?;
    assert!(
        url.starts_with("http://") || url.starts_with("https://"),
        "presigned URL {url:?} is not an HTTP URL"
    );
    assert_eq!(cx.factory.fetch(&url).await?, data, "body served at {url}");
    cx.remove(&[&path]).await
}

/// `probe` succeeds on a healthy backend.
pub async fn probe_succeeds(cx: &Case<'_>) -> Result<()> {
    cx.engine.probe().await
}
