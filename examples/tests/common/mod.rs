//! Shared helpers of the end-to-end tests: a real `quay-server` process on a free loopback
//! port, a minimal blocking HTTP client, and an OCI image layout builder.
#![allow(dead_code)]

pub mod pg;
pub mod s3;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};

/// How long the server may take to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Media types used by the layout builder.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip'd layer media type.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker v2 schema 2 manifest media type.
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip'd layer media type.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A fresh PostgreSQL database, and the runtime to drop it with at the end
/// (`rt.block_on(db.drop_database())`). Fails, never skips, when PostgreSQL is not running.
pub fn fresh_postgres() -> (
    tokio::runtime::Runtime,
    quay_storage::testkit::postgres::TestDatabase,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let db = rt
        .block_on(quay_storage::testkit::postgres::fresh_database())
        .unwrap_or_else(|e| panic!("PostgreSQL is needed for this test: {e}"));
    (rt, db)
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A `quay-server` child process with its own data directory; killed on drop.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    /// Serves TLS: readiness is a TCP connection, not a plain `GET /v2/`.
    tls: bool,
    // Kept alive until the server is dead (field order: dropped after `Drop::drop` ran).
    _root: tempfile::TempDir,
}

impl Server {
    /// Starts the binary on `127.0.0.1:0` with a fresh data dir and waits (bounded) until
    /// `GET /v2/` answers 200. Panics with the server's log on failure.
    pub fn start() -> Server {
        Self::start_with(&[], &[])
    }

