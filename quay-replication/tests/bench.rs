//! The replication benchmark of `quayctl bench`, on filesystem and S3 locations: every blob is
//! copied and verified, the figures add up, and nothing is left under the scratch prefix in
//! either location, nor anywhere else.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::sync::Arc;

use quay_core::{LocationId, StorageEngine};
use quay_replication::bench::{self, BenchOptions, BenchProgress, Phase};
use quay_storage::testkit::s3::S3TestServer;
use quay_storage::{build_location, OpendalStorage};

async fn measure(source: Arc<dyn StorageEngine>, target: Arc<dyn StorageEngine>) {
    let before = (
        source.list("").await.unwrap(),
        target.list("").await.unwrap(),
    );
    let options = BenchOptions {
        blobs: 5,
        size: 2 * 1024 * 1024 + 123,
        concurrency: 2,
    };
    let mut seen: Vec<BenchProgress> = Vec::new();
    let report = bench::run(source.clone(), target.clone(), &options, &mut |p| {
        seen.push(p.clone())
    })
    .await
    .unwrap();
    assert_eq!(report.blobs, 5);
    assert_eq!(report.bytes, 5 * options.size);
    assert_eq!(report.left_behind, 0);
    assert!(report.mb_per_sec() > 0.0 && report.blobs_per_sec() > 0.0);
    assert!(
        report.prefix.starts_with("quay-bench-"),
        "{}",
        report.prefix
    );
    let phases = |phase| seen.iter().filter(|p| p.phase == phase).count();
    assert_eq!((phases(Phase::Writing), phases(Phase::Copying)), (5, 5));
    let last = seen.last().unwrap();
    assert_eq!((last.done, last.total, last.bytes), (5, 5, report.bytes));
    // Nothing new anywhere in either location.
    let after = (
        source.list("").await.unwrap(),
        target.list("").await.unwrap(),
    );
    assert_eq!(before, after, "the benchmark left objects behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_to_fs_copies_everything_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let us: Arc<dyn StorageEngine> =
        Arc::new(OpendalStorage::fs(&dir.path().join("us"), "us").unwrap());
    let eu: Arc<dyn StorageEngine> =
        Arc::new(OpendalStorage::fs(&dir.path().join("eu"), "eu").unwrap());
    measure(us, eu).await;
    // Not even an empty folder.
    for name in ["us", "eu"] {
        let leftovers: Vec<String> = std::fs::read_dir(dir.path().join(name))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("quay-bench"))
            .collect();
        assert!(leftovers.is_empty(), "{name}: {leftovers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_to_s3_copies_everything_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3TestServer::start(dir.path(), &["us-bucket", "eu-bucket"]).unwrap();
    let location = |bucket: &str, id: &str| {
        let id: LocationId = id.parse().unwrap();
        build_location(&id, &server.driver_config(bucket, "/registry")).unwrap()
    };
    measure(location("us-bucket", "us"), location("eu-bucket", "eu")).await;
    server.stop();
}

#[tokio::test]
async fn nothing_to_measure_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn StorageEngine> = Arc::new(OpendalStorage::fs(dir.path(), "x").unwrap());
    let options = BenchOptions {
        blobs: 0,
        ..BenchOptions::default()
    };
    let e = bench::run(fs.clone(), fs, &options, &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(e.kind(), quay_core::ErrorKind::InvalidInput);
}
