//! Rows to records and back. Stored strings are parsed through the validated newtypes, so a
//! corrupt row becomes an `Internal` error, never a panic or an invalid value.

use std::collections::BTreeMap;

use bytes::Bytes;
use quay_core::metadata::{ManifestRecord, UploadPart, UploadRecord};
use quay_core::{Digest, LocationId, RepositoryName, Result};

use super::entities::{manifest, upload, upload_part};
use super::error::{corrupt, too_large};

/// A size or offset for a BIGINT column.
pub(crate) fn to_db(what: &'static str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| too_large(what, value))
}

/// A size or offset read from a BIGINT column.
pub(crate) fn from_db(what: &'static str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| corrupt(what, format!("negative value {value}")))
}

pub(crate) fn digest(what: &'static str, s: &str) -> Result<Digest> {
    s.parse().map_err(|e| corrupt(what, e))
}

pub(crate) fn repository(s: &str) -> Result<RepositoryName> {
    s.parse().map_err(|e| corrupt("repository name", e))
}

pub(crate) fn location(s: &str) -> Result<LocationId> {
    s.parse().map_err(|e| corrupt("location id", e))
}

pub(crate) fn upload_record(
    row: upload::Model,
    parts: Vec<upload_part::Model>,
) -> Result<UploadRecord> {
    Ok(UploadRecord {
        repository: repository(&row.repository)?,
        location: location(&row.location)?,
        size: from_db("upload size", row.size)?,
        parts: parts
            .into_iter()
            .map(upload_part_record)
            .collect::<Result<_>>()?,
        created_at: row.created_at,
        updated_at: row.updated_at,
        id: row.id,
    })
}

fn upload_part_record(row: upload_part::Model) -> Result<UploadPart> {
    Ok(UploadPart {
        offset: from_db("upload part offset", row.part_offset)?,
        size: from_db("upload part size", row.size)?,
        sha256: row
            .sha256
            .as_deref()
            .map(|s| digest("upload part digest", s))
            .transpose()?,
        path: row.path,
    })
}

pub(crate) fn manifest_record(row: manifest::Model) -> Result<ManifestRecord> {
    let annotations = match row.annotations.as_deref() {
        None => None,
        Some(json) => Some(
            serde_json::from_str::<BTreeMap<String, String>>(json)
                .map_err(|e| corrupt("manifest annotations", e))?,
        ),
    };
    Ok(ManifestRecord {
        digest: digest("manifest digest", &row.digest)?,
        media_type: row.media_type,
        content: Bytes::from(row.content),
        subject: row
            .subject
            .as_deref()
            .map(|s| digest("manifest subject", s))
            .transpose()?,
        artifact_type: row.artifact_type,
        annotations,
    })
}

/// Annotations as stored: a JSON object, or NULL.
pub(crate) fn annotations_json(
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<Option<String>> {
    annotations
        .map(|a| {
            serde_json::to_string(a).map_err(|e| {
                quay_core::Error::internal(format!("cannot encode manifest annotations: {e}"))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quay_core::ErrorKind;

    #[test]
    fn corrupt_rows_are_internal_errors() {
        let row = manifest::Model {
            repository: "a".into(),
            digest: "sha256:nothex".into(),
            media_type: "x".into(),
            content: vec![],
            subject: None,
            artifact_type: None,
            annotations: None,
            created_at: 0,
            pushed_at: None,
            references_recorded: None,
        };
        assert_eq!(
            manifest_record(row).unwrap_err().kind(),
            ErrorKind::Internal
        );
        assert_eq!(from_db("size", -1).unwrap_err().kind(), ErrorKind::Internal);
        assert_eq!(
            to_db("size", u64::MAX).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(repository("UPPER").unwrap_err().kind(), ErrorKind::Internal);
    }
}
