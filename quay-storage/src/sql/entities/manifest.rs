//! `manifests`: manifests per repository, with the exact bytes pushed.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "manifests")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub repository: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub digest: String,
    pub media_type: String,
    pub content: Vec<u8>,
    pub subject: Option<String>,
    pub artifact_type: Option<String>,
    /// Top-level annotations as a JSON object.
    pub annotations: Option<String>,
    pub created_at: i64,
    /// The latest push of this manifest (schema 5; `NULL`: `created_at`).
    pub pushed_at: Option<i64>,
    /// Set once its references are recorded in `manifest_blobs` / `manifest_children`.
    pub references_recorded: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
