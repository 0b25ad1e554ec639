//! Replication events and webhook deliveries in the `webhook_deliveries` table (migration 8).
//!
//! Recording an event inserts one row per webhook with `ON CONFLICT DO NOTHING` on the unique
//! (event key, webhook): whoever inserts first owns the event, so two instances noticing the
//! same image at once deliver it once. Claims are one `UPDATE … RETURNING` whose outer
//! condition is re-checked on PostgreSQL when a concurrent claim took the row first.

use async_trait::async_trait;
use quay_core::events::{Delivery, DeliveryState, EventStore, NewEvent, IMAGE_REPLICATED};
use quay_core::metadata::TimestampMs;
use quay_core::{Digest, RepositoryName, Result};
use sea_orm::{ConnectionTrait, QueryResult, TransactionTrait};

use super::convert::{digest, repository};
use super::error::db_error;
use super::replication::stmt;
use super::SqlMetadataStore;

/// Longest stored error text.
const MAX_ERROR_LEN: usize = 500;

fn delivery(row: &QueryResult, op: &'static str) -> Result<Delivery> {
    let get = |c: &str| row.try_get::<String>("", c).map_err(|e| db_error(op, e));
    let attempts: i32 = row.try_get("", "attempts").map_err(|e| db_error(op, e))?;
    Ok(Delivery {
        id: row.try_get("", "id").map_err(|e| db_error(op, e))?,
        webhook: get("webhook")?,
        key: get("event_key")?,
        kind: get("kind")?,
        payload: get("payload")?,
        attempts: u32::try_from(attempts).unwrap_or(0),
    })
}

