//! `GET`/`HEAD /v2/<name>/replication/<reference>`: whether every blob of an image (config and
//! layers; for an index, every child manifest's) is in every default storage location, and
//! what is missing where. Ours, not the OCI spec's: the access check is a pull's, and an
//! unknown image answers as a manifest pull would (`404 MANIFEST_UNKNOWN`).
//!
//! The answer is `200` with the JSON of [`quay_core::registry::ImageStatus`], whether the image
//! is complete or not (read `complete`).

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use quay_core::{Error, ErrorKind, Reference};

use super::{repository, Reply};
use crate::error::ApiError;
use crate::AppState;

pub(crate) async fn get(
    state: &AppState,
    name: &str,
    reference: &str,
    head: bool,
) -> Result<Response, ApiError> {
    let repo = repository(name)?;
    let reference: Reference = reference.parse().map_err(|e: Error| {
        ApiError::new(
            ErrorKind::ManifestUnknown,
            format!("manifest unknown: {}", e.message()),
        )
    })?;
    let status = state.registry.image_status(&repo, &reference).await?;
    let body = serde_json::to_vec(&status)
        .map_err(|e| ApiError(Error::internal("cannot encode the image status").with_source(e)))?;
    let reply = Reply::new(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len().to_string())
        .named("docker-content-digest", status.digest.to_string());
    Ok(if head {
        reply.body(Body::empty())
    } else {
        reply.body(Body::from(body))
    })
}
