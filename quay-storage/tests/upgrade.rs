//! Rolling upgrades: an instance of the previous release (schema version 2) and one of this
//! release share a database. The statements the previous release issues on the tables that
//! existed at version 2 (written out below as it wrote them: uploads, blobs, placements, links,
//! manifests, tags, the job queue) must keep working once this release has migrated the
//! database, and the tables of version 2 may only have gained columns that such statements
//! can leave out (nullable or defaulted). Run on SQLite and PostgreSQL.
//!
//! Also: starting this release twice migrates nothing the second time, and a PostgreSQL
//! server's notices ("relation … already exists, skipping") never reach the log at INFO.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use quay_core::metadata::now_ms;
use quay_core::{BlobIndex, Digest, ManifestIndex, Reference, UploadStore};
use quay_storage::testkit::metadata::TestSqlite;
use quay_storage::testkit::postgres::fresh_database;
use quay_storage::SqlMetadataStore;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, Value};

/// The schema version of the previous release.
const PREVIOUS: i64 = 2;

/// The tables of schema version 2.
const V2_TABLES: &[&str] = &[
    "repositories",
    "blobs",
    "blob_placements",
    "repository_blobs",
    "uploads",
    "upload_parts",
    "manifests",
    "tags",
    "replication_jobs",
];