    /// Like [`Server::start`], with extra arguments (e.g. `--config FILE`) and environment.
    pub fn start_with(args: &[&str], envs: &[(&str, &str)]) -> Server {
        let root = tempfile::tempdir().expect("temp dir");
        let data_dir = root.path().join("data");
        let log_path = root.path().join("server.log");
        let log = fs::File::create(&log_path).expect("create log file");
        let log_err = log.try_clone().expect("clone log file");
        let child = Command::new(env!("CARGO_BIN_EXE_quay-server"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .expect("spawn quay-server");
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path,
            tls: args.contains(&"--tls-cert"),
            _root: root,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut addr: Option<SocketAddr> = None;
        let mut last_err = String::from("no `listening` line in the log yet");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "quay-server exited early with {status}; log:\n{}",
                    self.log()
                );
            }
            if addr.is_none() {
                addr = parse_listen_address(&self.log());
            }
            if let (Some(a), true) = (addr, self.tls) {
                if TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok() {
                    self.addr = a;
                    return;
                }
            } else if let Some(a) = addr {
                match http_request(a, "GET", "/v2/", &[], None) {
                    // 401: access control is on, and the server is up.
                    Ok(resp) if resp.status == 200 || resp.status == 401 => {
                        self.addr = a;
                        return;
                    }
                    Ok(resp) => last_err = format!("GET /v2/ answered {}", resp.status),
                    Err(e) => last_err = format!("GET /v2/ failed: {e}"),
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "quay-server not ready after {STARTUP_TIMEOUT:?} ({last_err}); log:\n{}",
            self.log()
        );
    }

    /// The server's `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self._root.path().join("data")
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, the registry host for image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A blocking request to this server; panics (with the log) on transport errors.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> HttpResponse {
        http_request(self.addr, method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; server log:\n{}", self.log()))
    }

    /// `GET /v2/<name>/manifests/<reference>` accepting OCI and Docker manifest types.
    pub fn get_manifest(&self, name: &str, reference: &str) -> HttpResponse {
        let accept = [
            OCI_MANIFEST,
            DOCKER_MANIFEST_V2,
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        ]
        .join(", ");
        self.request(
            "GET",
            &format!("/v2/{name}/manifests/{reference}"),
            &[("Accept", &accept)],
            None,
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes ANSI escape sequences (in case the log is coloured anyway).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            if chars.next() == Some('[') {
                for c2 in chars.by_ref() {
                    if ('@'..='~').contains(&c2) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Finds `address=IP:PORT` on the `listening` log line.
fn parse_listen_address(log: &str) -> Option<SocketAddr> {
    let log = strip_ansi(log);
    log.lines()
        .filter(|l| l.contains("listening"))
        .find_map(|l| {
            let rest = &l[l.find("address=")? + "address=".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
}

/// A response of [`http_request`].
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal blocking HTTP/1.0 client (the server closes the connection after the body, so
/// no chunked decoding is needed). Usable from sync and async tests alike.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    if let Some(b) = body {
        stream.write_all(b)?;
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers in response"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let body = if method.eq_ignore_ascii_case("HEAD") {
        Vec::new()
    } else {
        raw[split + 4..].to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Runs `cmd` with a bound on its duration; stdout and stderr are captured. Panics if the
/// command cannot start or does not finish in time.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {desc}: {e}"));
    let mut out = child.stdout.take().expect("stdout pipe");
    let mut err = child.stderr.take().expect("stderr pipe");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_t.join().unwrap_or_default();
            panic!(
                "{desc} did not finish within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// One gzip'd tar layer.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The uncompressed tar.
    pub tar: Vec<u8>,
    /// The gzip'd tar (the blob).
    pub gz: Vec<u8>,
    /// `sha256:` of `gz`.
    pub digest: String,
    /// `sha256:` of `tar` (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
}

/// Builds a layer of a few files of random content totalling about `size` bytes, with the
/// system `tar` and `gzip`.
pub fn make_layer(size: usize) -> Layer {
    let work = tempfile::tempdir().expect("temp dir");
    let rootfs = work.path().join("rootfs");
    let mut rng = rand::rng();
    let dir = rootfs.join(format!("layer-{:016x}", rng.random::<u64>()));
    fs::create_dir_all(&dir).expect("mkdir rootfs");
    let files = 3usize;
    for i in 0..files {
        let mut data = vec![0u8; size / files + i];
        rng.fill_bytes(&mut data);
        fs::write(dir.join(format!("file-{i}.bin")), &data).expect("write file");
    }
    fs::write(dir.join("hello.txt"), b"hello from quay-rs e2e\n").expect("write file");
    let tar_path = work.path().join("layer.tar");
    let out = run_with_timeout(
        Command::new("tar")
            .arg("--sort=name")
            .arg("--owner=0")
            .arg("--group=0")
            .arg("--numeric-owner")
            .arg("--mtime=@0")
            .arg("-cf")
            .arg(&tar_path)
            .arg("-C")
            .arg(&rootfs)
            .arg("."),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_with_timeout(
        Command::new("gzip").arg("-n").arg("-c").arg(&tar_path),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "gzip failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tar = fs::read(&tar_path).expect("read tar");
    let gz = out.stdout;
    Layer {
        digest: sha256_digest(&gz),
        diff_id: sha256_digest(&tar),
        tar,
        gz,
    }
}

/// An image config whose `rootfs.diff_ids` match `layers`.
pub fn make_config(layers: &[Layer]) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let history: Vec<serde_json::Value> = layers
        .iter()
        .enumerate()
        .map(|(i, _)| {
            serde_json::json!({
                "created": "2024-01-01T00:00:00Z",
                "created_by": format!("quay-rs e2e layer {i}"),
            })
        })
        .collect();
    let config = serde_json::json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": { "test.nonce": format!("{:016x}", rand::rng().random::<u64>()) },
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    });
    serde_json::to_vec(&config).expect("config json")
}

/// An image written as an OCI image layout.
#[derive(Clone, Debug)]
pub struct OciImage {
    /// The layout directory.
    pub dir: PathBuf,
    /// The tag (`org.opencontainers.image.ref.name`).
    pub tag: String,
    /// The layers, in manifest order.
    pub layers: Vec<Layer>,
    /// Config bytes.
    pub config: Vec<u8>,
    /// `sha256:` of `config`.
    pub config_digest: String,
    /// Manifest bytes.
    pub manifest: Vec<u8>,
    /// `sha256:` of `manifest`.
    pub manifest_digest: String,
}

impl OciImage {
    /// `[manifest, config, layers...]` digests.
    pub fn all_digests(&self) -> Vec<String> {
        let mut v = vec![self.manifest_digest.clone(), self.config_digest.clone()];
        v.extend(self.layers.iter().map(|l| l.digest.clone()));
        v
    }
}

fn write_blob(dir: &Path, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    fs::write(dir.join("blobs/sha256").join(hex), data).expect("write blob");
    digest
}

/// Writes an OCI image layout at `dir` (created if needed) holding one image of `n_layers`
/// gzip'd tar layers of random content, tagged `tag` in `index.json`. The first layer is
/// about 2.5 MiB (to exercise multi-chunk uploads), the others about 64 KiB.
pub fn build_oci_layout(dir: &Path, tag: &str, n_layers: usize) -> OciImage {
    let sizes: Vec<usize> = (0..n_layers)
        .map(|i| if i == 0 { 2_500_000 } else { 64 * 1024 })
        .collect();
    build_oci_layout_sized(dir, tag, &sizes)
}

/// Like [`build_oci_layout`], with one layer of about each of `sizes` bytes.
pub fn build_oci_layout_sized(dir: &Path, tag: &str, sizes: &[usize]) -> OciImage {
    fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir blobs");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    let layers: Vec<Layer> = sizes.iter().map(|&n| make_layer(n)).collect();
    for l in &layers {
        write_blob(dir, &l.gz);
    }
    let config = make_config(&layers);
    let config_digest = write_blob(dir, &config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": OCI_LAYER_GZIP,
            "digest": l.digest,
            "size": l.gz.len(),
        })).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).expect("manifest json");
    let manifest_digest = write_blob(dir, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("index json"),
    )
    .expect("write index.json");
    OciImage {
        dir: dir.to_path_buf(),
        tag: tag.to_string(),
        layers,
        config,
        config_digest,
        manifest,
        manifest_digest,
    }
}

/// Every file under `<layout>/blobs/sha256`: `sha256:<file name>` → `sha256:` of its content.
pub fn layout_blob_hashes(layout: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let blobs = layout.join("blobs/sha256");
    for entry in fs::read_dir(&blobs).unwrap_or_else(|e| panic!("read {}: {e}", blobs.display())) {
        let entry = entry.expect("dir entry");
        let data = fs::read(entry.path()).expect("read blob");
        out.insert(
            format!("sha256:{}", entry.file_name().to_string_lossy()),
            sha256_digest(&data),
        );
    }
    out
}

/// The manifest digest `index.json` of `layout` records for `tag` (or the only entry when
/// `tag` is `None`).
pub fn layout_manifest_digest(layout: &Path, tag: Option<&str>) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("read index.json"))
            .expect("index.json is JSON");
    let manifests = index["manifests"].as_array().expect("manifests array");
    let entry = match tag {
        Some(t) => manifests
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == t)
            .unwrap_or_else(|| panic!("no entry tagged {t} in {index}")),
        None => {
            assert_eq!(manifests.len(), 1, "index.json: {index}");
            &manifests[0]
        }
    };
    entry["digest"].as_str().expect("digest").to_string()
}

/// Calls `f` on every file below `root` (recursively).
pub fn walk_files(root: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = fs::read_dir(root) else { return };
    for entry in rd.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk_files(&path, f);
        } else {
            f(&path);
        }
    }
}

/// Runs skopeo with a permissive signature policy and its own auth file and temp dir under
/// `work`; fails (never skips) when skopeo is missing.
pub fn skopeo(work: &Path, args: &[&str]) -> Output {
    let policy = work.join("policy.json");
    if !policy.exists() {
        std::fs::write(
            &policy,
            br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
    }
    assert!(
        Path::new("/usr/bin/skopeo").exists(),
        "skopeo is not installed: run `apt-get install -y skopeo`"
    );
    let mut cmd = Command::new("/usr/bin/skopeo");
    cmd.arg("--policy")
        .arg(&policy)
        .args(args)
        .env("REGISTRY_AUTH_FILE", work.join("auth.json"))
        .env("TMPDIR", work);
    run_with_timeout(&mut cmd, Duration::from_secs(300))
}

/// GETs a blob through the registry at `addr`, following a `307` to its storage. `Ok(port)` of
/// the storage server the redirect pointed at once it returned the right bytes, `Ok(0)` when
/// the registry streamed the right bytes itself, else `Err` with what went wrong.
pub fn fetch_blob(addr: SocketAddr, repo: &str, digest: &str) -> Result<u16, String> {
    let resp = http_request(
        addr,
        "GET",
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        None,
    )
    .map_err(|e| format!("GET {digest}: {e}"))?;
    match resp.status {
        200 if sha256_digest(&resp.body) == digest => Ok(0),
        200 => Err(format!("GET {digest} streamed bytes of another digest")),
        307 => {
            let url = resp.header("Location").unwrap_or_default().to_owned();
            let rest = url
                .strip_prefix("http://")
                .ok_or_else(|| format!("redirect to {url}"))?;
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let to: SocketAddr = authority.parse().map_err(|e| format!("{url}: {e}"))?;
            let got = http_request(to, "GET", path, &[], None)
                .map_err(|e| format!("redirected to {authority}, which failed: {e}"))?;
            if got.status == 200 && sha256_digest(&got.body) == digest {
                Ok(to.port())
            } else {
                Err(format!(
                    "redirected to {authority}, which answered {} ({} bytes)",
                    got.status,
                    got.body.len()
                ))
            }
        }
        other => Err(format!("GET {digest} answered {other}: {}", resp.text())),
    }
}
