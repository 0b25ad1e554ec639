//! Request routing under `/v2/`. Repository names contain slashes, so the path is split from
//! its end: the last segments say which endpoint it is, the rest is the name.

mod blobs;
mod listing;
mod manifests;
mod uploads;

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use quay_core::{ErrorKind, RepositoryName};

use crate::error::ApiError;
use crate::AppState;

/// Which endpoint a `/v2/…` path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `/v2/<name>/tags/list`
    Tags(&'a str),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(&'a str, &'a str),
    /// `/v2/<name>/blobs/uploads/` (start)
    UploadStart(&'a str),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(&'a str, &'a str),
    /// `/v2/<name>/blobs/<digest>`
    Blob(&'a str, &'a str),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(&'a str, &'a str),
}

/// Splits the part of a path after `/v2/` into an endpoint and a (not yet validated) name.
pub fn parse_path(rest: &str) -> Option<Endpoint<'_>> {
    let strip = |suffix: &str| rest.strip_suffix(suffix).filter(|n| !n.is_empty());
    if let Some(name) = strip("/tags/list") {
        return Some(Endpoint::Tags(name));
    }
    if let Some(name) = strip("/blobs/uploads/").or_else(|| strip("/blobs/uploads")) {
        return Some(Endpoint::UploadStart(name));
    }
    let (head, last) = rest.rsplit_once('/')?;
    let (name, kind) = head.rsplit_once('/')?;
    if name.is_empty() || last.is_empty() {
        return None;
    }
    match kind {
        "manifests" => Some(Endpoint::Manifest(name, last)),
        "blobs" => Some(Endpoint::Blob(name, last)),
        "referrers" => Some(Endpoint::Referrers(name, last)),
        "uploads" => {
            let name = name.strip_suffix("/blobs").filter(|n| !n.is_empty())?;
            Some(Endpoint::Upload(name, last))
        }
        _ => None,
    }
}

pub(crate) use listing::catalog;

/// The query string as a map (the last value wins).
pub(crate) type Params = HashMap<String, String>;

/// Parses a repository name from the path.
pub(crate) fn repository(name: &str) -> Result<RepositoryName, ApiError> {
    name.parse().map_err(ApiError)
}

/// The handler of every `/v2/<name>/…` request.
pub(crate) async fn dispatch(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path();
    let rest = path.strip_prefix("/v2/").unwrap_or(path);
    let Some(endpoint) = parse_path(rest) else {
        return ApiError::new(ErrorKind::NameUnknown, "no such endpoint").into_response();
    };
    let result = match (&method, endpoint) {
        (&Method::GET | &Method::HEAD, Endpoint::Tags(name)) => {
            listing::tags(&state, name, &params).await
        }
        (&Method::GET | &Method::HEAD, Endpoint::Referrers(name, digest)) => {
            listing::referrers(&state, name, digest, &params).await
        }
        (&Method::GET | &Method::HEAD, Endpoint::Manifest(name, reference)) => {
            manifests::get(&state, name, reference, &headers, method == Method::HEAD).await
        }
        (&Method::PUT, Endpoint::Manifest(name, reference)) => {
            manifests::put(&state, name, reference, &headers, body).await
        }
        (&Method::DELETE, Endpoint::Manifest(name, reference)) => {
            manifests::delete(&state, name, reference).await
        }
        (&Method::GET | &Method::HEAD, Endpoint::Blob(name, digest)) => {
            blobs::get(&state, name, digest, &headers, method == Method::HEAD).await
        }
        (&Method::DELETE, Endpoint::Blob(name, digest)) => {
            blobs::delete(&state, name, digest).await
        }
        (&Method::POST, Endpoint::UploadStart(name)) => {
            uploads::start(&state, name, &params, &headers, body).await
        }
        (&Method::PATCH, Endpoint::Upload(name, id)) => {
            uploads::patch(&state, name, id, &headers, body).await
        }
        (&Method::PUT, Endpoint::Upload(name, id)) => {
            uploads::put(&state, name, id, &params, &headers, body).await
        }
        (&Method::GET, Endpoint::Upload(name, id)) => uploads::status(&state, name, id).await,
        (&Method::DELETE, Endpoint::Upload(name, id)) => uploads::cancel(&state, name, id).await,
        _ => Err(ApiError::new(
            ErrorKind::Unsupported,
            format!("{method} is not supported on this endpoint"),
        )),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A response builder with header helpers that never panic.
pub(crate) struct Reply {
    status: StatusCode,
    headers: HeaderMap,
}

impl Reply {
    pub(crate) fn new(status: StatusCode) -> Self {
        Reply {
            status,
            headers: HeaderMap::new(),
        }
    }

    pub(crate) fn header(mut self, name: HeaderName, value: impl AsRef<str>) -> Self {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.insert(name, v);
        }
        self
    }

    pub(crate) fn named(self, name: &'static str, value: impl AsRef<str>) -> Self {
        self.header(HeaderName::from_static(name), value)
    }

    pub(crate) fn body(self, body: Body) -> Response {
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        resp
    }

    pub(crate) fn empty(self) -> Response {
        self.header(header::CONTENT_LENGTH, "0").body(Body::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_from_the_end() {
        assert_eq!(parse_path("a/b/tags/list"), Some(Endpoint::Tags("a/b")));
        assert_eq!(
            parse_path("a/blobs/b/blobs/sha256:x"),
            Some(Endpoint::Blob("a/blobs/b", "sha256:x"))
        );
        assert_eq!(
            parse_path("a/blobs/uploads/"),
            Some(Endpoint::UploadStart("a"))
        );
        assert_eq!(
            parse_path("a/blobs/uploads"),
            Some(Endpoint::UploadStart("a"))
        );
        assert_eq!(
            parse_path("x/y/blobs/uploads/123"),
            Some(Endpoint::Upload("x/y", "123"))
        );
        assert_eq!(
            parse_path("m/manifests/latest"),
            Some(Endpoint::Manifest("m", "latest"))
        );
        assert_eq!(
            parse_path("r/referrers/sha256:1"),
            Some(Endpoint::Referrers("r", "sha256:1"))
        );
        assert_eq!(parse_path("manifests/latest"), None);
        assert_eq!(parse_path("a/uploads/1"), None);
        assert_eq!(parse_path("a/other/x"), None);
        assert_eq!(parse_path("/tags/list"), None);
    }
}
