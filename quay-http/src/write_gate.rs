//! Quay's read-only mode (`REGISTRY_STATE: readonly`) and `DISABLE_PUSHES`, per instance: the
//! requests they forbid are refused with `405 UNSUPPORTED` and a message that says why, before
//! any check or handler runs; reads (and, with pushes disabled, deletes) keep working.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::error_response;
use crate::request::{Endpoint, OciRequest};
use crate::AppState;

/// Which writes this instance accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// Everything.
    #[default]
    Normal,
    /// No push (blob uploads, mounts, manifest and tag pushes); deletes are accepted.
    NoPushes,
    /// No write of any kind.
    ReadOnly,
}

fn is_push(method: &Method, endpoint: &Endpoint) -> bool {
    matches!(
        (method, endpoint),
        (_, Endpoint::UploadStart(_) | Endpoint::Upload(..))
            | (&Method::PUT, Endpoint::Manifest(..))
    ) && method != Method::GET
        && method != Method::HEAD
}

/// Refuses what the instance's [`WriteMode`] forbids.
pub(crate) async fn write_gate(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let refused = match (state.write_mode, req.extensions().get::<OciRequest>()) {
        (WriteMode::Normal, _) | (_, None) => None,
        (WriteMode::ReadOnly, Some(_))
            if !matches!(*req.method(), Method::GET | Method::HEAD) =>
        {
            Some("this registry instance is in read-only mode (REGISTRY_STATE: readonly): writes are refused, pulls work")
        }
        (WriteMode::NoPushes, Some(r)) if is_push(req.method(), &r.endpoint) => {
            Some("pushes are disabled on this registry instance (DISABLE_PUSHES): pulls and deletes work")
        }
        _ => None,
    };
    match refused {
        Some(message) => error_response("UNSUPPORTED", StatusCode::METHOD_NOT_ALLOWED, message),
        None => next.run(req).await,
    }
}
