//! Garbage collection and the time machine, on SQLite and PostgreSQL, with two filesystem
//! locations and replication: what a pass removes, what it keeps, restores, orphans, and a
//! concurrency test that tries hard to lose a blob a stored manifest needs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quay_core::metadata::now_ms;
use quay_core::registry::{GcPolicy, GcReport};
use quay_core::{
    ByteStream, Digest, ErrorKind, LocationId, Reference, Registry, RepositoryName, Tag,
};
use quay_replication::worker::{ReplicationWorker, WorkerConfig};
use quay_storage::testkit::postgres::{fresh_database, TestDatabase};
use quay_storage::{OpendalStorage, SqlMetadataStore};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn id(s: &str) -> LocationId {
    s.parse().unwrap()
}

fn repo(s: &str) -> RepositoryName {
    s.parse().unwrap()
}

struct Setup {
    registry: Registry,
    roots: Vec<(LocationId, std::path::PathBuf)>,
    _dir: tempfile::TempDir,
    pg: Option<TestDatabase>,
}

impl Setup {
    async fn new(postgres: bool) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg) = if postgres {
            let db = fresh_database()
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL is needed: {e}"));
            (db.url.clone(), Some(db))
        } else {
            let path = dir.path().join("m.db");
            (format!("sqlite://{}?mode=rwc", path.display()), None)
        };
        let registry = Self::engine(&url, dir.path()).await;
        let roots = ["us", "eu"]
            .iter()
            .map(|l| (id(l), dir.path().join(l)))
            .collect();
        Setup {
            registry,
            roots,
            _dir: dir,
            pg,
        }
    }

    /// An engine over the database at `url` and the locations under `root`.
    async fn engine(url: &str, root: &std::path::Path) -> Registry {
        let store = SqlMetadataStore::connect(url).await.unwrap();
        let mut builder = Registry::builder(Arc::new(store));
        for l in ["us", "eu"] {
            builder = builder.location(
                id(l),
                Arc::new(OpendalStorage::fs(&root.join(l), l).unwrap()),
            );
        }
        builder
            .preference([id("us"), id("eu")])
            .replicate_to([id("us"), id("eu")])
            .finish()
            .unwrap()
    }

    /// Runs the worker until the queue is empty (replications and deletes).
    async fn drain(&self) {
        drain(&self.registry).await;
    }

    /// Blob objects (content-addressed files) in `location`.
    fn objects(&self, location: &str) -> BTreeSet<String> {
        let root = &self
            .roots
            .iter()
            .find(|(l, _)| l.as_str() == location)
            .unwrap()
            .1;
        let mut out = BTreeSet::new();
        walk(&root.join("sha256"), &mut |p| {
            out.insert(format!(
                "sha256:{}",
                p.file_name().unwrap().to_string_lossy()
            ));
        });
        out
    }

    async fn finish(self) {
        drop(self.registry);
        if let Some(db) = self.pg {
            db.drop_database().await.unwrap();
        }
    }
}

async fn drain(registry: &Registry) {
    let queue = registry.queue().cloned().unwrap();
    let worker = ReplicationWorker::new(registry.clone(), queue, WorkerConfig::default());
    worker.drain(100).await.unwrap();
}

fn walk(dir: &std::path::Path, f: &mut dyn FnMut(&std::path::Path)) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

fn body(data: &[u8]) -> ByteStream {
    Box::pin(futures::stream::iter([Ok(Bytes::copy_from_slice(data))]))
}

async fn push_blob(reg: &Registry, r: &str, data: &[u8]) -> Digest {
    let digest = Digest::sha256_of(data);
    reg.put_blob(&repo(r), &digest, body(data)).await.unwrap();
    digest
}

/// An image manifest of `layers` (and a config made from `seed`), its blobs pushed first.
async fn push_image(
    reg: &Registry,
    r: &str,
    reference: &str,
    seed: &str,
    layers: &[&[u8]],
) -> Digest {
    let config = format!("{{\"seed\":\"{seed}\"}}");
    let c = push_blob(reg, r, config.as_bytes()).await;
    let mut ls = Vec::new();
    for l in layers {
        let d = push_blob(reg, r, l).await;
        ls.push(
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                   "digest": d, "size": l.len()}),
        );
    }
    let m = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c,
                   "size": config.len()},
        "layers": ls});
    put_manifest(reg, r, reference, OCI_MANIFEST, m.to_string())
        .await
        .unwrap()
}

