//! The storage conformance suite on the local filesystem, plus filesystem-specific checks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use bytes::Bytes;
use futures::stream;
use quay_core::{Error, ErrorKind, StorageEngine};
use quay_storage::testkit::storage::FsFactory;
use quay_storage::OpendalStorage;

quay_storage::storage_conformance_tests!(FsFactory::new().expect("temporary folder"));

/// Files in `dir` (recursively).
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn writes_leave_no_temporary_files() {
    let factory = FsFactory::new().unwrap();
    let storage = OpendalStorage::fs(factory.root(), "fs").unwrap();
    let ok = stream::iter([Ok(Bytes::from_static(b"complete"))]);
    storage.write("a/done", Box::pin(ok)).await.unwrap();
    let failing = stream::iter([
        Ok(Bytes::from_static(b"partial")),
        Err(Error::new(ErrorKind::BlobUploadInvalid, "injected")),
    ]);
    storage
        .write("a/failed", Box::pin(failing))
        .await
        .unwrap_err();
    // The completed object sits at its path; nothing remains in the staging folder.
    assert_eq!(files_under(factory.root()), [factory.root().join("a/done")]);
    storage.delete("a/done").await.unwrap();
}

#[tokio::test]
async fn objects_are_plain_files_under_the_root() {
    let factory = FsFactory::new().unwrap();
    let storage = OpendalStorage::fs(factory.root(), "fs").unwrap();
    let data = stream::iter([Ok(Bytes::from_static(b"on disk"))]);
    storage
        .write("sha256/ab/abcdef", Box::pin(data))
        .await
        .unwrap();
    let file = factory.root().join("sha256/ab/abcdef");
    assert_eq!(std::fs::read(file).unwrap(), b"on disk");
}
