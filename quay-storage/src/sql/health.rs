//! The database's health check: a round trip (`SELECT 1`).

use async_trait::async_trait;
use quay_core::{HealthCheck, HealthStatus};
use sea_orm::{ConnectionTrait, Statement};

use super::SqlMetadataStore;

#[async_trait]
impl HealthCheck for SqlMetadataStore {
    fn name(&self) -> &str {
        "database"
    }

    async fn check(&self) -> HealthStatus {
        let stmt = Statement::from_string(self.backend(), "SELECT 1");
        match self.db.query_one(stmt).await {
            Ok(_) => HealthStatus::Healthy,
            Err(e) => HealthStatus::Failed(super::error::db_error("health check", e).to_string()),
        }
    }
}
