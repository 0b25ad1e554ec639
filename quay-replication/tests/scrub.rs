//! Scrub and repair, on SQLite and PostgreSQL with two filesystem locations: a corrupted copy
//! and a deleted copy are found, recorded and repaired from the good one through the verified
//! copy path; reads meeting them fall through to the good copy and never serve corrupt bytes;
//! a blob with no good copy left is reported; a drained location takes no new blob and is
//! read last.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use quay_core::registry::BlobBody;
use quay_core::{
    ByteStream, CopyProblem, Digest, DigestHasher, LocationId, Registry, RepositoryName,
};
use quay_replication::scrub::{scrub, ScrubOptions};
use quay_replication::worker::{ReplicationWorker, WorkerConfig};
use quay_storage::testkit::postgres::{fresh_database, TestDatabase};
use quay_storage::{OpendalStorage, SqlMetadataStore};

fn id(s: &str) -> LocationId {
    s.parse().unwrap()
}

struct Setup {
    registry: Registry,
    dir: tempfile::TempDir,
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
            (
                format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display()),
                None,
            )
        };
        let store = SqlMetadataStore::connect(&url).await.unwrap();
        let mut builder = Registry::builder(Arc::new(store));
        for l in ["us", "eu"] {
            let engine = OpendalStorage::fs(&dir.path().join(l), l).unwrap();
            builder = builder.location(id(l), Arc::new(engine));
        }
        let registry = builder
            .preference([id("us"), id("eu")])
            .replicate_to([id("us"), id("eu")])
            .finish()
            .unwrap();
        Setup { registry, dir, pg }
    }

    fn object(&self, location: &str, d: &Digest) -> std::path::PathBuf {
        self.dir.path().join(location).join(d.object_path())
    }

    async fn drain(&self) {
        let queue = self.registry.queue().cloned().unwrap();
        ReplicationWorker::new(self.registry.clone(), queue, WorkerConfig::default())
            .drain(100)
            .await
            .unwrap();
    }

    async fn finish(self) {
        drop(self.registry);
        if let Some(db) = self.pg {
            db.drop_database().await.unwrap();
        }
    }
}

fn repo() -> RepositoryName {
    "scrub/app".parse().unwrap()
}

async fn push(reg: &Registry, data: &[u8]) -> Digest {
    let d = Digest::sha256_of(data);
    let body: ByteStream = Box::pin(futures::stream::iter([Ok(Bytes::copy_from_slice(data))]));
    reg.put_blob(&repo(), &d, body).await.unwrap();
    d
}

/// Reads the blob through the engine; `Ok(bytes)` only when the stream completed.
async fn read(reg: &Registry, d: &Digest) -> Result<(LocationId, Vec<u8>), String> {
    let read = reg
        .read_blob(&repo(), d, None)
        .await
        .map_err(|e| e.to_string())?;
    let BlobBody::Stream {
        location,
        mut stream,
    } = read.body
    else {
        return Err("redirect".into());
    };
    let mut out = Vec::new();
    while let Some(c) = stream.next().await {
        out.extend_from_slice(&c.map_err(|e| e.to_string())?);
    }
    Ok((location, out))
}

fn hash(data: &[u8]) -> Digest {
    let mut h = DigestHasher::new(quay_core::Algorithm::Sha256);
    h.update(data);
    h.finish()
}

