//! The metadata conformance suite on SQLite, plus SQLite-specific checks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use quay_core::metadata::{BlobIndex, ManifestIndex, UploadStore};
use quay_core::ErrorKind;
use quay_storage::testkit::metadata::{fresh_sqlite, SqliteHarness, TestSqlite};
use quay_storage::SqlMetadataStore;

quay_storage::metadata_conformance_tests!(SqliteHarness);

#[tokio::test]
async fn in_memory_database_is_one_database() {
    let store = SqlMetadataStore::connect("sqlite::memory:").await.unwrap();
    let repo = "a".parse().unwrap();
    let location = "us".parse().unwrap();
    store.create_upload("u1", &repo, &location).await.unwrap();
    // Several operations at once all go through the one connection that holds the database.
    let (a, b) = tokio::join!(store.get_upload("u1"), store.catalog(None, 10));
    assert_eq!(a.unwrap().id, "u1");
    assert!(b.unwrap().items.is_empty());
    assert!(store.list_tags(&repo, None, 10).await.unwrap().is_none());
}

#[tokio::test]
async fn migrations_apply_once() {
    let db = TestSqlite::new().unwrap();
    let first = SqlMetadataStore::connect(&db.url).await.unwrap();
    let second = SqlMetadataStore::connect(&db.url).await.unwrap();
    let expected = SqlMetadataStore::schema_versions();
    assert_eq!(first.applied_migrations().await.unwrap(), expected);
    assert_eq!(second.applied_migrations().await.unwrap(), expected);
}

#[tokio::test]
async fn concurrent_connects_migrate_once() {
    let db = TestSqlite::new().unwrap();
    let (a, b, c) = tokio::join!(
        SqlMetadataStore::connect(&db.url),
        SqlMetadataStore::connect(&db.url),
        SqlMetadataStore::connect(&db.url),
    );
    let (a, _b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let expected = SqlMetadataStore::schema_versions();
    assert_eq!(a.applied_migrations().await.unwrap(), expected);
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_foreign_keys() {
    use sea_orm::{ConnectionTrait, Statement};
    let (store, _db) = fresh_sqlite().await.unwrap();
    let db = store.connection();
    let query = |sql: &str| Statement::from_string(db.get_database_backend(), sql.to_owned());
    let mode = db
        .query_one(query("PRAGMA journal_mode"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mode.try_get_by_index::<String>(0).unwrap(), "wal");
    let fk = db
        .query_one(query("PRAGMA foreign_keys"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fk.try_get_by_index::<i64>(0).unwrap(), 1);
}

#[tokio::test]
async fn unsupported_url_is_a_config_error_without_the_url() {
    let err = SqlMetadataStore::connect("mysql://root:secret@localhost/db")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(!format!("{err} {err:?}").contains("secret"));
}

#[tokio::test]
async fn debug_shows_no_url() {
    let db = TestSqlite::new().unwrap();
    let store = SqlMetadataStore::connect(&db.url).await.unwrap();
    let shown = format!("{store:?}");
    assert!(shown.contains("Sqlite"), "{shown}");
    assert!(!shown.contains("metadata.db"), "{shown}");
}

#[tokio::test]
async fn corrupt_row_is_an_internal_error() {
    use sea_orm::ConnectionTrait;
    let (store, _db) = fresh_sqlite().await.unwrap();
    store
        .connection()
        .execute_unprepared(
            "INSERT INTO uploads (id, repository, location, size, created_at, updated_at) \
             VALUES ('bad', 'Not A Repo', 'us', 0, 0, 0)",
        )
        .await
        .unwrap();
    let err = store.get_upload("bad").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    let d = quay_core::Digest::sha256_of(b"x");
    store
        .connection()
        .execute_unprepared(&format!(
            "INSERT INTO blobs (digest, size, created_at) VALUES ('{d}', -1, 0)"
        ))
        .await
        .unwrap();
    assert_eq!(
        store.get_blob(&d).await.unwrap_err().kind(),
        ErrorKind::Internal
    );
}