#[async_trait]
impl EventStore for SqlMetadataStore {
    async fn unannounced_images(
        &self,
        since: TimestampMs,
        after: Option<&(RepositoryName, Digest)>,
        limit: u64,
    ) -> Result<Vec<(RepositoryName, Digest)>> {
        let op = "unannounced_images";
        let (after_repo, after_digest) = match after {
            Some((r, d)) => (r.to_string(), d.to_string()),
            None => (String::new(), String::new()),
        };
        let rows = self
            .db
            .query_all(stmt(
                self.backend(),
                "SELECT DISTINCT m.repository AS repository, m.digest AS digest \
                 FROM manifests m JOIN tags t \
                   ON t.repository = m.repository AND t.manifest_digest = m.digest \
                 WHERE COALESCE(m.pushed_at, m.created_at) >= $1 \
                   AND (m.repository > $2 OR (m.repository = $2 AND m.digest > $3)) \
                   AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
                     WHERE d.kind = $4 AND d.repository = m.repository AND d.digest = m.digest) \
                 ORDER BY m.repository, m.digest LIMIT $5",
                vec![
                    since.into(),
                    after_repo.into(),
                    after_digest.into(),
                    IMAGE_REPLICATED.into(),
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        rows.iter()
            .map(|row| {
                let r: String = row.try_get("", "repository").map_err(|e| db_error(op, e))?;
                let d: String = row.try_get("", "digest").map_err(|e| db_error(op, e))?;
                Ok((repository(&r)?, digest("manifest digest", &d)?))
            })
            .collect()
    }

    async fn record_event(&self, event: &NewEvent, webhooks: &[String]) -> Result<bool> {
        let op = "record_event";
        if webhooks.is_empty() {
            return Ok(false);
        }
        let now = quay_core::metadata::now_ms();
        let txn = self.db.begin().await.map_err(|e| db_error(op, e))?;
        let mut first = true;
        for webhook in webhooks {
            let inserted = txn
                .execute(stmt(
                    self.backend(),
                    "INSERT INTO webhook_deliveries (event_key, webhook, kind, repository, \
                     digest, payload, created_at, attempts, next_attempt_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $7) \
                     ON CONFLICT (event_key, webhook) DO NOTHING",
                    vec![
                        event.key.clone().into(),
                        webhook.clone().into(),
                        event.kind.clone().into(),
                        event.repository.as_ref().map(|r| r.to_string()).into(),
                        event.digest.as_ref().map(|d| d.to_string()).into(),
                        event.payload.clone().into(),
                        now.into(),
                    ],
                ))
                .await
                .map_err(|e| db_error(op, e))?
                .rows_affected();
            if first && inserted == 0 {
                // Recorded before, by this or another instance: theirs.
                txn.rollback().await.map_err(|e| db_error(op, e))?;
                return Ok(false);
            }
            first = false;
        }
        txn.commit().await.map_err(|e| db_error(op, e))?;
        Ok(true)
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        now: TimestampMs,
        lease_ms: i64,
        limit: u64,
    ) -> Result<Vec<Delivery>> {
        let op = "claim_deliveries";
        let due = "delivered_at IS NULL AND next_attempt_at IS NOT NULL AND next_attempt_at <= $2 \
                   AND (lease_until IS NULL OR lease_until < $2)";
        let rows = self
            .db
            .query_all(stmt(
                self.backend(),
                &format!(
                    "UPDATE webhook_deliveries SET lease_owner = $1, lease_until = $3 \
                     WHERE id IN (SELECT id FROM webhook_deliveries WHERE {due} \
                       ORDER BY next_attempt_at, id LIMIT $4) AND {due} \
                     RETURNING id, webhook, event_key, kind, payload, attempts"
                ),
                vec![
                    owner.to_owned().into(),
                    now.into(),
                    now.saturating_add(lease_ms).into(),
                    i64::try_from(limit).unwrap_or(i64::MAX).into(),
                ],
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        let mut claimed: Vec<Delivery> = rows
            .iter()
            .map(|r| delivery(r, op))
            .collect::<Result<_>>()?;
        claimed.sort_by_key(|d| d.id);
        Ok(claimed)
    }

    async fn delivery_done(&self, id: i64, owner: &str) -> Result<()> {
        let op = "delivery_done";
        self.db
            .execute(stmt(
                self.backend(),
                "UPDATE webhook_deliveries SET delivered_at = $1, next_attempt_at = NULL, \
                 lease_owner = NULL, lease_until = NULL WHERE id = $2 AND lease_owner = $3",
                vec![
                    quay_core::metadata::now_ms().into(),
                    id.into(),
                    owner.to_owned().into(),
                ],
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        Ok(())
    }

    async fn delivery_failed(
        &self,
        id: i64,
        owner: &str,
        error: &str,
        retry_at: Option<TimestampMs>,
    ) -> Result<()> {
        let op = "delivery_failed";
        let error: String = error.chars().take(MAX_ERROR_LEN).collect();
        self.db
            .execute(stmt(
                self.backend(),
                "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $1, \
                 last_error = $2, lease_owner = NULL, lease_until = NULL \
                 WHERE id = $3 AND lease_owner = $4",
                vec![
                    retry_at.into(),
                    error.into(),
                    id.into(),
                    owner.to_owned().into(),
                ],
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        Ok(())
    }

    async fn deliveries(&self, key_prefix: &str) -> Result<Vec<DeliveryState>> {
        let op = "deliveries";
        let rows = self
            .db
            .query_all(stmt(
                self.backend(),
                "SELECT webhook, event_key, attempts, delivered_at, next_attempt_at, last_error \
                 FROM webhook_deliveries WHERE substr(event_key, 1, CAST($1 AS INTEGER)) = $2 ORDER BY id",
                vec![
                    i64::try_from(key_prefix.len()).unwrap_or(i64::MAX).into(),
                    key_prefix.to_owned().into(),
                ],
            ))
            .await
            .map_err(|e| db_error(op, e))?;
        rows.iter()
            .map(|row| {
                let get = |c: &str| row.try_get::<String>("", c).map_err(|e| db_error(op, e));
                let attempts: i32 = row.try_get("", "attempts").map_err(|e| db_error(op, e))?;
                let delivered_at: Option<i64> = row
                    .try_get("", "delivered_at")
                    .map_err(|e| db_error(op, e))?;
                let next: Option<i64> = row
                    .try_get("", "next_attempt_at")
                    .map_err(|e| db_error(op, e))?;
                Ok(DeliveryState {
                    webhook: get("webhook")?,
                    key: get("event_key")?,
                    attempts: u32::try_from(attempts).unwrap_or(0),
                    delivered_at,
                    given_up: delivered_at.is_none() && next.is_none(),
                    last_error: row
                        .try_get::<Option<String>>("", "last_error")
                        .map_err(|e| db_error(op, e))?,
                })
            })
            .collect()
    }
}