async fn bad_copies_are_found_and_repaired(postgres: bool) {
    let s = Setup::new(postgres).await;
    let reg = &s.registry;
    let corrupted = push(reg, &vec![1u8; 200_000]).await;
    let deleted = push(reg, b"a copy deleted behind the registry's back").await;
    let fine = push(reg, b"a copy left alone").await;
    s.drain().await;
    // Damage the us copies (the preferred location) behind the registry's back.
    let path = s.object("us", &corrupted);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100_000] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    std::fs::remove_file(s.object("us", &deleted)).unwrap();

    // Reads never return the corrupt bytes: the corrupt copy is cut off before its end and
    // reported; the next read comes from eu. The missing copy falls through to eu at once.
    match read(reg, &corrupted).await {
        Ok((location, data)) => {
            assert_eq!(
                hash(&data),
                corrupted,
                "served corrupt bytes from {location}"
            )
        }
        Err(e) => assert!(e.contains("corrupt"), "{e}"),
    }
    let (location, data) = read(reg, &corrupted).await.unwrap();
    assert_eq!((location.as_str(), hash(&data)), ("eu", corrupted.clone()));
    let (location, data) = read(reg, &deleted).await.unwrap();
    assert_eq!((location.as_str(), hash(&data)), ("eu", deleted.clone()));
    let problems = reg.metadata().bad_copies(10).await.unwrap();
    let mut found: Vec<(String, CopyProblem)> = problems
        .iter()
        .map(|p| (format!("{}@{}", p.digest, p.location), p.problem))
        .collect();
    found.sort();
    let mut expected = vec![
        (format!("{corrupted}@us"), CopyProblem::Corrupt),
        (format!("{deleted}@us"), CopyProblem::Missing),
    ];
    expected.sort();
    assert_eq!(found, expected);
    // The repair jobs the reads queued copy good ones back.
    s.drain().await;
    for d in [&corrupted, &deleted, &fine] {
        assert_eq!(hash(&std::fs::read(s.object("us", d)).unwrap()), *d);
    }
    assert!(reg.metadata().bad_copies(10).await.unwrap().is_empty());

    // A scrub finds what reads did not: damage eu now, scrub both, repair at once.
    let path = s.object("eu", &fine);
    std::fs::write(&path, b"not the blob").unwrap();
    std::fs::remove_file(s.object("eu", &deleted)).unwrap();
    let locations = [id("us"), id("eu")];
    let dry = ScrubOptions {
        dry_run: true,
        ..ScrubOptions::default()
    };
    let report = scrub(reg, &locations, dry, |_, _| {}).await.unwrap();
    assert_eq!(report.locations[&id("us")].checked, 3);
    assert_eq!(report.locations[&id("eu")].corrupt, vec![fine.clone()]);
    assert_eq!(report.locations[&id("eu")].missing, vec![deleted.clone()]);
    assert!(
        reg.metadata().bad_copies(10).await.unwrap().is_empty(),
        "dry"
    );
    let repair = ScrubOptions {
        repair: true,
        bytes_per_sec: Some(50_000_000),
        ..ScrubOptions::default()
    };
    let report = scrub(reg, &locations, repair, |_, _| {}).await.unwrap();
    println!("{}", report.render(false));
    assert_eq!(report.locations[&id("eu")].repaired, 2);
    let report = scrub(reg, &locations, repair, |_, _| {}).await.unwrap();
    assert!(report.clean(), "{}", report.render(false));
    for d in [&corrupted, &deleted, &fine] {
        assert_eq!(hash(&std::fs::read(s.object("eu", d)).unwrap()), *d);
    }
    s.finish().await;
}

async fn a_blob_with_no_good_copy_is_reported(postgres: bool) {
    let s = Setup::new(postgres).await;
    let reg = &s.registry;
    // Not replicated yet: us holds the only copy.
    let lonely = push(reg, b"the only copy").await;
    std::fs::write(s.object("us", &lonely), b"garbage").unwrap();
    let report = scrub(reg, &[id("us")], ScrubOptions::default(), |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        report.locations[&id("us")].unrecoverable,
        vec![lonely.clone()]
    );
    assert!(report.render(false).contains("NO GOOD COPY LEFT"));
    let problems = reg.metadata().bad_copies(10).await.unwrap();
    assert_eq!(problems.len(), 1);
    assert!(!problems[0].recoverable);
    // The sole placement is kept: nothing pretends the blob moved.
    let blob = reg.metadata().get_blob(&lonely).await.unwrap().unwrap();
    assert_eq!(blob.locations, vec![id("us")]);
    s.finish().await;
}

async fn a_drained_location_takes_no_new_blob_and_is_read_last(postgres: bool) {
    let s = Setup::new(postgres).await;
    let reg = &s.registry;
    let before = push(reg, b"pushed before the drain").await;
    s.drain().await;
    reg.metadata().set_drained(&id("us"), true).await.unwrap();
    reg.refresh_drained().await.unwrap();
    assert!(reg.is_drained(&id("us")));
    let after = push(reg, b"pushed while us is drained").await;
    let blob = reg.metadata().get_blob(&after).await.unwrap().unwrap();
    assert_eq!(
        blob.locations,
        vec![id("eu")],
        "a new blob lands outside the drained location"
    );
    // Replication into the drained location goes on.
    s.drain().await;
    assert!(s.object("us", &after).exists());
    // Reads prefer the other holder.
    let (location, _) = read(reg, &before).await.unwrap();
    assert_eq!(location.as_str(), "eu");
    reg.metadata().set_drained(&id("us"), false).await.unwrap();
    reg.refresh_drained().await.unwrap();
    let (location, _) = read(reg, &before).await.unwrap();
    assert_eq!(location.as_str(), "us");
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
    bad_copies_are_found_and_repaired,
    a_blob_with_no_good_copy_is_reported,
    a_drained_location_takes_no_new_blob_and_is_read_last
);