async fn put_manifest(
    reg: &Registry,
    r: &str,
    reference: &str,
    media_type: &str,
    content: String,
) -> quay_core::Result<Digest> {
    let reference: Reference = reference.parse().unwrap();
    let put = reg
        .put_manifest(&repo(r), &reference, Some(media_type), Bytes::from(content))
        .await?;
    Ok(put.digest)
}

fn policy(window: Duration, protection: Duration) -> GcPolicy {
    GcPolicy {
        tag_expiration: window,
        push_protection: protection,
        orphan_grace: None,
        dry_run: false,
    }
}

async fn collect(reg: &Registry, policy: &GcPolicy) -> GcReport {
    reg.collect_garbage(policy, |_| {}).await.unwrap()
}

async fn readable(reg: &Registry, r: &str, d: &Digest) -> bool {
    use futures::StreamExt;
    let Ok(read) = reg.read_blob(&repo(r), d, None).await else {
        return false;
    };
    let quay_core::registry::BlobBody::Stream { mut stream, .. } = read.body else {
        return false;
    };
    let mut h = quay_core::DigestHasher::new(d.algorithm());
    while let Some(c) = stream.next().await {
        match c {
            Ok(c) => h.update(&c),
            Err(_) => return false,
        }
    }
    &h.finish() == d
}

async fn a_deleted_tag_lives_for_the_window_then_leaves_every_location(postgres: bool) {
    let s = Setup::new(postgres).await;
    let reg = &s.registry;
    let layer = b"layer of app:v1".as_slice();
    let shared = b"layer shared with another repository".as_slice();
    push_image(reg, "team/app", "v1", "app", &[layer, shared]).await;
    push_image(reg, "team/other", "v1", "other", &[shared]).await;
    s.drain().await;
    let layer_d = Digest::sha256_of(layer);
    let shared_d = Digest::sha256_of(shared);
    assert!(
        s.objects("eu").contains(&layer_d.to_string()),
        "replicated first"
    );

    reg.delete_manifest(&repo("team/app"), &"v1".parse().unwrap())
        .await
        .unwrap();
    let window = Duration::from_secs(2);
    let gc = policy(window, Duration::ZERO);
    // Within the window: nothing goes, and the tag can be restored.
    let report = collect(reg, &gc).await;
    assert_eq!((report.manifests, report.blobs_total), (0, 0), "{report:?}");
    let history = reg
        .metadata()
        .tag_history(&repo("team/app"), Some(&"v1".parse::<Tag>().unwrap()), 10)
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    tokio::time::sleep(window + Duration::from_millis(200)).await;
    // A dry run says what will go, and changes nothing.
    let mut dry = gc.clone();
    dry.dry_run = true;
    let report = collect(reg, &dry).await;
    assert_eq!((report.manifests, report.blobs_total), (1, 2), "{report:?}");
    assert_eq!(report.blobs[&id("us")].count, 2);
    assert_eq!(report.blobs[&id("eu")].count, 2);
    assert!(readable(reg, "team/app", &layer_d).await);
    // The real pass: the manifest, its config and its own layer go; the shared layer stays.
    let report = collect(reg, &gc).await;
    assert_eq!((report.manifests, report.blobs_total), (1, 2), "{report:?}");
    s.drain().await;
    for location in ["us", "eu"] {
        let objects = s.objects(location);
        assert!(
            !objects.contains(&layer_d.to_string()),
            "{location} still holds the layer"
        );
        assert!(
            objects.contains(&shared_d.to_string()),
            "{location} lost the shared layer"
        );
    }
    assert!(readable(reg, "team/other", &shared_d).await);
    assert!(!readable(reg, "team/app", &layer_d).await);
    s.finish().await;
}

