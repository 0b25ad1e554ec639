//! [`ManifestIndex`] for [`SqlMetadataStore`].

use async_trait::async_trait;
use quay_core::metadata::{now_ms, ManifestIndex, ManifestRecord, NewManifest, Page};
use quay_core::{Digest, Reference, RepositoryName, Result, Tag};
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

use super::convert::{annotations_json, manifest_record};
use super::entities::{manifest, repository, tag};
use super::error::db_error;
use super::retry::Replay;
use super::{commit, ensure_repository, page_limit, SqlMetadataStore};

#[async_trait]
impl ManifestIndex for SqlMetadataStore {
    async fn put_manifest(
        &self,
        repository: &RepositoryName,
        manifest: &NewManifest,
    ) -> Result<()> {
        // Idempotent: the manifest insert ignores an existing row and the tag upsert writes the
        // same target again (a tag already at this target records no history).
        self.retrying("put_manifest", Replay::Idempotent, || async move {
            let op = "put_manifest";
            let record = &manifest.record;
            let err = |e: DbErr| {
                db_error(op, e)
                    .with_context("repository", repository)
                    .with_context("digest", &record.digest)
            };
            let now = now_ms();
            let row = manifest::ActiveModel {
                repository: Set(repository.to_string()),
                digest: Set(record.digest.to_string()),
                media_type: Set(record.media_type.clone()),
                content: Set(record.content.to_vec()),
                subject: Set(record.subject.as_ref().map(ToString::to_string)),
                artifact_type: Set(record.artifact_type.clone()),
                annotations: Set(annotations_json(record.annotations.as_ref())?),
                created_at: Set(now),
                pushed_at: Set(Some(now)),
                references_recorded: Set(None),
            };

            let (txn, _turn) = self.write_txn(op).await?;
            ensure_repository(&txn, repository, now, op).await?;
            // A manifest pushed again keeps its row and renews its push time (protection from
            // collection while the push finishes, e.g. the index that lists it).
            manifest::Entity::insert(row)
                .on_conflict(
                    OnConflict::columns([manifest::Column::Repository, manifest::Column::Digest])
                        .update_column(manifest::Column::PushedAt)
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await
                .map_err(err)?;
            super::gc::insert_references(
                &txn,
                repository,
                &record.digest,
                &manifest.blobs,
                &manifest.children,
                op,
            )
            .await?;
            if let Some(name) = &manifest.tag {
                super::gc::record_tag_history(
                    &txn,
                    repository,
                    name,
                    Some(&record.digest),
                    now,
                    op,
                )
                .await?;
                tag::Entity::insert(tag::ActiveModel {
                    repository: Set(repository.to_string()),
                    name: Set(name.to_string()),
                    manifest_digest: Set(record.digest.to_string()),
                    updated_at: Set(now),
                })
                .on_conflict(
                    OnConflict::columns([tag::Column::Repository, tag::Column::Name])
                        .update_columns([tag::Column::ManifestDigest, tag::Column::UpdatedAt])
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await
                .map_err(|e| err(e).with_context("tag", name))?;
            }
            commit(txn, op).await
        })
        .await
    }

    async fn get_manifest(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<Option<ManifestRecord>> {
        self.retrying("get_manifest", Replay::Read, || async move {
            let op = "get_manifest";
            let mut query = manifest::Entity::find()
                .filter(manifest::Column::Repository.eq(repository.as_str()));
            query = match reference {
                Reference::Digest(digest) => {
                    query.filter(manifest::Column::Digest.eq(digest.to_string()))
                }
                Reference::Tag(name) => {
                    let tagged = Query::select()
                        .column(tag::Column::ManifestDigest)
                        .from(tag::Entity)
                        .and_where(tag::Column::Repository.eq(repository.as_str()))
                        .and_where(tag::Column::Name.eq(name.as_str()))
                        .to_owned();
                    query.filter(manifest::Column::Digest.in_subquery(tagged))
                }
            };
            let row = query.one(&self.db).await.map_err(|e| {
                db_error(op, e)
                    .with_context("repository", repository)
                    .with_context("reference", reference)
            })?;
            row.map(manifest_record).transpose()
        })
        .await
    }

    async fn delete_manifest(&self, repository: &RepositoryName, digest: &Digest) -> Result<bool> {
        self.retrying("delete_manifest", Replay::BeforeCommit, || async move {
            let op = "delete_manifest";
            let err = |e: DbErr| {
                db_error(op, e)
                    .with_context("repository", repository)
                    .with_context("digest", digest)
            };
            let (txn, _turn) = self.write_txn(op).await?;
            tag::Entity::delete_many()
                .filter(tag::Column::Repository.eq(repository.as_str()))
                .filter(tag::Column::ManifestDigest.eq(digest.to_string()))
                .exec(&txn)
                .await
                .map_err(err)?;
            let deleted = manifest::Entity::delete_many()
                .filter(manifest::Column::Repository.eq(repository.as_str()))
                .filter(manifest::Column::Digest.eq(digest.to_string()))
                .exec(&txn)
                .await
                .map_err(err)?;
            commit(txn, op).await?;
            Ok(deleted.rows_affected > 0)
        })
        .await
    }

    async fn delete_tag(&self, repository: &RepositoryName, name: &Tag) -> Result<bool> {
        self.retrying("delete_tag", Replay::BeforeCommit, || async move {
            let op = "delete_tag";
            let (txn, _turn) = self.write_txn(op).await?;
            // The deleted tag's target goes to the history: the time machine keeps it.
            super::gc::record_tag_history(&txn, repository, name, None, now_ms(), op).await?;
            let deleted = tag::Entity::delete_many()
                .filter(tag::Column::Repository.eq(repository.as_str()))
                .filter(tag::Column::Name.eq(name.as_str()))
                .exec(&txn)
                .await
                .map_err(|e| {
                    db_error(op, e)
                        .with_context("repository", repository)
                        .with_context("tag", name)
                })?;
            commit(txn, op).await?;
            Ok(deleted.rows_affected > 0)
        })
        .await
    }

    async fn list_tags(
        &self,
        repository: &RepositoryName,
        last: Option<&str>,
        limit: u64,
    ) -> Result<Option<Page>> {
        self.retrying("list_tags", Replay::Read, || async move {
            let op = "list_tags";
            let err = |e: DbErr| db_error(op, e).with_context("repository", repository);
            let txn = self.read_txn(op).await?;
            let known = repository::Entity::find_by_id(repository.to_string())
                .one(&txn)
                .await
                .map_err(err)?
                .is_some();
            if !known {
                commit(txn, op).await?;
                return Ok(None);
            }
            let mut query = tag::Entity::find()
                .select_only()
                .column(tag::Column::Name)
                .filter(tag::Column::Repository.eq(repository.as_str()));
            if let Some(last) = last {
                query = query.filter(tag::Column::Name.gt(last));
            }
            let names: Vec<String> = query
                .order_by_asc(tag::Column::Name)
                .limit(page_limit(limit))
                .into_tuple()
                .all(&txn)
                .await
                .map_err(err)?;
            commit(txn, op).await?;
            Ok(Some(page(names, limit)))
        })
        .await
    }

    async fn referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
    ) -> Result<Vec<ManifestRecord>> {
        self.retrying("referrers", Replay::Read, || async move {
            let op = "referrers";
            let rows = manifest::Entity::find()
                .filter(manifest::Column::Repository.eq(repository.as_str()))
                .filter(manifest::Column::Subject.eq(subject.to_string()))
                .order_by_asc(manifest::Column::CreatedAt)
                .order_by_asc(manifest::Column::Digest)
                .all(&self.db)
                .await
                .map_err(|e| {
                    db_error(op, e)
                        .with_context("repository", repository)
                        .with_context("subject", subject)
                })?;
            rows.into_iter().map(manifest_record).collect()
        })
        .await
    }

    async fn catalog(&self, last: Option<&str>, limit: u64) -> Result<Page> {
        self.retrying("catalog", Replay::Read, || async move {
            let op = "catalog";
            let mut query = repository::Entity::find()
                .select_only()
                .column(repository::Column::Name);
            if let Some(last) = last {
                query = query.filter(repository::Column::Name.gt(last));
            }
            let names: Vec<String> = query
                .order_by_asc(repository::Column::Name)
                .limit(page_limit(limit))
                .into_tuple()
                .all(&self.db)
                .await
                .map_err(|e| db_error(op, e))?;
            Ok(page(names, limit))
        })
        .await
    }
}

/// A page from up to `limit + 1` sorted names.
fn page(mut names: Vec<String>, limit: u64) -> Page {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = names.len() > limit;
    names.truncate(limit);
    Page { items: names, more }
}
