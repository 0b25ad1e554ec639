//! Azure Blob Storage for tests: Azurite (npm `azurite`), run as a child process on a free
//! loopback port with its data in memory.
//!
//! Azurite is found, in order, at `$QUAY_TEST_AZURITE` (the `azurite-blob` executable), or in
//! `$QUAY_TEST_AZURITE_DIR/node_modules/.bin/` (default folder: `<temp>/quay-test-azurite-`
//! [`AZURITE_VERSION`]), where it is installed with `npm` when missing (`scripts/test.sh` does
//! the same ahead of time). Without Node.js the helpers fail with a message that says how to
//! install it: Azure tests never skip.
//!
//! [`AzuriteServer::shared`] starts one server per test process. The server is watched by a
//! small shell that stops it when this process's end of a pipe closes, so it never outlives
//! the tests, even when they are killed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use quay_core::{Error, ErrorKind, LocationId, Result, StorageEngine};

use super::storage::StorageFactory;
use quay_core::config::{AzureCredential, AzureSettings, DriverConfig, Secret};

/// The Azurite release the tests use.
pub const AZURITE_VERSION: &str = "3.37.0";
/// Names the `azurite-blob` executable to use.
pub const AZURITE_VAR: &str = "QUAY_TEST_AZURITE";
/// Names the folder Azurite is installed into.
pub const AZURITE_DIR_VAR: &str = "QUAY_TEST_AZURITE_DIR";
/// Azurite's well-known development account.
pub const ACCOUNT_NAME: &str = "devstoreaccount1";
/// Its published key (not a secret: it is in Microsoft's documentation).
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How long Azurite may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn unavailable(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unavailable, message)
}

/// The folder Azurite is (to be) installed into.
pub fn install_dir() -> PathBuf {
    match std::env::var_os(AZURITE_DIR_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("quay-test-azurite-{AZURITE_VERSION}")),
    }
}

fn installed(dir: &Path) -> Option<PathBuf> {
    let bin = dir.join("node_modules/.bin/azurite-blob");
    bin.exists().then_some(bin)
}