async fn a_restored_tag_pulls_again(postgres: bool) {
    let s = Setup::new(postgres).await;
    let reg = &s.registry;
    let first = push_image(reg, "team/app", "latest", "one", &[b"layer one"]).await;
    // Moving the tag records its former target.
    let second = push_image(reg, "team/app", "latest", "two", &[b"layer two"]).await;
    assert_ne!(first, second);
    let tag: Tag = "latest".parse().unwrap();
    let history = reg
        .metadata()
        .tag_history(&repo("team/app"), Some(&tag), 10)
        .await
        .unwrap();
    assert_eq!(history[0].digest, first);
    let gc = policy(Duration::from_secs(3600), Duration::ZERO);
    collect(reg, &gc).await;
    let restored = reg
        .metadata()
        .restore_tag(&repo("team/app"), &tag, &first, now_ms() - 3_600_000)
        .await
        .unwrap();
    assert!(restored);
    let m = reg
        .get_manifest(&repo("team/app"), &"latest".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(m.digest, first);
    assert!(readable(reg, "team/app", &Digest::sha256_of(b"layer one")).await);
    // The restore moved the tag off `second`, which is now in the history in turn.
    let history = reg
        .metadata()
        .tag_history(&repo("team/app"), Some(&tag), 10)
        .await
        .unwrap();
    assert_eq!(history[0].digest, second);
    // Outside the window, no restore.
    assert!(!reg
        .metadata()
        .restore_tag(&repo("team/app"), &tag, &second, now_ms() + 1000)
        .await
        .unwrap());
    s.finish().await;
}

async fn an_index_keeps_its_children_and_young_blobs_stay(postgres: bool) {
    let s = Setup::new(postgres).await;
    let reg = &s.registry;
    let amd = push_image(reg, "multi/app", "amd64-build", "amd", &[b"amd64 layer"]).await;
    let arm = push_image(reg, "multi/app", "arm64-build", "arm", &[b"arm64 layer"]).await;
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": amd, "size": 1},
        {"mediaType": OCI_MANIFEST, "digest": arm, "size": 1}]});
    put_manifest(reg, "multi/app", "v1", OCI_INDEX, index.to_string())
        .await
        .unwrap();
    // The per-platform tags go; only the index's tag is left.
    for t in ["amd64-build", "arm64-build"] {
        reg.delete_manifest(&repo("multi/app"), &t.parse().unwrap())
            .await
            .unwrap();
    }
    // A blob uploaded for a push still in progress (no manifest yet).
    let young = push_blob(reg, "multi/app", b"uploaded, manifest not pushed yet").await;
    let report = collect(reg, &policy(Duration::ZERO, Duration::from_secs(3600))).await;
    assert_eq!(report.blobs_total, 0, "{report:?}");
    let report = collect(reg, &policy(Duration::ZERO, Duration::ZERO)).await;
    assert_eq!(
        report.manifests, 0,
        "the index keeps its children: {report:?}"
    );
    assert_eq!(
        report.blobs_total, 1,
        "only the unreferenced upload goes: {report:?}"
    );
    for d in [amd, arm] {
        assert!(reg
            .get_manifest(&repo("multi/app"), &Reference::Digest(d))
            .await
            .is_ok());
    }
    assert!(readable(reg, "multi/app", &Digest::sha256_of(b"arm64 layer")).await);
    assert!(!readable(reg, "multi/app", &young).await);
    s.finish().await;
}

