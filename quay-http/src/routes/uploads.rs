//! Blob uploads: `POST` (start, monolithic, mount), `PATCH`, `PUT`, `GET` status, `DELETE`.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use quay_core::range::parse_content_range;
use quay_core::registry::UploadStatus;
use quay_core::{ByteStream, Error, ErrorKind, RepositoryName};

use super::blobs::parse_digest;
use super::{repository, Reply};
use crate::body::paced;
use crate::error::ApiError;
use crate::request::QueryParams;
use crate::AppState;

/// The request body as a stream of the engine's byte chunks, bounded in how slowly it may
/// arrive.
fn body_stream(state: &AppState, body: Body) -> ByteStream {
    paced(body, state.body_limits)
}

/// Runs an upload step in a task of its own. When a client goes away mid-request, hyper drops
/// the handler; the step itself goes on, sees its body end with an error, and removes what it
/// had written, instead of being cut off between a storage write and its cleanup.
async fn detached<T, F>(work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: std::future::Future<Output = quay_core::Result<T>> + Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(result) => result.map_err(ApiError),
        Err(e) => Err(ApiError(
            Error::internal("an upload step did not finish").with_source(e),
        )),
    }
}

/// The body's length, when `Content-Length` declares it (and no transfer coding overrides it).
fn body_length(headers: &HeaderMap) -> Option<u64> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return None;
    }
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
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
    params: &QueryParams,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let repo = repository(name)?;
    if let Some(mount) = &params.mount {
        let digest = parse_digest(mount)?;
        if let Some(from) = &params.from {
            // An invalid `from` cannot hold the blob: fall back to a new session.
            if let Ok(from) = from.parse::<RepositoryName>() {
                if state.registry.mount_blob(&repo, &from, &digest).await? {
                    return Ok(created(&repo, &digest));
                }
            }
        }
    }
    if let Some(digest) = &params.digest {
        let digest = parse_digest(digest)?;
        let (stream, size): (ByteStream, _) = if body_is_empty(headers) {
            (Box::pin(futures::stream::empty()), Some(0))
        } else {
            (body_stream(state, body), body_length(headers))
        };
        let (registry, target) = (state.registry.clone(), repo.clone());
        let digest = detached(async move {
            registry
                .put_blob_sized(&target, &digest, stream, size)
                .await
        })
        .await?;
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
    let (registry, target, session) = (state.registry.clone(), repo.clone(), id.to_owned());
    let stream = body_stream(state, body);
    let appended = detached(async move {
        registry
            .upload_chunk(&target, &session, range, stream)
            .await
    })
    .await;
    match appended.map_err(|e| e.0) {
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
    params: &QueryParams,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let repo = repository(name)?;
    let digest = params.digest.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorKind::DigestInvalid,
            "the digest query parameter is required to finish an upload",
        )
    })?;
    let digest = parse_digest(digest)?;
    let last = if body_is_empty(headers) {
        None
    } else {
        Some(body_stream(state, body))
    };
    let size = body_length(headers);
    let (registry, target, session) = (state.registry.clone(), repo.clone(), id.to_owned());
    let digest = detached(async move {
        registry
            .finish_upload_sized(&target, &session, &digest, last, size)
            .await
    })
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
