//! `upload_parts`: the chunks of an upload session, each stored as its own object.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "upload_parts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub upload_id: String,
    /// `offset` is an SQL keyword, hence the prefix.
    #[sea_orm(primary_key, auto_increment = false)]
    pub part_offset: i64,
    pub size: i64,
    pub path: String,
    pub sha256: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
