//! [`UploadStore`] for [`SqlMetadataStore`].

use std::collections::HashMap;

use async_trait::async_trait;
use quay_core::metadata::{now_ms, TimestampMs, UploadPart, UploadRecord, UploadStore};
use quay_core::{Error, ErrorKind, LocationId, RepositoryName, Result};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};

use super::convert::{to_db, upload_record};
use super::entities::{upload, upload_part};
use super::error::db_error;
use super::retry::Replay;
use super::{commit, rollback, SqlMetadataStore};

fn upload_unknown(id: &str) -> Error {
    Error::not_found("upload session not found").with_context("upload", id)
}

#[async_trait]
impl UploadStore for SqlMetadataStore {
    async fn create_upload(
        &self,
        id: &str,
        repository: &RepositoryName,
        location: &LocationId,
    ) -> Result<()> {
        // A taken id is a conflict, except on a run after the first: the id is new, so the
        // row can only be this operation's own earlier run, committed with its
        // acknowledgement lost (see `sql/retry.rs`).
        let runs = std::sync::atomic::AtomicU32::new(0);
        let runs = &runs;
        self.retrying("create_upload", Replay::Idempotent, || async move {
            let replay = runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0;
            let now = now_ms();
            let inserted = upload::Entity::insert(upload::ActiveModel {
                id: Set(id.to_owned()),
                repository: Set(repository.to_string()),
                location: Set(location.to_string()),
                size: Set(0),
                created_at: Set(now),
                updated_at: Set(now),
                multipart: Set(None),
            })
            .exec_without_returning(&self.db)
            .await
            .map_err(|e| db_error("create_upload", e).with_context("upload", id));
            match inserted {
                Err(e) if replay && e.kind() == quay_core::ErrorKind::Conflict => Ok(()),
                Err(e) => Err(e),
                Ok(_) => Ok(()),
            }
        })
        .await
    }

    async fn get_upload(&self, id: &str) -> Result<UploadRecord> {
        self.retrying("get_upload", Replay::Read, || async move {
            let op = "get_upload";
            let txn = self.read_txn(op).await?;
            let row = upload::Entity::find_by_id(id.to_owned())
                .one(&txn)
                .await
                .map_err(|e| db_error(op, e).with_context("upload", id))?;
            let Some(row) = row else {
                rollback(txn, op).await?;
                return Err(upload_unknown(id));
            };
            let parts = parts_of(&txn, &[id.to_owned()], op).await?;
            commit(txn, op).await?;
            upload_record(row, parts)
        })
        .await
    }

    async fn append_upload_part(
        &self,
        id: &str,
        expected_size: u64,
        part: &UploadPart,
    ) -> Result<u64> {
        self.retrying("append_upload_part", Replay::Idempotent, || async move {
            let op = "append_upload_part";
            if part.offset != expected_size || part.size == 0 {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "an upload part must be non-empty and start at the session's size \
                     {expected_size}; got {} bytes at offset {}",
                        part.size, part.offset
                    ),
                )
                .with_context("upload", id));
            }
            let new_size = expected_size
                .checked_add(part.size)
                .ok_or_else(|| Error::new(ErrorKind::TooLarge, "upload size overflows"))?;
            let (expected, new_size_db) = (
                to_db("upload size", expected_size)?,
                to_db("upload size", new_size)?,
            );
            let err = |e: DbErr| db_error(op, e).with_context("upload", id);

