//! The access log: one line per request, at INFO with the target `quay_http::access`, written
//! when the response body has been sent (or the client went away), so that its duration and
//! byte counts are those of the whole transfer.
//!
//! | field | what |
//! |---|---|
//! | `method` | the request method |
//! | `path` | the path, without the query string, escaped (Debug formatting) |
//! | `status` | the response status |
//! | `bytes_in`, `bytes_out` | body bytes received and sent |
//! | `duration_ms` | from the request's arrival to the end of its response body |
//! | `user` | who the access check found (escaped), `-` when anonymous or access control is off |
//! | `instance` | which instance served it ([`crate::QuayBuilder::instance`]) |
//! | `location` | the storage location that served a blob (`X-Storage-Location`), else `-` |
//! | `complete` | false when the client went away before the body was sent |
//!
//! Headers are never logged: no `Authorization` value, token or password can reach the line.
//! The library installs no subscriber; the binaries choose text or JSON.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::routes::STORAGE_LOCATION_HEADER;

/// The tracing target of access-log lines, to route or filter them
/// (`RUST_LOG=quay_http::access=off` turns them off).
pub const ACCESS_LOG_TARGET: &str = "quay_http::access";

/// What the layers inside learn about a request (who is calling), for its log line. The
/// access check writes it into the request's extensions.
#[derive(Debug, Clone, Default)]
pub(crate) struct AccessNote {
    user: Arc<Mutex<Option<String>>>,
}

impl AccessNote {
    /// Records the authenticated user.
    pub(crate) fn set_user(&self, user: &str) {
        if let Ok(mut u) = self.user.lock() {
            *u = Some(user.to_owned());
        }
    }

    fn user(&self) -> Option<String> {
        self.user.lock().ok().and_then(|u| u.clone())
    }
}

/// Which instance the lines name.
#[derive(Debug, Clone)]
pub(crate) struct AccessLog {
    pub(crate) instance: Arc<str>,
}

/// The middleware: counts the body bytes both ways and logs when the response body ends.
pub(crate) async fn layer(State(log): State<AccessLog>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let note = AccessNote::default();
    let received = Arc::new(AtomicU64::new(0));
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(note.clone());
    let body = Body::new(Counted {
        inner: body,
        count: received.clone(),
    });
    let resp = next.run(Request::from_parts(parts, body)).await;
    let location = resp
        .headers()
        .get(STORAGE_LOCATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // A HEAD answer has no body to send: it is complete as soon as its head is.
    let head = method == axum::http::Method::HEAD;
    let line = Line {
        head,
        started,
        method: method.to_string(),
        path,
        status: resp.status().as_u16(),
        note,
        received,
        instance: log.instance.clone(),
        location,
        sent: 0,
        logged: false,
    };
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, Body::new(Logged { inner: body, line }))
}

/// A request body that counts what passes.
struct Counted {
    inner: Body,
    count: Arc<AtomicU64>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One request's line, written once.
struct Line {
    head: bool,
    started: Instant,
    method: String,
    path: String,
    status: u16,
    note: AccessNote,
    received: Arc<AtomicU64>,
    instance: Arc<str>,
    location: Option<String>,
    sent: u64,
    logged: bool,
}

impl Line {
    fn write(&mut self, complete: bool) {
        if std::mem::replace(&mut self.logged, true) {
            return;
        }
        let user = self.note.user();
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            method = %self.method,
            path = ?self.path,
            status = self.status,
            bytes_in = self.received.load(Ordering::Relaxed),
            bytes_out = self.sent,
            duration_ms = self.started.elapsed().as_millis() as u64,
            user = ?user.as_deref().unwrap_or("-"),
            instance = %self.instance,
            location = ?self.location.as_deref().unwrap_or("-"),
            complete,
            "request"
        );
    }
}

/// A response body that counts what is sent and writes the line at its end, or when it is
/// dropped unfinished (the client went away).
struct Logged {
    inner: Body,
    line: Line,
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.line.sent += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.line.write(true);
                }
            }
            Poll::Ready(None) => self.line.write(true),
            Poll::Ready(Some(Err(_))) => self.line.write(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        // An empty body may never be polled; a body dropped before its end was cut off.
        let complete = self.line.head || self.inner.is_end_stream();
        self.line.write(complete);
    }
}

/// Collects a body (tests).
#[cfg(test)]
async fn collect(body: Body) -> Bytes {
    use http_body_util::BodyExt;
    body.collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counted_body_counts_every_byte() {
        let count = Arc::new(AtomicU64::new(0));
        let body = Body::new(Counted {
            inner: Body::from(vec![1u8; 1000]),
            count: count.clone(),
        });
        assert_eq!(collect(body).await.len(), 1000);
        assert_eq!(count.load(Ordering::Relaxed), 1000);
    }
}
