//! The metadata conformance suite on PostgreSQL, plus Postgres-specific checks.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 (or `QUAY_TEST_POSTGRES_URL`); fails when it is missing:
//! `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use quay_core::ErrorKind;
use quay_storage::testkit::postgres::{fresh_database, fresh_postgres, PostgresHarness};
use quay_storage::SqlMetadataStore;

quay_storage::metadata_conformance_tests!(PostgresHarness);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_migrate_once() {
    let db = fresh_database().await.unwrap();
    let connects = (0..4).map(|_| SqlMetadataStore::connect(&db.url));
    let stores = futures::future::join_all(connects).await;
    let expected = SqlMetadataStore::schema_versions();
    for store in stores {
        assert_eq!(store.unwrap().applied_migrations().await.unwrap(), expected);
    }
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn unreachable_server_is_unavailable_without_the_password() {
    let err = SqlMetadataStore::connect("postgres://quay:secret@127.0.0.1:1/quay")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_temporary());
    assert!(!format!("{err} {err:?}").contains("secret"), "{err:?}");
}

#[tokio::test]
async fn names_sort_bytewise() {
    use sea_orm::{ConnectionTrait, Statement};
    let (store, db) = fresh_postgres().await.unwrap();
    let conn = store.connection();
    let row = conn
        .query_one(Statement::from_string(
            conn.get_database_backend(),
            "SELECT collation_name FROM information_schema.columns \
             WHERE table_name = 'tags' AND column_name = 'name'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get_by_index::<String>(0).unwrap(), "C");
    drop(store);
    db.drop_database().await.unwrap();
}