            let (txn, _turn) = self.write_txn(op).await?;
            let updated = upload::Entity::update_many()
                .col_expr(upload::Column::Size, Expr::value(new_size_db))
                .col_expr(upload::Column::UpdatedAt, Expr::value(now_ms()))
                .filter(upload::Column::Id.eq(id))
                .filter(upload::Column::Size.eq(expected))
                .exec(&txn)
                .await
                .map_err(err)?;
            if updated.rows_affected == 0 {
                let row = upload::Entity::find_by_id(id.to_owned())
                    .one(&txn)
                    .await
                    .map_err(err)?;
                // This very part already recorded: an earlier run of this call committed and
                // only its acknowledgement was lost (see `sql/retry.rs`). The part's path is
                // unique to the PATCH that wrote it, so no other request can match.
                let applied = match &row {
                    Some(r) if r.size == new_size_db => {
                        upload_part::Entity::find_by_id((id.to_owned(), expected))
                            .one(&txn)
                            .await
                            .map_err(err)?
                            .is_some_and(|p| p.path == part.path)
                    }
                    _ => false,
                };
                rollback(txn, op).await?;
                if applied {
                    return Ok(new_size);
                }
                let exists = row.is_some();
                return Err(if exists {
                    Error::new(
                        ErrorKind::Conflict,
                        format!("upload session no longer holds {expected_size} bytes"),
                    )
                    .with_context("upload", id)
                } else {
                    upload_unknown(id)
                });
            }
            upload_part::Entity::insert(upload_part::ActiveModel {
                upload_id: Set(id.to_owned()),
                part_offset: Set(expected),
                size: Set(to_db("upload part size", part.size)?),
                path: Set(part.path.clone()),
                sha256: Set(part.sha256.as_ref().map(ToString::to_string)),
            })
            .exec_without_returning(&txn)
            .await
            .map_err(err)?;
            commit(txn, op).await?;
            Ok(new_size)
        })
        .await
    }

    fn keeps_multipart_state(&self) -> bool {
        true
    }

    async fn get_upload_multipart(&self, id: &str) -> Result<Option<String>> {
        let op = "get_upload_multipart";
        let row = upload::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await
            .map_err(|e| db_error(op, e).with_context("upload", id))?;
        match row {
            Some(row) => Ok(row.multipart),
            None => Err(upload_unknown(id)),
        }
    }

    async fn set_upload_multipart(
        &self,
        id: &str,
        expected_size: u64,
        new_size: u64,
        state: &str,
    ) -> Result<()> {
        let op = "set_upload_multipart";
        let (expected, new_size) = (
            to_db("upload size", expected_size)?,
            to_db("upload size", new_size)?,
        );
        let err = |e: DbErr| db_error(op, e).with_context("upload", id);
        let updated = upload::Entity::update_many()
            .col_expr(upload::Column::Size, Expr::value(new_size))
            .col_expr(upload::Column::Multipart, Expr::value(state.to_owned()))
            .col_expr(upload::Column::UpdatedAt, Expr::value(now_ms()))
            .filter(upload::Column::Id.eq(id))
            .filter(upload::Column::Size.eq(expected))
            .exec(&self.db)
            .await
            .map_err(err)?;
        if updated.rows_affected == 1 {
            return Ok(());
        }
        let exists = upload::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await
            .map_err(err)?
            .is_some();
        Err(if exists {
            Error::new(
                ErrorKind::Conflict,
                format!("upload session no longer holds {expected_size} bytes"),
            )
            .with_context("upload", id)
        } else {
            upload_unknown(id)
        })
    }

    async fn delete_upload(&self, id: &str) -> Result<()> {
        self.retrying("delete_upload", Replay::Idempotent, || async move {
            let op = "delete_upload";
            let (txn, _turn) = self.write_txn(op).await?;
            delete_upload_rows(&txn, id, op).await?;
            commit(txn, op).await
        })
        .await
    }

    async fn count_uploads(&self, repository: &RepositoryName) -> Result<u64> {
        self.retrying("count_uploads", Replay::Read, || async move {
            upload::Entity::find()
                .filter(upload::Column::Repository.eq(repository.to_string()))
                .count(&self.db)
                .await
                .map_err(|e| db_error("count_uploads", e).with_context("repository", repository))
        })
        .await
    }

    async fn stale_uploads(&self, before: TimestampMs, limit: u64) -> Result<Vec<UploadRecord>> {
        let op = "stale_uploads";
        if limit == 0 {
            return Ok(Vec::new());
        }
        let txn = self.read_txn(op).await?;
        let rows = upload::Entity::find()
            .filter(upload::Column::UpdatedAt.lt(before))
            .order_by_asc(upload::Column::UpdatedAt)
            .order_by_asc(upload::Column::Id)
            .limit(limit.min(i64::MAX as u64))
            .all(&txn)
            .await
            .map_err(|e| db_error(op, e))?;
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let parts = parts_of(&txn, &ids, op).await?;
        commit(txn, op).await?;

        let mut by_upload: HashMap<String, Vec<upload_part::Model>> = HashMap::new();
        for part in parts {
            by_upload
                .entry(part.upload_id.clone())
                .or_default()
                .push(part);
        }
        rows.into_iter()
            .map(|row| {
                let parts = by_upload.remove(&row.id).unwrap_or_default();
                upload_record(row, parts)
            })
            .collect()
    }
}

/// The parts of the given sessions, by session id then offset.
async fn parts_of(
    db: &impl ConnectionTrait,
    ids: &[String],
    op: &'static str,
) -> Result<Vec<upload_part::Model>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    upload_part::Entity::find()
        .filter(upload_part::Column::UploadId.is_in(ids.iter().cloned()))
        .order_by_asc(upload_part::Column::UploadId)
        .order_by_asc(upload_part::Column::PartOffset)
        .all(db)
        .await
        .map_err(|e| db_error(op, e))
}

/// Deletes a session's part rows, then the session. Both writes, so it may open a SQLite
/// write transaction.
pub(crate) async fn delete_upload_rows(
    db: &impl ConnectionTrait,
    id: &str,
    op: &'static str,
) -> Result<()> {
    let err = |e: DbErr| db_error(op, e).with_context("upload", id);
    upload_part::Entity::delete_many()
        .filter(upload_part::Column::UploadId.eq(id))
        .exec(db)
        .await
        .map_err(err)?;
    upload::Entity::delete_many()
        .filter(upload::Column::Id.eq(id))
        .exec(db)
        .await
        .map_err(err)?;
    Ok(())
}
