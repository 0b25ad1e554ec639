//! Engine errors as OCI error responses: one table from [`ErrorKind`] to code and status.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use quay_core::{Error, ErrorKind};
use serde_json::json;

/// The OCI error code and HTTP status of an error kind.
pub fn oci_code(kind: ErrorKind) -> (&'static str, StatusCode) {
    use ErrorKind as K;
    match kind {
        K::BlobUnknown => ("BLOB_UNKNOWN", StatusCode::NOT_FOUND),
        K::BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", StatusCode::BAD_REQUEST),
        K::BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", StatusCode::NOT_FOUND),
        K::DigestInvalid => ("DIGEST_INVALID", StatusCode::BAD_REQUEST),
        K::ManifestBlobUnknown => ("MANIFEST_BLOB_UNKNOWN", StatusCode::BAD_REQUEST),
        K::ManifestInvalid => ("MANIFEST_INVALID", StatusCode::BAD_REQUEST),
        K::ManifestUnknown => ("MANIFEST_UNKNOWN", StatusCode::NOT_FOUND),
        K::NameInvalid => ("NAME_INVALID", StatusCode::BAD_REQUEST),
        K::NameUnknown => ("NAME_UNKNOWN", StatusCode::NOT_FOUND),
        K::SizeInvalid => ("SIZE_INVALID", StatusCode::BAD_REQUEST),
        K::TooLarge => ("SIZE_INVALID", StatusCode::PAYLOAD_TOO_LARGE),
        K::TooManyRequests => ("TOOMANYREQUESTS", StatusCode::TOO_MANY_REQUESTS),
        K::RangeInvalid => ("BLOB_UPLOAD_INVALID", StatusCode::RANGE_NOT_SATISFIABLE),
        K::Unsupported => ("UNSUPPORTED", StatusCode::METHOD_NOT_ALLOWED),
        K::Unauthorized => ("UNAUTHORIZED", StatusCode::UNAUTHORIZED),
        K::Denied => ("DENIED", StatusCode::FORBIDDEN),
        K::InvalidInput => ("UNSUPPORTED", StatusCode::BAD_REQUEST),
        K::ClientTimeout => ("BLOB_UPLOAD_INVALID", StatusCode::REQUEST_TIMEOUT),
        K::NotFound => ("NOT_FOUND", StatusCode::NOT_FOUND),
        K::Conflict => ("UNAVAILABLE", StatusCode::CONFLICT),
        K::Unavailable => ("UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
        K::Timeout => ("UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
        K::Config | K::Internal => ("UNKNOWN", StatusCode::INTERNAL_SERVER_ERROR),
        _ => ("UNKNOWN", StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError(Error::new(kind, message))
    }
}

/// Builds the OCI error body `{"errors":[{"code","message","detail"}]}` with its status.
pub fn error_response(code: &str, status: StatusCode, message: &str) -> Response {
    let body = json!({"errors": [{"code": code, "message": message, "detail": null}]});
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, status) = oci_code(self.0.kind());
        let message = if status.is_server_error() {
            // Logged once here, at the edge; the client gets no internals for 500s.
            tracing::error!(error = %self.0, kind = %self.0.kind(), "request failed");
            if status == StatusCode::INTERNAL_SERVER_ERROR {
                "internal server error".to_owned()
            } else {
                self.0.message().to_owned()
            }
        } else {
            self.0.message().to_owned()
        };
        error_response(code, status, &message)
    }
}
