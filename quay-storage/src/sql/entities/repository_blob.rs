//! `repository_blobs`: the links of blobs into repositories.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "repository_blobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub repository: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub digest: String,
    pub created_at: i64,
    /// The latest commit or mount of this blob into the repository (schema 5; `NULL`:
    /// `created_at`).
    pub linked_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
