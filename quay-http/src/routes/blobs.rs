//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`.

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use quay_core::registry::BlobBody;
use quay_core::{ByteRange, Digest, ErrorKind};

use super::{repository, Reply};
use crate::error::ApiError;
use crate::AppState;

/// The header naming the storage location a streamed blob came from.
pub const STORAGE_LOCATION_HEADER: &str = "x-storage-location";

pub(crate) fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    s.parse().map_err(ApiError)
}

pub(crate) async fn get(
    state: &AppState,
    name: &str,
    digest: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    let repo = repository(name)?;
    let digest = parse_digest(digest)?;
    if head {
        let blob = state.registry.stat_blob(&repo, &digest).await?;
        return Ok(Reply::new(StatusCode::OK)
            .header(header::CONTENT_LENGTH, blob.size.to_string())
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::ACCEPT_RANGES, "bytes")
            .named("docker-content-digest", digest.to_string())
            .body(Body::empty()));
    }
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) => ByteRange::parse_header(v)?,
        None => None,
    };
    let read = match state.registry.read_blob(&repo, &digest, range).await {
        Ok(read) => read,
        Err(e) if e.kind() == ErrorKind::RangeInvalid => {
            let size = state.registry.stat_blob(&repo, &digest).await?.size;
            let mut resp = ApiError(e).into_response();
            if let Ok(v) = format!("bytes */{size}").parse() {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(resp);
        }
        Err(e) => return Err(e.into()),
    };
    match read.body {
        BlobBody::Redirect { location, url } => Ok(Reply::new(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, url)
            .named("docker-content-digest", digest.to_string())
            .named(STORAGE_LOCATION_HEADER, location.as_str())
            .empty()),
        BlobBody::Stream { location, stream } => {
            let (length, reply) = match &read.range {
                Some(r) => (
                    r.end - r.start,
                    Reply::new(StatusCode::PARTIAL_CONTENT).header(
                        header::CONTENT_RANGE,
                        format!("bytes {}-{}/{}", r.start, r.end - 1, read.size),
                    ),
                ),
                None => (read.size, Reply::new(StatusCode::OK)),
            };
            let body = Body::from_stream(stream.map(|chunk| chunk.map_err(std::io::Error::other)));
            Ok(reply
                .header(header::CONTENT_LENGTH, length.to_string())
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .header(header::ACCEPT_RANGES, "bytes")
                .named("docker-content-digest", digest.to_string())
                .named(STORAGE_LOCATION_HEADER, location.as_str())
                .body(body))
        }
    }
}

pub(crate) async fn delete(
    state: &AppState,
    name: &str,
    digest: &str,
) -> Result<Response, ApiError> {
    let repo = repository(name)?;
    let digest = parse_digest(digest)?;
    state.registry.delete_blob(&repo, &digest).await?;
    Ok(Reply::new(StatusCode::ACCEPTED).empty())
}
