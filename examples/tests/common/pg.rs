//! A private PostgreSQL cluster (initdb in a temp dir, its own port), so a test may stop,
//! restart or fail it over without disturbing other tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A private PostgreSQL cluster, run as the `postgres` user (the server refuses root).
pub struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

fn pg_bin() -> PathBuf {
    let base = Path::new("/usr/lib/postgresql");
    let version = std::fs::read_dir(base)
        .ok()
        .and_then(|rd| rd.flatten().map(|e| e.path()).max())
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL server binaries not found under {}",
                base.display()
            )
        });
    version.join("bin")
}

fn as_postgres(cmd: &str, args: &[&str]) -> std::process::Output {
    let mut c = if unsafe_is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", cmd]);
        c
    } else {
        Command::new(cmd)
    };
    c.args(args).output().unwrap()
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    /// Creates and starts a cluster.
    pub fn new() -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("quay-pg-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        if unsafe_is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status();
        }
        let bin = pg_bin();
        let out = as_postgres(
            bin.join("initdb").to_str().unwrap(),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = Cluster {
            bin,
            data,
            port,
            _dir: dir,
        };
        c.start();
        c
    }

    fn ctl(&self, args: &[&str]) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.display()
        );
        let mut all = vec![
            "-D",
            self.data.to_str().unwrap(),
            "-o",
            &opts,
            "-w",
            "-t",
            "60",
        ];
        all.extend_from_slice(args);
        let out = as_postgres(self.bin.join("pg_ctl").to_str().unwrap(), &all);
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `start`.
    pub fn start(&self) {
        self.ctl(&["-l", self.data.join("log").to_str().unwrap(), "start"]);
    }

    /// `stop`.
    pub fn stop(&self) {
        self.ctl(&["-m", "fast", "stop"]);
    }

    /// A fast restart: open sessions are terminated, as in a failover.
    /// `restart`.
    pub fn restart(&self) {
        self.ctl(&[
            "-m",
            "fast",
            "-l",
            self.data.join("log").to_str().unwrap(),
            "restart",
        ]);
    }

    /// `url`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(
            self.bin.join("pg_ctl").to_str().unwrap(),
            &["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}