async fn orphans_older_than_the_grace_go_younger_ones_stay(postgres: bool) {
    let s = Setup::new(postgres).await;
    let reg = &s.registry;
    let kept = push_image(reg, "team/app", "v1", "kept", &[b"a kept layer"]).await;
    s.drain().await;
    let us_root = s.roots[0].1.clone();
    let write = |data: &[u8], age: Duration| {
        let d = Digest::sha256_of(data);
        let path = us_root.join(d.object_path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(std::time::SystemTime::now() - age).unwrap();
        d
    };
    let old = write(b"left by a crash an hour ago", Duration::from_secs(3600));
    let new = write(b"written a second ago", Duration::from_secs(1));
    let mut gc = policy(Duration::from_secs(3600), Duration::from_secs(3600));
    gc.orphan_grace = Some(Duration::from_secs(600));
    gc.dry_run = true;
    let report = collect(reg, &gc).await;
    assert_eq!(report.orphans[&id("us")].count, 1, "{report:?}");
    assert!(
        s.objects("us").contains(&old.to_string()),
        "a dry run removes nothing"
    );
    gc.dry_run = false;
    let report = collect(reg, &gc).await;
    assert_eq!(report.orphans[&id("us")].count, 1, "{report:?}");
    let objects = s.objects("us");
    assert!(!objects.contains(&old.to_string()), "the old orphan goes");
    assert!(objects.contains(&new.to_string()), "the young orphan stays");
    let m = reg
        .get_manifest(&repo("team/app"), &Reference::Digest(kept))
        .await
        .unwrap();
    assert!(!m.content.is_empty());
    assert!(readable(reg, "team/app", &Digest::sha256_of(b"a kept layer")).await);
    s.finish().await;
}

/// Many tasks push manifests reusing a few blobs while others delete tags and the collector
/// runs in a loop with no window and no push protection, on two engines sharing one database.
/// At the end every stored manifest's blobs are readable, and once every tag is gone every
/// blob is gone from every location.
async fn concurrent_pushes_never_lose_a_referenced_blob(postgres: bool) {
    let s = Setup::new(postgres).await;
    let url = match &s.pg {
        Some(db) => db.url.clone(),
        None => format!("sqlite://{}?mode=rwc", s._dir.path().join("m.db").display()),
    };
    let second = Setup::engine(&url, s._dir.path()).await;
    let engines = [s.registry.clone(), second];
    let layers: Vec<Vec<u8>> = (0..4)
        .map(|i| format!("shared layer {i}").into_bytes())
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let zero = policy(Duration::ZERO, Duration::ZERO);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..4usize {
        let reg = engines[worker % 2].clone();
        let layers = layers.clone();
        tasks.spawn(async move {
            let mut refused = 0u32;
            for round in 0..8usize {
                let r = format!("race/app{}", worker % 2);
                let picked: Vec<&[u8]> = vec![&layers[round % 4], &layers[(round + worker) % 4]];
                loop {
                    // Push the blobs, then the manifest; a manifest refused because a blob was
                    // collected meanwhile is pushed again, blobs first, as a client would.
                    let mut ok = true;
                    let config = format!("{{\"w\":{worker},\"r\":{round}}}");
                    let mut refs = Vec::new();
                    for data in std::iter::once(config.as_bytes()).chain(picked.iter().copied()) {
                        let d = Digest::sha256_of(data);
                        match reg.put_blob(&repo(&r), &d, body(data)).await {
                            Ok(_) => refs.push((d, data.len())),
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    ErrorKind::Unavailable | ErrorKind::Conflict
                                ) =>
                            {
                                ok = false;
                                break;
                            }
                            Err(e) => panic!("blob push failed: {e}"),
                        }
                    }
                    if !ok {
                        refused += 1;
                        assert!(refused < 5000, "pushes never get through");
                        continue;
                    }
                    let m = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": refs[0].0, "size": refs[0].1},
                        "layers": refs[1..].iter().map(|(d, n)| serde_json::json!({
                            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": d, "size": n})).collect::<Vec<_>>()});
                    let tag = format!("t{}", round % 3);
                    match put_manifest(&reg, &r, &tag, OCI_MANIFEST, m.to_string()).await {
                        Ok(_) => break,
                        Err(e) if e.kind() == ErrorKind::ManifestBlobUnknown => {
                            refused += 1;
                            assert!(refused < 5000, "pushes never get through");
                        }
                        Err(e) => panic!("manifest push failed: {e}"),
                    }
                }
                if round % 4 == 3 {
                    let _ = reg
                        .delete_manifest(&repo(&r), &format!("t{}", round % 3).parse().unwrap())
                        .await;
                }
            }
            refused
        });
    }
    for reg in engines.clone() {
        let stop = stop.clone();
        let gc = zero.clone();
        tasks.spawn(async move {
            let mut passes = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                reg.collect_garbage(&gc, |_| {}).await.unwrap();
                drain(&reg).await;
                passes += 1;
                // Passes at random moments, with breaths so that pushes get through too.
                let pause = u64::from(passes.wrapping_mul(2_654_435_761) % 80);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            passes
        });
    }
    // The pushers end first; then the collectors are stopped.
    let mut refused = 0;
    let mut done = 0;
    while let Some(r) = tasks.join_next().await {
        refused += r.unwrap();
        done += 1;
        if done == 4 {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    println!("manifest pushes refused and redone during collection: {refused}");
    let reg = &engines[0];
    collect(reg, &zero).await;
    drain(reg).await;
    // Every stored manifest's blobs are readable from storage.
    let mut manifests = 0;
    for r in ["race/app0", "race/app1"] {
        let tags = reg
            .list_tags(&repo(r), None, 100)
            .await
            .map(|t| t.tags)
            .unwrap_or_default();
        for t in tags {
            let m = reg
                .get_manifest(&repo(r), &t.parse().unwrap())
                .await
                .unwrap();
            let parsed = quay_core::parse_manifest(Some(&m.media_type), &m.content).unwrap();
            for d in parsed.config.iter().chain(parsed.layers.iter()) {
                if !readable(reg, r, &d.digest).await {
                    let record = reg.metadata().get_blob(&d.digest).await.unwrap();
                    let linked = reg
                        .metadata()
                        .repository_blob(&repo(r), &d.digest)
                        .await
                        .unwrap();
                    let held: Vec<bool> = ["us", "eu"]
                        .iter()
                        .map(|l| s.objects(l).contains(&d.digest.to_string()))
                        .collect();
                    panic!(
                        "{r}:{t} lost {}: record {record:?}, linked {}, objects us/eu {held:?}",
                        d.digest,
                        linked.is_some()
                    );
                }
            }
            manifests += 1;
        }
    }
    assert!(manifests > 0);
    // Every tag gone, no window: every blob leaves every location.
    for r in ["race/app0", "race/app1"] {
        let tags = reg
            .list_tags(&repo(r), None, 100)
            .await
            .map(|t| t.tags)
            .unwrap_or_default();
        for t in tags {
            reg.delete_manifest(&repo(r), &t.parse().unwrap())
                .await
                .unwrap();
        }
    }
    // Past the (zero) window, one pass with the orphan sweep: an object written by a push
    // whose commit was refused during the race has no row, and goes too.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut last = zero.clone();
    last.orphan_grace = Some(Duration::ZERO);
    let report = collect(reg, &last).await;
    println!("final pass: {}", report.render());
    // Jobs that failed during the race (a copy refused while a removal ran) come back after
    // their back-off; they find nothing left to copy. Then the sweep has nothing to protect.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        drain(reg).await;
        let stats = reg.queue().unwrap().stats().await.unwrap();
        if stats.pending + stats.leased == 0 || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    collect(reg, &last).await;
    drain(reg).await;
    let stats = reg.queue().unwrap().stats().await.unwrap();
    for location in ["us", "eu"] {
        let left = s.objects(location);
        let mut rows = Vec::new();
        for d in &left {
            let d: Digest = d.parse().unwrap();
            rows.push(reg.metadata().get_blob(&d).await.unwrap());
        }
        assert_eq!(
            left,
            BTreeSet::new(),
            "{location} keeps unreferenced blobs; their rows: {rows:?}; queue: {stats:?}"
        );
    }
    drop(engines);
    s.finish().await;
}

macro_rules! on_both {
    ($($case:ident),*) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(false).await; })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(true).await; })*
        }
    };
}

on_both!(
    a_deleted_tag_lives_for_the_window_then_leaves_every_location,
    a_restored_tag_pulls_again,
    an_index_keeps_its_children_and_young_blobs_stay,
    orphans_older_than_the_grace_go_younger_ones_stay,
    concurrent_pushes_never_lose_a_referenced_blob
);
