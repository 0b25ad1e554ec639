//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use quay_core::manifest::MAX_MANIFEST_SIZE;
use quay_core::registry::accepts;
use quay_core::{Error, ErrorKind, Reference};

use super::{repository, Reply};
use crate::error::ApiError;
use crate::AppState;

pub(crate) async fn get(
    state: &AppState,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    let repo = repository(name)?;
    // A reference that cannot exist is simply unknown (the spec's conformance suite expects 404).
    let reference: Reference = reference.parse().map_err(|e: Error| {
        ApiError::new(
            ErrorKind::ManifestUnknown,
            format!("manifest unknown: {}", e.message()),
        )
    })?;
    let manifest = state.registry.get_manifest(&repo, &reference).await?;
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !accepts(&accept, &manifest.media_type) {
        return Err(ApiError::new(
            ErrorKind::ManifestUnknown,
            format!(
                "manifest {reference} is a {}, which the Accept header does not allow",
                manifest.media_type
            ),
        ));
    }
    let reply = Reply::new(StatusCode::OK)
        .header(header::CONTENT_TYPE, &manifest.media_type)
        .header(header::CONTENT_LENGTH, manifest.content.len().to_string())
        .named("docker-content-digest", manifest.digest.to_string());
    Ok(if head {
        reply.body(Body::empty())
    } else {
        reply.body(Body::from(manifest.content))
    })
}

/// How much of an oversized body is read and discarded before answering 413, so that a client
/// still sending gets the answer instead of a broken pipe. Larger bodies are cut off.
const DRAIN_LIMIT: usize = 4 * MAX_MANIFEST_SIZE;

/// Reads a manifest body, keeping at most [`MAX_MANIFEST_SIZE`] bytes.
async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limits: crate::body::BodyLimits,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorKind::TooLarge,
            format!("manifest exceeds the limit of {MAX_MANIFEST_SIZE} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT as u64) {
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    let mut seen = 0usize;
    let mut stream = crate::body::paced(body, limits);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| match e.kind() {
            ErrorKind::ClientTimeout => ApiError(e),
            _ => ApiError(
                Error::new(ErrorKind::ManifestInvalid, "the request body ended early")
                    .with_source(e),
            ),
        })?;
        seen += chunk.len();
        if seen > DRAIN_LIMIT {
            return Err(too_large());
        }
        if seen <= MAX_MANIFEST_SIZE {
            buf.extend_from_slice(&chunk);
        }
    }
    if seen > MAX_MANIFEST_SIZE {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

pub(crate) async fn put(
    state: &AppState,
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let repo = repository(name)?;
    let reference: Reference = reference.parse().map_err(|e: Error| {
        let kind = if e.kind() == ErrorKind::DigestInvalid {
            ErrorKind::DigestInvalid
        } else {
            ErrorKind::ManifestInvalid
        };
        ApiError::new(kind, e.message())
    })?;
    let content = read_limited(headers, body, state.body_limits).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let put = state
        .registry
        .put_manifest(&repo, &reference, content_type, content)
        .await?;
    let mut reply = Reply::new(StatusCode::CREATED)
        .header(
            header::LOCATION,
            format!("/v2/{repo}/manifests/{}", put.digest),
        )
        .named("docker-content-digest", put.digest.to_string());
    if let Some(subject) = &put.subject {
        reply = reply.named("oci-subject", subject.to_string());
    }
    Ok(reply.empty())
}

pub(crate) async fn delete(
    state: &AppState,
    name: &str,
    reference: &str,
) -> Result<Response, ApiError> {
    let repo = repository(name)?;
    let reference: Reference = reference.parse().map_err(|e: Error| {
        ApiError::new(
            ErrorKind::ManifestUnknown,
            format!("manifest unknown: {}", e.message()),
        )
    })?;
    state.registry.delete_manifest(&repo, &reference).await?;
    Ok(Reply::new(StatusCode::ACCEPTED).empty())
}
