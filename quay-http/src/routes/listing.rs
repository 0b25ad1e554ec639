//! `tags/list`, `referrers` and `_catalog`, with `n`/`last` paging and `Link` headers.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use quay_core::manifest::media_types;
use quay_core::{ErrorKind, Page};
use serde_json::json;

use super::blobs::parse_digest;
use super::{repository, Reply};
use crate::auth::{visible, Caller};
use crate::error::ApiError;
use crate::request::QueryParams;
use crate::AppState;

/// Page size when the client gives no `n`.
pub const DEFAULT_PAGE: u64 = 1000;
/// The largest page served.
pub const MAX_PAGE: u64 = 10_000;

fn page_size(params: &QueryParams) -> Result<u64, ApiError> {
    match &params.n {
        None => Ok(DEFAULT_PAGE),
        Some(n) => n.parse::<u64>().map(|n| n.min(MAX_PAGE)).map_err(|_| {
            ApiError::new(ErrorKind::InvalidInput, format!("n={n:?} is not a number"))
        }),
    }
}

fn json_reply(value: serde_json::Value, link: Option<String>) -> Response {
    let body = value.to_string();
    let mut reply = Reply::new(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len().to_string());
    if let Some(link) = link {
        reply = reply.header(header::LINK, link);
    }
    reply.body(Body::from(body))
}

fn next_link(base: &str, n: u64, page: &Page) -> Option<String> {
    match (page.more, page.items.last()) {
        (true, Some(last)) => Some(format!("<{base}?n={n}&last={last}>; rel=\"next\"")),
        _ => None,
    }
}

pub(crate) async fn tags(
    state: &AppState,
    name: &str,
    params: &QueryParams,
) -> Result<Response, ApiError> {
    let repo = repository(name)?;
    let n = page_size(params)?;
    let last = params.last.as_deref();
    let page = state.registry.list_tags(&repo, last, n).await?;
    let page = Page {
        items: page.tags,
        more: page.more,
    };
    let link = next_link(&format!("/v2/{repo}/tags/list"), n, &page);
    Ok(json_reply(
        json!({"name": repo.as_str(), "tags": page.items}),
        link,
    ))
}

/// The catalog, holding only what the caller may pull: pages of the store are read and
/// filtered until `n` visible names are found or the store has no more.
pub(crate) async fn catalog(
    state: &AppState,
    caller: Option<&Caller>,
    params: &QueryParams,
) -> Result<Response, ApiError> {
    let n = page_size(params)?;
    let mut last = params.last.clone();
    let mut page = Page {
        items: Vec::new(),
        more: false,
    };
    loop {
        let chunk = state.registry.catalog(last.as_deref(), n).await?;
        last = chunk.items.last().cloned().or(last);
        let mut taken = 0;
        for name in &chunk.items {
            taken += 1;
            if visible(state, caller, name).await? {
                page.items.push(name.clone());
                if page.items.len() as u64 == n {
                    break;
                }
            }
        }
        page.more = chunk.more || taken < chunk.items.len();
        if page.items.len() as u64 >= n || !chunk.more || n == 0 {
            break;
        }
    }
    let link = next_link("/v2/_catalog", n, &page);
    Ok(json_reply(json!({"repositories": page.items}), link))
}

pub(crate) async fn referrers(
    state: &AppState,
    name: &str,
    digest: &str,
    params: &QueryParams,
) -> Result<Response, ApiError> {
    let repo = repository(name)?;
    let digest = parse_digest(digest)?;
    let artifact_type = params.artifact_type.as_deref();
    let manifests = state
        .registry
        .referrers(&repo, &digest, artifact_type)
        .await?;
    let body = json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": manifests,
    })
    .to_string();
    let mut reply = Reply::new(StatusCode::OK)
        .header(header::CONTENT_TYPE, media_types::OCI_INDEX)
        .header(header::CONTENT_LENGTH, body.len().to_string());
    if artifact_type.is_some() {
        reply = reply.named("oci-filters-applied", "artifactType");
    }
    Ok(reply.body(Body::from(body)))
}
