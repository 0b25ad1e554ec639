//! The storage conformance suite on S3, served by `s3s-fs` in-process on a loopback port, plus
//! S3-specific checks: objects are plain files in the bucket's folder, a missing bucket fails
//! the probe, a dead server is an outage, and the S3-family drivers reach the server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use bytes::Bytes;
use futures::{stream, StreamExt};
use quay_core::config::QuayConfig;
use quay_core::{ErrorKind, LocationId, StorageEngine};
use quay_storage::build_location;
use quay_storage::testkit::s3::{S3Factory, S3TestServer};

quay_storage::storage_conformance_tests!(S3Factory::start().expect("S3 test server"));

fn one_chunk(data: &'static [u8]) -> quay_core::ByteStream {
    Box::pin(stream::iter([Ok(Bytes::from_static(data))]))
}

async fn read_all(engine: &dyn StorageEngine, path: &str) -> Vec<u8> {
    let mut stream = engine.read(path, None).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

#[tokio::test]
async fn objects_are_files_under_the_bucket_and_storage_path() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3TestServer::start(dir.path(), &["blobs"]).unwrap();
    let id: LocationId = "us".parse().unwrap();
    let engine = build_location(&id, &server.driver_config("blobs", "quaydata")).unwrap();
    engine
        .write("sha256/ab/abcdef", one_chunk(b"on disk"))
        .await
        .unwrap();
    let file = dir.path().join("blobs/quaydata/sha256/ab/abcdef");
    assert_eq!(std::fs::read(file).unwrap(), b"on disk");
    assert!(engine.capabilities().presign && engine.capabilities().copy);
    assert!(!engine.capabilities().rename);
}

#[tokio::test]
async fn probe_fails_when_the_bucket_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3TestServer::start(dir.path(), &["present"]).unwrap();
    let id: LocationId = "us".parse().unwrap();
    let present = build_location(&id, &server.driver_config("present", "")).unwrap();
    present.probe().await.unwrap();
    let missing = build_location(&id, &server.driver_config("absent", "")).unwrap();
    assert!(missing.probe().await.is_err(), "probe of a missing bucket");
}

#[tokio::test]
async fn wrong_secret_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3TestServer::start(dir.path(), &["bkt"]).unwrap();
    let mut settings = server.s3_settings("bkt", "");
    settings.secret_key = quay_core::config::Secret::new("not-the-key");
    let id: LocationId = "us".parse().unwrap();
    let engine = build_location(&id, &quay_core::config::DriverConfig::S3(settings)).unwrap();
    let err = engine.probe().await.unwrap_err();
    assert!(!format!("{err:?}").contains("not-the-key"), "{err:?}");
}

#[tokio::test]
async fn a_stopped_server_is_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3TestServer::start(dir.path(), &["bkt"]).unwrap();
    let id: LocationId = "us".parse().unwrap();
    let engine = build_location(&id, &server.driver_config("bkt", "")).unwrap();
    engine.write("x", one_chunk(b"x")).await.unwrap();
    server.stop();
    let err = engine.stat("x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert!(err.is_temporary());
    assert!(engine.probe().await.is_err());
}

#[tokio::test]
async fn a_server_restarted_on_its_port_serves_its_folder_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3TestServer::start(dir.path(), &["bkt"]).unwrap();
    let port = server.addr().port();
    let id: LocationId = "us".parse().unwrap();
    let engine = build_location(&id, &server.driver_config("bkt", "")).unwrap();
    engine.write("kept", one_chunk(b"kept")).await.unwrap();
    server.stop();
    let _again = S3TestServer::builder(dir.path())
        .port(port)
        .start()
        .unwrap();
    // The first request may go out on a pooled connection to the stopped server: that fails
    // as a temporary error, and the next one connects anew.
    let mut size = engine.stat("kept").await;
    if let Err(e) = &size {
        assert!(e.is_temporary(), "{e:?}");
        size = engine.stat("kept").await;
    }
    assert_eq!(size.unwrap().size, 4);
    assert_eq!(read_all(engine.as_ref(), "kept").await, b"kept");
}

/// Every S3-family driver, written as Quay writes it, reaches the server.
#[tokio::test]
async fn every_s3_family_driver_reaches_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3TestServer::start(dir.path(), &["family"]).unwrap();
    let (ak, sk) = (server.access_key(), server.secret_key());
    let addr = server.addr();
    let (host, port) = (addr.ip(), addr.port());
    let yaml = format!(
        r#"
DISTRIBUTED_STORAGE_CONFIG:
  s3_url: [S3Storage, {{s3_bucket: family, storage_path: /s3url, s3_access_key: {ak}, s3_secret_key: {sk}, endpoint_url: "http://{host}:{port}"}}]
  s3_host: [S3Storage, {{s3_bucket: family, storage_path: s3host, s3_access_key: {ak}, s3_secret_key: {sk}, host: "http://{host}", port: {port}, s3_region: eu-west-1}}]
  radosgw: [RadosGWStorage, {{hostname: "{host}", port: {port}, is_secure: false, access_key: {ak}, secret_key: {sk}, bucket_name: family, storage_path: rados}}]
  rhocs: [RHOCSStorage, {{hostname: "{host}", port: {port}, is_secure: false, access_key: {ak}, secret_key: {sk}, bucket_name: family, storage_path: rhocs}}]
  ibm: [IBMCloudStorage, {{hostname: "{host}:{port}", is_secure: false, access_key: {ak}, secret_key: {sk}, bucket_name: family, storage_path: ibm}}]
  gcs: [GoogleCloudStorage, {{access_key: {ak}, secret_key: {sk}, bucket_name: family, storage_path: /quaydata, endpoint_url: "http://{host}:{port}"}}]
"#
    );
    let config = QuayConfig::from_yaml(&yaml, None).unwrap();
    assert_eq!(config.locations.len(), 6);
    for (id, driver) in &config.locations {
        let engine = build_location(id, driver).unwrap();
        engine.probe().await.unwrap();
        let path = format!("sha256/{id}");
        engine.write(&path, one_chunk(b"family")).await.unwrap();
        assert_eq!(read_all(engine.as_ref(), &path).await, b"family", "{id}");
    }
    for folder in ["s3url", "s3host", "rados", "rhocs", "ibm", "quaydata"] {
        assert!(
            dir.path().join("family").join(folder).is_dir(),
            "no folder {folder} in the bucket"
        );
    }
}

/// The `s3-test-server` binary serves like the in-process server, and killing it is an outage.
#[tokio::test]
async fn the_s3_test_server_binary_serves_until_killed() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_s3-test-server"))
        .args(["--port", "0", "--access-key", "ak", "--secret-key", "sk"])
        .args(["--bucket", "us-bucket", "--bucket", "eu-bucket", "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let endpoint = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let yaml = format!(
        "DISTRIBUTED_STORAGE_CONFIG:\n  us: [S3Storage, {{s3_bucket: us-bucket, s3_access_key: ak, \
         s3_secret_key: sk, endpoint_url: \"{endpoint}\"}}]\n"
    );
    let config = QuayConfig::from_yaml(&yaml, None).unwrap();
    let (id, driver) = config.locations.iter().next().unwrap();
    let engine = build_location(id, driver).unwrap();
    engine.write("blob", one_chunk(b"served")).await.unwrap();
    assert_eq!(read_all(engine.as_ref(), "blob").await, b"served");
    assert!(dir.path().join("eu-bucket").is_dir());
    child.kill().unwrap();
    child.wait().unwrap();
    let err = engine.stat("blob").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
}
