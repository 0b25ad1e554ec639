//! Serving a router over plain HTTP or TLS (rustls), with limits on what a client may send
//! before a handler runs: the size of the request head, and the time to send it. Each request
//! carries its client's address (`ConnectInfo<SocketAddr>`), which bounds password checks per
//! client.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use quay_core::{Error, ErrorKind, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// The default limit on a request's head (request line and headers): larger heads get `431`.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;

/// hyper's smallest read buffer.
const MIN_HEADER_BYTES: usize = 8 * 1024;

/// How long a client has to send a request head (slow-header attacks), and to finish the TLS
/// handshake.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How the listener serves.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// TLS, when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The limit on a request's head, in bytes (at least 8 KiB).
    pub max_header_bytes: usize,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("tls", &self.tls.is_some())
            .field("max_header_bytes", &self.max_header_bytes)
            .finish()
    }
}

fn tls_error(what: &str, path: &Path) -> Error {
    Error::new(ErrorKind::Config, format!("TLS: {what} {}", path.display()))
}

/// Reads a PEM certificate chain and private key into a rustls server configuration that
/// speaks HTTP/1.1.
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_error("cannot read the certificate file", cert).with_source(e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_error("cannot parse the certificate file", cert).with_source(e))?;
    if certs.is_empty() {
        return Err(tls_error("no certificate in", cert));
    }
    // The key's bytes are never part of an error message.
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|_| tls_error("cannot read a private key (PEM) from", key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Config, "TLS: no protocol version").with_source(e))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "TLS: the key {} does not fit the certificate {}",
                    key.display(),
                    cert.display()
                ),
            )
            .with_source(e)
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits (a bounded time) for the
/// requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let acceptor = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let max_header = options.max_header_bytes.max(MIN_HEADER_BYTES);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // The client's address, for the per-client bound on password checks.
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        ));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .max_header_size(max_header)
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT);
        match &acceptor {
            None => {
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls =
                        match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    let conn = builder.serve_connection(TokioIo::new(tls), service);
                    if let Err(e) = watcher.watch(conn).await {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    info!("draining requests in flight");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still running after {DRAIN_TIMEOUT:?}; exiting anyway");
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM (for binaries; a library user passes its own shutdown).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT received, shutting down"),
        _ = term.recv() => info!("SIGTERM received, shutting down"),
    }
}
