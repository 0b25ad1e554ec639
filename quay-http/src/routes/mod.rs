//! The handlers under `/v2/`, dispatched on the endpoint of the parsed request
//! ([`crate::request`]).

mod blobs;
mod listing;
mod manifests;
mod replication;
mod uploads;

pub(crate) use blobs::STORAGE_LOCATION_HEADER;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use quay_core::{ErrorKind, RepositoryName};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::request::{Endpoint, OciRequest};
use crate::AppState;

/// Parses a repository name from the path.
pub(crate) fn repository(name: &str) -> Result<RepositoryName, ApiError> {
    name.parse().map_err(ApiError)
}

/// The handler of every `/v2/…` request but the token endpoint. It reads the request as
/// [`crate::request::parse_once`] parsed it (and the access check may have narrowed it).
pub(crate) async fn dispatch(
    State(state): State<AppState>,
    method: Method,
    request: Option<Extension<OciRequest>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(Extension(request)) = request else {
        return ApiError::new(ErrorKind::Internal, "request was not parsed").into_response();
    };
    let q = &request.query;
    let head = method == Method::HEAD;
    let result = match (&method, &request.endpoint) {
        (&Method::GET | &Method::HEAD, Endpoint::Base) => Ok(base()),
        (&Method::GET | &Method::HEAD, Endpoint::Catalog) => {
            listing::catalog(&state, caller.as_ref().map(|c| &c.0), q).await
        }
        (&Method::GET | &Method::HEAD, Endpoint::Tags(name)) => {
            listing::tags(&state, name, q).await
        }
        (&Method::GET | &Method::HEAD, Endpoint::Referrers(name, digest)) => {
            listing::referrers(&state, name, digest, q).await
        }
        (&Method::GET | &Method::HEAD, Endpoint::Replication(name, reference)) => {
            replication::get(&state, name, reference, head).await
        }
        (&Method::GET | &Method::HEAD, Endpoint::Manifest(name, reference)) => {
            manifests::get(&state, name, reference, &headers, head).await
        }
        (&Method::PUT, Endpoint::Manifest(name, reference)) => {
            manifests::put(&state, name, reference, &headers, body).await
        }
        (&Method::DELETE, Endpoint::Manifest(name, reference)) => {
            manifests::delete(&state, name, reference).await
        }
        (&Method::GET | &Method::HEAD, Endpoint::Blob(name, digest)) => {
            blobs::get(&state, name, digest, &headers, head).await
        }
        (&Method::DELETE, Endpoint::Blob(name, digest)) => {
            blobs::delete(&state, name, digest).await
        }
        (&Method::POST, Endpoint::UploadStart(name)) => {
            uploads::start(&state, name, q, &headers, body).await
        }
        (&Method::PATCH, Endpoint::Upload(name, id)) => {
            uploads::patch(&state, name, id, &headers, body).await
        }
        (&Method::PUT, Endpoint::Upload(name, id)) => {
            uploads::put(&state, name, id, q, &headers, body).await
        }
        (&Method::GET, Endpoint::Upload(name, id)) => uploads::status(&state, name, id).await,
        (&Method::DELETE, Endpoint::Upload(name, id)) => uploads::cancel(&state, name, id).await,
        (_, Endpoint::Unknown) => Err(ApiError::new(ErrorKind::NameUnknown, "no such endpoint")),
        _ => Err(ApiError::new(
            ErrorKind::Unsupported,
            format!("{method} is not supported on this endpoint"),
        )),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The answer to a path no route serves.
pub(crate) async fn not_found() -> Response {
    ApiError::new(ErrorKind::NotFound, "no such endpoint").into_response()
}

fn base() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response()
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
