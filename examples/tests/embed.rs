//! The `embed` example, run: a host application's router with the registry merged in. The
//! host's own `/hello`, `/metrics` and fallback answer, the registry's health and metrics
//! answer under `/registry`, and skopeo pushes and pulls an image through the host router.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;
#[allow(dead_code)]
#[path = "../embed.rs"]
mod embed;

use std::net::SocketAddr;

use common::{build_oci_layout, http_request, layout_blob_hashes, skopeo};

/// Serves the example's host app on a free port, with its background runner, in a thread of
/// its own; returns the address.
fn start_host_app(data_dir: std::path::PathBuf) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (app, quay) = embed::host_app(&data_dir).await.unwrap();
            let _background = quay.background().spawn(std::future::pending());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .expect("the host app did not start")
}

#[test]
fn the_host_router_serves_its_routes_and_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start_host_app(dir.path().join("data"));
    let get = |path: &str| http_request(addr, "GET", path, &[], None).unwrap();

    let hello = get("/hello");
    assert_eq!(
        (hello.status, hello.text().as_str()),
        (200, "hello from the host")
    );
    let host_metrics = get("/metrics");
    assert_eq!(
        host_metrics.text(),
        "host_up 1\n",
        "the host's own /metrics"
    );
    let fallback = get("/no/such/page");
    assert_eq!(
        (fallback.status, fallback.text().as_str()),
        (404, "not a page of the host")
    );
    let base = get("/v2/");
    assert_eq!(base.status, 200);
    assert_eq!(
        base.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let unknown = get("/v2/nothing/here");
    assert_eq!(
        unknown.status, 404,
        "an unknown /v2/ path is the registry's"
    );
    assert!(
        unknown.text().contains("NAME_UNKNOWN"),
        "{}",
        unknown.text()
    );
    // The first probes run as the background runner starts.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut health = get("/registry/health/instance");
    while health.status != 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        health = get("/registry/health/instance");
    }
    assert_eq!(health.status, 200, "{}", health.text());
    assert!(health.text().contains("storage_local"), "{}", health.text());

    // skopeo through the host router.
    let work = tempfile::tempdir().unwrap();
    let image = build_oci_layout(&work.path().join("src"), "v1", 2);
    let remote = format!("docker://{addr}/host/app:v1");
    let src = format!("oci:{}:v1", image.dir.display());
    let out = skopeo(
        work.path(),
        &["copy", "--dest-tls-verify=false", &src, &remote],
    );
    assert!(
        out.status.success(),
        "push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pulled = work.path().join("pulled");
    let dest = format!("oci:{}:v1", pulled.display());
    let out = skopeo(
        work.path(),
        &["copy", "--src-tls-verify=false", &remote, &dest],
    );
    assert!(
        out.status.success(),
        "pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(layout_blob_hashes(&pulled), layout_blob_hashes(&image.dir));

    let metrics = get("/registry/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .text()
            .contains("quay_storage_operation_duration_seconds"),
        "the registry's metrics under /registry"
    );
}
