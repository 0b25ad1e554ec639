//! Blob uploads: `POST` (start, monolithic, mount), `PATCH`, `PUT`, `GET` status, `DELETE`.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use quay_core::range::parse_content_range;
use quay_core::registry::UploadStatus;
use quay_core::{ByteStream, Error, ErrorKind, RepositoryName};

use super::blobs::parse_digest;
use super::{repository, Params, Reply};
use crate::error::ApiError;
use crate::AppState;

/// The request body as a stream of the engine's byte chunks.
pub(crate) fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map(|chunk| {
        chunk.map_err(|e| {
            Error::new(ErrorKind::BlobUploadInvalid, "the request body ended early").with_source(e)
        })
    }))
}

/// Whether the request declares an empty body.
fn body_is_empty(headers: &HeaderMap) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    length == Some(0) || (length.is_none() && !chunked)
}

fn upload_url(repo: &RepositoryName, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

/// The `Range` header of an upload: `0-<last byte>`, `0-0` when empty (as Docker's registry).
fn range_value(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn accepted(repo: &RepositoryName, status: &UploadStatus, code: StatusCode) -> Response {
    Reply::new(code)
        .header(header::LOCATION, upload_url(repo, &status.id))
        .header(header::RANGE, range_value(status.size))
        .named("docker-upload-uuid", &status.id)
        .empty()
}

fn created(repo: &RepositoryName, digest: &quay_core::Digest) -> Response {
    Reply::new(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{repo}/blobs/{digest}"))
        .named("docker-content-digest", digest.to_string())
        .empty()
}

pub(crate) async fn start(
    state: &AppState,
    name: &str,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let repo = repository(name)?;
    if let Some(mount) = params.get("mount") {
        let digest = parse_digest(mount)?;
        if let Some(from) = params.get("from") {
            // An invalid `from` cannot hold the blob: fall back to a new session.
            if let Ok(from) = from.parse::<RepositoryName>() {
                if state.registry.mount_blob(&repo, &from, &digest).await? {
                    return Ok(created(&repo, &digest));
                }
            }
        }
    }
    if let Some(digest) = params.get("digest") {
        let digest = parse_digest(digest)?;
        let stream: ByteStream = if body_is_empty(headers) {
            Box::pin(futures::stream::empty())
        } else {
            body_stream(body)
        };
        let digest = state.registry.put_blob(&repo, &digest, stream).await?;
        return Ok(created(&repo, &digest));
    }
    let status = state.registry.start_upload(&repo).await?;
    Ok(accepted(&repo, &status, StatusCode::ACCEPTED))
}

pub(crate) async fn patch(
    state: &AppState,
    name: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let repo = repository(name)?;
    let range = match headers.get(header::CONTENT_RANGE) {
        Some(v) => {
            let text = v.to_str().map_err(|_| {
                ApiError::new(ErrorKind::RangeInvalid, "Content-Range is not valid text")
            });
            match text.and_then(|t| parse_content_range(t).map_err(ApiError)) {
                Ok(r) => Some(r),
                Err(e) => return Ok(range_error(state, &repo, id, e).await),
            }
        }
        None => None,
    };
    match state
        .registry
        .upload_chunk(&repo, id, range, body_stream(body))
        .await
    {
        Ok(status) => Ok(accepted(&repo, &status, StatusCode::ACCEPTED)),
        Err(e) if e.kind() == ErrorKind::RangeInvalid => {
            Ok(range_error(state, &repo, id, ApiError(e)).await)
        }
        Err(e) => Err(e.into()),
    }
}

/// A 416 that tells the client where the session stands, so it can resume.
async fn range_error(state: &AppState, repo: &RepositoryName, id: &str, err: ApiError) -> Response {
    let mut resp = err.into_response();
    if let Ok(status) = state.registry.upload_status(repo, id).await {
        let h = resp.headers_mut();
        if let Ok(v) = upload_url(repo, &status.id).parse() {
            h.insert(header::LOCATION, v);
        }
        if let Ok(v) = range_value(status.size).parse() {
            h.insert(header::RANGE, v);
        }
        if let Ok(v) = status.id.parse() {
            h.insert("docker-upload-uuid", v);
        }
    }
    resp
}

pub(crate) async fn put(
    state: &AppState,
    name: &str,
    id: &str,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let repo = repository(name)?;
    let digest = params.get("digest").ok_or_else(|| {
        ApiError::new(
            ErrorKind::DigestInvalid,
            "the digest query parameter is required to finish an upload",
        )
    })?;
    let digest = parse_digest(digest)?;
    let last = if body_is_empty(headers) {
        None
    } else {
        Some(body_stream(body))
    };
    let digest = state
        .registry
        .finish_upload(&repo, id, &digest, last)
        .await?;
    Ok(created(&repo, &digest))
}

pub(crate) async fn status(state: &AppState, name: &str, id: &str) -> Result<Response, ApiError> {
    let repo = repository(name)?;
    let status = state.registry.upload_status(&repo, id).await?;
    Ok(accepted(&repo, &status, StatusCode::NO_CONTENT))
}

pub(crate) async fn cancel(state: &AppState, name: &str, id: &str) -> Result<Response, ApiError> {
    let repo = repository(name)?;
    state.registry.cancel_upload(&repo, id).await?;
    Ok(Reply::new(StatusCode::NO_CONTENT).empty())
}