fn stmt(db: &DatabaseConnection, sql: &str, values: Vec<Value>) -> Statement {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => sql.to_owned(),
        _ => sql.replace('$', "?"),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

async fn exec(db: &DatabaseConnection, what: &str, sql: &str, values: Vec<Value>) -> u64 {
    db.execute(stmt(db, sql, values))
        .await
        .unwrap_or_else(|e| panic!("the previous release's {what} fails: {e}\n{sql}"))
        .rows_affected()
}

async fn query(
    db: &DatabaseConnection,
    what: &str,
    sql: &str,
    values: Vec<Value>,
) -> Vec<sea_orm::QueryResult> {
    db.query_all(stmt(db, sql, values))
        .await
        .unwrap_or_else(|e| panic!("the previous release's {what} fails: {e}\n{sql}"))
}

/// What the previous release does with one blob pushed by chunk into `repo`, tagged, then
/// replicated by its worker: its statements, in its words.
async fn previous_release_pushes(db: &DatabaseConnection, seed: &str) -> Digest {
    let now = now_ms();
    let repo = format!("old/{seed}");
    let digest = Digest::sha256_of(seed.as_bytes());
    let d = digest.to_string();
    let upload = format!("upload{seed}");
    exec(
        db,
        "upload start",
        "INSERT INTO uploads (id, repository, location, size, created_at, updated_at) \
          VALUES ($1, $2, $3, 0, $4, $4)",
        vec![
            upload.clone().into(),
            repo.clone().into(),
            "us".into(),
            now.into(),
        ],
    )
    .await;
    exec(
        db,
        "chunk record",
        "INSERT INTO upload_parts (upload_id, part_offset, size, path, sha256) \
          VALUES ($1, 0, 4, $2, NULL)",
        vec![upload.clone().into(), format!("uploads/{upload}/0").into()],
    )
    .await;
    let n = exec(
        db,
        "chunk compare-and-set",
        "UPDATE uploads SET size = $1, updated_at = $2 WHERE id = $3 AND size = $4",
        vec![4i64.into(), now.into(), upload.clone().into(), 0i64.into()],
    )
    .await;
    assert_eq!(n, 1);
    let parts = query(db, "upload read", "SELECT u.id, u.repository, u.location, u.size, p.part_offset, p.size AS part_size, \
          p.path, p.sha256 FROM uploads u LEFT JOIN upload_parts p ON p.upload_id = u.id WHERE u.id = $1 \
          ORDER BY p.part_offset", vec![upload.clone().into()]).await;
    assert_eq!(parts.len(), 1);
    // The commit.
    exec(
        db,
        "repository insert",
        "INSERT INTO repositories (name, created_at) VALUES ($1, $2) \
          ON CONFLICT (name) DO NOTHING",
        vec![repo.clone().into(), now.into()],
    )
    .await;
    exec(
        db,
        "blob insert",
        "INSERT INTO blobs (digest, size, created_at) VALUES ($1, 4, $2) \
          ON CONFLICT (digest) DO NOTHING",
        vec![d.clone().into(), now.into()],
    )
    .await;
    exec(
        db,
        "placement insert",
        "INSERT INTO blob_placements (digest, location, created_at) VALUES ($1, $2, $3) \
          ON CONFLICT (digest, location) DO NOTHING",
        vec![d.clone().into(), "us".into(), now.into()],
    )
    .await;
    exec(
        db,
        "link insert",
        "INSERT INTO repository_blobs (repository, digest, created_at) VALUES ($1, $2, $3) \
          ON CONFLICT (repository, digest) DO NOTHING",
        vec![repo.clone().into(), d.clone().into(), now.into()],
    )
    .await;
    exec(db, "job insert", "INSERT INTO replication_jobs (kind, digest, target, state, attempts, not_before, enqueued_at) \
          VALUES ($2, $3, $4, 'pending', 0, $1, $1) ON CONFLICT (kind, digest, target) DO NOTHING",
        vec![now.into(), "replicate".into(), d.clone().into(), "eu".into()]).await;
    exec(
        db,
        "upload parts delete",
        "DELETE FROM upload_parts WHERE upload_id = $1",
        vec![upload.clone().into()],
    )
    .await;
    exec(
        db,
        "upload delete",
        "DELETE FROM uploads WHERE id = $1",
        vec![upload.into()],
    )
    .await;
    // The manifest and its tag.
    let manifest = Digest::sha256_of(format!("manifest {seed}").as_bytes()).to_string();
    exec(
        db,
        "manifest insert",
        "INSERT INTO manifests (repository, digest, media_type, content, subject, \
          artifact_type, annotations, created_at) VALUES ($1, $2, $3, $4, NULL, NULL, NULL, $5) \
          ON CONFLICT (repository, digest) DO NOTHING",
        vec![
            repo.clone().into(),
            manifest.clone().into(),
            "application/vnd.oci.image.manifest.v1+json".into(),
            Value::Bytes(Some(Box::new(b"{}".to_vec()))),
            now.into(),
        ],
    )
    .await;
    exec(
        db,
        "tag upsert",
        "INSERT INTO tags (repository, name, manifest_digest, updated_at) VALUES ($1, $2, $3, $4) \
          ON CONFLICT (repository, name) DO UPDATE SET manifest_digest = excluded.manifest_digest, \
          updated_at = excluded.updated_at",
        vec![
            repo.clone().into(),
            "v1".into(),
            manifest.clone().into(),
            now.into(),
        ],
    )
    .await;
    // Reads: a pull, the catalog, the tags, the referrers.
    let rows = query(
        db,
        "blob read",
        "SELECT b.digest, b.size, p.location FROM repository_blobs r \
          JOIN blobs b ON b.digest = r.digest LEFT JOIN blob_placements p ON p.digest = b.digest \
          WHERE r.repository = $1 AND r.digest = $2",
        vec![repo.clone().into(), d.clone().into()],
    )
    .await;
    assert_eq!(rows.len(), 1);
    let rows = query(db, "manifest by tag", "SELECT m.digest, m.media_type, m.content, m.subject, m.artifact_type, \
          m.annotations FROM tags t JOIN manifests m ON m.repository = t.repository AND m.digest = t.manifest_digest \
          WHERE t.repository = $1 AND t.name = $2", vec![repo.clone().into(), "v1".into()]).await;
    assert_eq!(rows.len(), 1);
    query(
        db,
        "catalog",
        "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT 100",
        vec!["".into()],
    )
    .await;
    query(
        db,
        "tag list",
        "SELECT name FROM tags WHERE repository = $1 ORDER BY name LIMIT 100",
        vec![repo.into()],
    )
    .await;
    query(
        db,
        "referrers",
        "SELECT digest FROM manifests WHERE repository = $1 AND subject = $2",
        vec!["old/x".into(), manifest.into()],
    )
    .await;
    // The previous release's worker: claim, copy, record, complete; and its status counts.
    let token = format!("token-{seed}");
    let claimed = query(db, "claim", "UPDATE replication_jobs SET state = 'leased', lease_token = $1, \
          lease_expires = $2, attempts = attempts + 1 WHERE id IN (SELECT id FROM replication_jobs \
          WHERE state = 'pending' AND digest = $4 AND not_before <= $3 ORDER BY not_before LIMIT 10) \
          RETURNING id, kind, digest, target, attempts, enqueued_at, last_error, lease_expires",
        vec![token.clone().into(), (now + 60_000).into(), (now + 1).into(), d.clone().into()]).await;
    assert_eq!(claimed.len(), 1, "the job is claimed");
    let id: i64 = claimed[0].try_get("", "id").unwrap();
    exec(db, "placement of the copy", "INSERT INTO blob_placements (digest, location, created_at) \
          SELECT digest, $2, $3 FROM blobs WHERE digest = $1 ON CONFLICT (digest, location) DO NOTHING",
        vec![d.clone().into(), "eu".into(), now.into()]).await;
    let n = exec(
        db,
        "complete",
        "DELETE FROM replication_jobs WHERE id = $1 AND lease_token = $2",
        vec![id.into(), token.into()],
    )
    .await;
    assert_eq!(n, 1);
    query(
        db,
        "queue stats",
        "SELECT state AS st, COUNT(*) AS n, MIN(enqueued_at) AS oldest \
          FROM replication_jobs GROUP BY state",
        vec![],
    )
    .await;
    query(
        db,
        "location stats",
        "SELECT p.location AS location, COUNT(*) AS n, \
          CAST(COALESCE(SUM(b.size), 0) AS BIGINT) AS bytes FROM blob_placements p \
          JOIN blobs b ON b.digest = p.digest GROUP BY p.location",
        vec![],
    )
    .await;
    digest
}

/// Per table of version 2: column name → whether a statement may leave it out (nullable or
/// defaulted).
async fn columns(db: &DatabaseConnection) -> BTreeMap<String, BTreeMap<String, bool>> {
    let mut out = BTreeMap::new();
    for table in V2_TABLES {
        let rows = match db.get_database_backend() {
            DbBackend::Postgres => {
                query(
                    db,
                    "schema",
                    "SELECT column_name AS name, \
                  (is_nullable = 'YES' OR column_default IS NOT NULL) AS optional \
                  FROM information_schema.columns WHERE table_name = $1",
                    vec![(*table).into()],
                )
                .await
            }
            _ => {
                query(
                    db,
                    "schema",
                    "SELECT name, (\"notnull\" = 0 OR dflt_value IS NOT NULL OR pk = 1) \
                  AS optional FROM pragma_table_info($1)",
                    vec![(*table).into()],
                )
                .await
            }
        };
        let cols = rows
            .iter()
            .map(|r| {
                let name: String = r.try_get("", "name").unwrap();
                let optional = r
                    .try_get::<bool>("", "optional")
                    .or_else(|_| r.try_get::<i32>("", "optional").map(|v| v != 0))
                    .unwrap();
                (name, optional)
            })
            .collect();
        out.insert(table.to_string(), cols);
    }
    out
}

async fn previous_release_beside_this_one(url: &str) {
    // The previous release made the database and used it.
    let old = SqlMetadataStore::connect_at_version(url, PREVIOUS)
        .await
        .unwrap();
    let before = columns(&old).await;
    assert!(before.values().all(|c| !c.is_empty()), "{before:?}");
    let first = previous_release_pushes(&old, "a").await;

    // This release starts on the same database and migrates it.
    let new = SqlMetadataStore::connect(url).await.unwrap();
    let applied = new.applied_migrations().await.unwrap();
    assert_eq!(
        applied.last(),
        Some(&SqlMetadataStore::schema_version()),
        "{applied:?}"
    );
    assert!(applied.starts_with(&[1, 2]), "{applied:?}");

    // The tables of version 2 only gained columns the previous release can leave out.
    let after = columns(new.connection()).await;
    for (table, cols) in &before {
        for (column, optional) in cols {
            assert_eq!(
                after[table].get(column),
                Some(optional),
                "{table}.{column} was dropped or changed"
            );
        }
        for (column, optional) in &after[table] {
            assert!(
                cols.contains_key(column) || *optional,
                "{table}.{column} is new and required: the previous release's inserts fail"
            );
        }
    }

    // The previous release goes on working beside this one, and each reads the other's data.
    let second = previous_release_pushes(&old, "b").await;
    for digest in [&first, &second] {
        let blob = new
            .get_blob(digest)
            .await
            .unwrap()
            .expect("the old release's blob");
        assert_eq!(blob.locations.len(), 2, "{digest}: {blob:?}");
    }
    let repo = "old/b".parse().unwrap();
    let tagged = new
        .get_manifest(&repo, &Reference::Tag("v1".parse().unwrap()))
        .await
        .unwrap();
    assert!(tagged.is_some(), "the old release's tag");
    new.create_upload("newupload", &repo, &"us".parse().unwrap())
        .await
        .unwrap();
    let rows = query(
        &old,
        "upload read",
        "SELECT id, repository, location, size, created_at, updated_at \
          FROM uploads WHERE id = $1",
        vec!["newupload".into()],
    )
    .await;
    assert_eq!(rows.len(), 1, "the old release reads this release's upload");

    // Starting this release again migrates nothing.
    let again = SqlMetadataStore::connect(url).await.unwrap();
    assert_eq!(again.applied_migrations().await.unwrap(), applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_previous_release_runs_against_the_new_schema() {
    let db = TestSqlite::new().unwrap();
    previous_release_beside_this_one(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_previous_release_runs_against_the_new_schema() {
    let db = fresh_database()
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is needed: {e}"));
    previous_release_beside_this_one(&db.url).await;
    db.drop_database().await.unwrap();
}

/// Every event at INFO or above, by target.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<(String, String)>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() <= tracing::Level::INFO {
            let mut message = String::new();
            struct Visit<'a>(&'a mut String);
            impl tracing::field::Visit for Visit<'_> {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push_str(&format!("{}={v:?} ", f.name()));
                }
            }
            event.record(&mut Visit(&mut message));
            self.0
                .lock()
                .unwrap()
                .push((meta.target().to_owned(), message));
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn postgres_notices_stay_below_info() {
    use tracing_subscriber::layer::SubscriberExt;
    let db = fresh_database()
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is needed: {e}"));
    let events = Events::default();
    let subscriber = tracing_subscriber::registry().with(events.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    // The second start runs `CREATE TABLE IF NOT EXISTS` on an existing table: PostgreSQL has a
    // notice for it.
    drop(SqlMetadataStore::connect(&db.url).await.unwrap());
    drop(SqlMetadataStore::connect(&db.url).await.unwrap());
    let seen = events.0.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|(target, _)| target.starts_with("quay_storage")),
        "the capture works: {seen:?}"
    );
    let notices: Vec<_> = seen
        .iter()
        .filter(|(target, m)| target.contains("notice") || m.contains("already exists"))
        .collect();
    assert!(
        notices.is_empty(),
        "notices logged at INFO or above: {notices:?}"
    );
    drop(_guard);
    db.drop_database().await.unwrap();
}
