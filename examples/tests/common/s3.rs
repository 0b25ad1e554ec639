//! An `s3-test-server` process (s3s-fs on loopback) that a test can kill for real and start
//! again on the same port and folder.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::sha256_digest;

pub const BUCKET: &str = "quay";
pub const ACCESS: &str = "failover-access";
pub const SECRET: &str = "failover-secret";

/// An `s3-test-server` process.
pub struct S3Process {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its folder: objects are files under `<dir>/<bucket>/`.
    pub dir: PathBuf,
}

fn s3_binary() -> PathBuf {
    // Built with quay-storage's `testkit` feature, next to this test's own binaries.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("s3-test-server");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p quay-storage --features testkit --bin s3-test-server` \
         (scripts/test.sh does)",
        bin.display()
    );
    bin
}

impl S3Process {
    /// Starts a server on `port` (0: any) storing under `dir`.
    pub fn start(dir: &Path, port: u16) -> S3Process {
        let mut child = Command::new(s3_binary())
            .args(["--port", &port.to_string(), "--dir"])
            .arg(dir)
            .args([
                "--access-key",
                ACCESS,
                "--secret-key",
                SECRET,
                "--bucket",
                BUCKET,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from s3-test-server: {line:?}"));
        S3Process {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// Kills it with SIGKILL.
    pub fn kill(&mut self) {
        let _ = Command::new("kill")
            .arg("-9")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    /// Whether it holds a good copy of `digest` under `/quaydata`.
    pub fn holds(&self, digest: &str) -> bool {
        let hex = digest.strip_prefix("sha256:").unwrap();
        let path = self
            .dir
            .join(BUCKET)
            .join("quaydata/sha256")
            .join(&hex[..2])
            .join(hex);
        std::fs::read(path)
            .map(|b| sha256_digest(&b) == digest)
            .unwrap_or(false)
    }
}

impl Drop for S3Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `DISTRIBUTED_STORAGE_CONFIG` entry (two list items, indented for a location key) of
/// an S3-family location on the test server at `port`.
pub fn location_yaml(port: u16) -> String {
    format!(
        "    - GoogleCloudStorage\n    - access_key: {ACCESS}\n      secret_key: {SECRET}\n      \
         bucket_name: {BUCKET}\n      storage_path: /quaydata\n      endpoint_url: http://127.0.0.1:{port}\n"
    )
}
