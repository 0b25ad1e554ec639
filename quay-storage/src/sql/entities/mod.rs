//! sea-orm entities, one per table. The tables themselves are created by
//! [`migrations`](super::migrations), not derived from these definitions.

pub(crate) mod blob;
pub(crate) mod blob_placement;
pub(crate) mod manifest;
pub(crate) mod repository;
pub(crate) mod repository_blob;
pub(crate) mod tag;
pub(crate) mod upload;
pub(crate) mod upload_part;
