//! `uploads`: open upload sessions; `size` is the compare-and-set guard of chunk appends and
//! of multipart state updates.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "uploads")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub repository: String,
    pub location: String,
    pub size: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The engine's saved state of a chunked upload streaming into a native multipart upload
    /// (migration 3); `None` for sessions that store each chunk as an object.
    pub multipart: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