fn works(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `azurite-blob` executable, installed with npm into [`install_dir`] when missing.
/// Concurrent test processes may install at once: each installs into its own folder and
/// renames it into place; the first rename wins.
pub fn locate_azurite() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(AZURITE_VAR) {
        return Ok(PathBuf::from(bin));
    }
    let dir = install_dir();
    if let Some(bin) = installed(&dir) {
        return Ok(bin);
    }
    if !works("node") || !works("npm") {
        return Err(unavailable(format!(
            "Azure tests need Azurite, which needs Node.js and npm: install them (e.g. \
             `apt-get install nodejs npm`), then `npm install --prefix {} azurite@{AZURITE_VERSION}` \
             (or run ./scripts/test.sh, which does it), or set {AZURITE_VAR} to an azurite-blob \
             executable",
            dir.display()
        )));
    }
    let staging = dir.with_file_name(format!(
        "{}.partial-{}",
        dir.file_name()
            .map_or_else(|| "azurite".into(), |n| n.to_string_lossy().into_owned()),
        uuid::Uuid::new_v4().simple()
    ));
    let output = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(&staging)
        .arg(format!("azurite@{AZURITE_VERSION}"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| unavailable("cannot run npm to install Azurite").with_source(e))?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(unavailable(format!(
            "`npm install azurite@{AZURITE_VERSION}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    if std::fs::rename(&staging, &dir).is_err() {
        // Another process installed it first.
        let _ = std::fs::remove_dir_all(&staging);
    }
    installed(&dir).ok_or_else(|| {
        unavailable(format!(
            "Azurite was installed but {} has no node_modules/.bin/azurite-blob",
            dir.display()
        ))
    })
}

/// A running Azurite blob service on 127.0.0.1. Stopped when dropped (and when this process
/// ends, however it ends).
pub struct AzuriteServer {
    endpoint: String,
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
}

impl fmt::Debug for AzuriteServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzuriteServer")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl AzuriteServer {
    /// Starts Azurite (installing it first if needed) and waits until it listens.
    pub fn start() -> Result<Self> {
        let bin = locate_azurite()?;
        // Azurite writes to a log file rather than a pipe: a pipe nobody reads any more (once
        // this process has ended) would make it crash when it reports its shutdown. The file
        // is removed once Azurite listens; Azurite keeps its open handle.
        let log = std::env::temp_dir().join(format!(
            "quay-test-azurite-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        // `sh` runs Azurite and exits with it. A second shell waits for its stdin (our pipe)
        // to close, then stops Azurite: the pipe closes when we drop it or when this process
        // dies, however it dies.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(
                // A background job's stdin is /dev/null unless redirected: hence fd 3.
                r#"exec 3<&0
                "$0" "$@" >"$AZURITE_LOG" 2>&1 3<&- & pid=$!
                ( cat <&3 >/dev/null; kill "$pid" 2>/dev/null ) &
                exec 3<&-
                wait "$pid""#,
            )
            .arg(&bin)
            .args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--inMemoryPersistence",
                "--silent",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--loose",
            ])
            .env("AZURITE_LOG", &log)
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                unavailable(format!("cannot start Azurite ({})", bin.display())).with_source(e)
            })?;
        let Some(stdin) = child.stdin.take() else {
            let _ = child.kill();
            return Err(unavailable("cannot talk to the Azurite process"));
        };
        // Dropping it on failure stops the process.
        let mut server = AzuriteServer {
            endpoint: String::new(),
            watchdog: Mutex::new(Some((child, stdin))),
        };
        let outcome = server.wait_listening(&log);
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        match outcome {
            Ok(url) => {
                server.endpoint = format!("{}/{ACCOUNT_NAME}", url.trim_end_matches('/'));
                Ok(server)
            }
            Err(why) => Err(unavailable(format!(
                "Azurite ({}) {why}; it said: {}",
                bin.display(),
                output.trim()
            ))),
        }
    }

    /// Polls Azurite's log until it says where it listens; fails if it exits or takes too
    /// long.
    fn wait_listening(&self, log: &Path) -> std::result::Result<String, String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(url) = text
                .lines()
                .find_map(|line| line.split("successfully listens on ").nth(1))
            {
                return Ok(url.trim().to_owned());
            }
            let exited = match self.watchdog.lock() {
                Ok(mut guard) => guard
                    .as_mut()
                    .is_none_or(|(child, _)| !matches!(child.try_wait(), Ok(None))),
                Err(_) => true,
            };
            if exited {
                return Err("exited before it listened".into());
            }
            if Instant::now() > deadline {
                return Err(format!("did not listen within {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One server for the whole test process, started on first use. A failure to start is
    /// remembered and returned to every caller.
    pub fn shared() -> Result<&'static AzuriteServer> {
        static SHARED: OnceLock<std::result::Result<AzuriteServer, String>> = OnceLock::new();
        match SHARED.get_or_init(|| AzuriteServer::start().map_err(|e| e.to_string())) {
            Ok(server) => Ok(server),
            Err(message) => Err(unavailable(message.clone())),
        }
    }

    /// The blob endpoint of the development account, path-style:
    /// `http://127.0.0.1:<port>/devstoreaccount1`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Creates a container; one that exists already is fine.
    pub async fn create_container(&self, container: &str) -> Result<()> {
        let url = format!("{}/{container}?restype=container", self.endpoint);
        let request = http::Request::put(&url)
            .header("x-ms-version", "2021-12-02")
            .header("content-length", "0")
            .body(())
            .map_err(|e| unavailable("cannot build the request").with_source(e))?;
        let (mut parts, ()) = request.into_parts();
        let signer = reqsign_core::Signer::new(
            reqsign_core::Context::new(),
            reqsign_azure_storage::StaticCredentialProvider::new_shared_key(
                ACCOUNT_NAME,
                ACCOUNT_KEY,
            ),
            reqsign_azure_storage::RequestSigner::new(),
        );
        signer
            .sign(&mut parts, None)
            .await
            .map_err(|e| unavailable("cannot sign the request").with_source(e))?;
        let response = reqwest::Client::new()
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .send()
            .await
            .map_err(|e| unavailable("cannot reach Azurite").with_source(e))?;
        let status = response.status();
        if status.is_success() || status == reqwest::StatusCode::CONFLICT {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        Err(unavailable(format!(
            "creating container {container} answered {status}: {body}"
        )))
    }

    /// The settings of an `AzureStorage` location on `container`, under `storage_path`.
    pub fn azure_settings(&self, container: &str, storage_path: &str) -> AzureSettings {
        AzureSettings {
            container: container.into(),
            account_name: ACCOUNT_NAME.into(),
            credential: AzureCredential::AccountKey(Secret::new(ACCOUNT_KEY)),
            endpoint: self.endpoint.clone(),
            root: storage_path.into(),
        }
    }

    /// Stops the server and waits for it to exit.
    pub fn stop(self) {
        self.shutdown();
    }

    fn shutdown(&self) {
        let taken = match self.watchdog.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some((mut child, stdin)) = taken {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl Drop for AzuriteServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The container of an [`AzureFactory`].
pub const CONFORMANCE_CONTAINER: &str = "conformance";

/// The storage conformance suite's factory on the process's shared [`AzuriteServer`], in the
/// container `conformance`; engines are built through an `AzureStorage` location.
#[derive(Debug, Clone)]
pub struct AzureFactory {
    server: &'static AzuriteServer,
}

impl AzureFactory {
    /// Starts (or reuses) the shared server and creates the container.
    pub async fn start() -> Result<Self> {
        let server = AzuriteServer::shared()?;
        server.create_container(CONFORMANCE_CONTAINER).await?;
        Ok(AzureFactory { server })
    }

    /// The server.
    pub fn server(&self) -> &'static AzuriteServer {
        self.server
    }
}

#[async_trait]
impl StorageFactory for AzureFactory {
    async fn create(&self) -> Result<Arc<dyn StorageEngine>> {
        let id: LocationId = "azure-conformance".parse()?;
        let config = DriverConfig::Azure(
            self.server
                .azure_settings(CONFORMANCE_CONTAINER, "quaydata"),
        );
        crate::build_location(&id, &config)
    }
}
