//! What an operator meets first: `quayctl` never makes up a database, `--help` says what each
//! binary is for and which environment it reads, logs carry no colour codes into a file, come
//! as JSON on request (flag or config key) with an access-log line per request, and a
//! configuration error is reported once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{http_request, run_with_timeout};

const QUAYCTL: &str = env!("CARGO_BIN_EXE_quayctl");
const SERVER: &str = env!("CARGO_BIN_EXE_quay-server");
const TIMEOUT: Duration = Duration::from_secs(60);

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    run_with_timeout(cmd.env_remove("RUST_LOG"), TIMEOUT)
}

/// Every entry under `dir`, recursively.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    common::walk_files(dir, &mut |p| out.push(p.to_path_buf()));
    out
}

#[test]
fn quayctl_never_creates_a_database() {
    let cwd = tempfile::tempdir().unwrap();
    for args in [
        &["status"][..],
        &["status", "--wait", "--timeout", "1"],
        &["backfill"],
        &["worker"],
        &["remove-location", "local", "--yes"],
    ] {
        let out = run(Command::new(QUAYCTL).args(args).current_dir(cwd.path()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(
            stderr.contains("no registry database at ./quay-data/metadata.db")
                && stderr.contains("--config")
                && stderr.contains("--data-dir"),
            "{args:?}: the error names the path and the way out: {stderr}"
        );
        assert_eq!(
            stderr.matches("no registry database").count(),
            1,
            "once: {stderr}"
        );
    }
    assert!(
        std::fs::read_dir(cwd.path()).unwrap().next().is_none(),
        "quayctl created {:?}",
        entries(cwd.path())
    );

    // A config whose DB_URI names a SQLite file that is not there, even one asking to be
    // created (`mode=rwc`, as quay-server's config may).
    let missing = cwd.path().join("elsewhere").join("metadata.db");
    let config = cwd.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "DB_URI: sqlite://{}?mode=rwc\nDISTRIBUTED_STORAGE_CONFIG:\n  local: [LocalStorage, \
             {{storage_path: {:?}}}]\n",
            missing.display(),
            cwd.path().join("storage")
        ),
    )
    .unwrap();
    let out = run(Command::new(QUAYCTL)
        .arg("--config")
        .arg(&config)
        .arg("status"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr.contains(&format!("no registry database at {}", missing.display()))
            && stderr.contains("DB_URI"),
        "{stderr}"
    );
    assert_eq!(entries(cwd.path()), [config], "nothing but the config file");
}

#[test]
fn help_says_what_each_tool_is_for_and_which_environment_it_reads() {
    for (binary, purpose) in [
        (SERVER, "Serves a geo-replicated OCI container registry"),
        (QUAYCTL, "The operator's tool of a quay-rs registry"),
    ] {
        let out = run(Command::new(binary).arg("--help"));
        assert!(out.status.success(), "{}", describe(&out));
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains(purpose), "{binary}: {help}");
        assert!(!help.contains("Reference binaries"), "{binary}: {help}");
        for variable in [
            "QUAY_DISTRIBUTED_STORAGE_PREFERENCE",
            "RUST_LOG",
            "NO_COLOR",
        ] {
            assert!(
                help.contains(variable),
                "{binary} --help lacks {variable}: {help}"
            );
        }
        assert!(help.contains("--log-format"), "{binary}: {help}");
    }
    let out = run(Command::new(QUAYCTL).args(["bench", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout);
    for option in ["--from", "--to", "--blobs", "--size", "scratch prefix"] {
        assert!(
            help.contains(option),
            "quayctl bench --help lacks {option}: {help}"
        );
    }
}

/// A `quay-server` on the embedded default, its standard error going to a file as under a
/// service manager: no terminal, and `NO_COLOR` unset.
struct LoggedServer {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoggedServer {
    fn start(args: &[&str]) -> (LoggedServer, std::net::SocketAddr) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(SERVER)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(args)
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        let mut server = LoggedServer {
            child,
            log,
            _dir: dir,
        };
        let addr = server.wait_listening();
        (server, addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of the `listening` line, in text or JSON.
    fn wait_listening(&mut self) -> std::net::SocketAddr {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("quay-server exited with {status}:\n{}", self.log());
            }
            for line in self.log().lines().filter(|l| l.contains("listening")) {
                let found = match serde_json::from_str::<serde_json::Value>(line) {
                    Ok(v) => v["fields"]["address"].as_str().map(str::to_owned),
                    Err(_) => line
                        .split("address=")
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                        .map(str::to_owned),
                };
                if let Some(addr) = found.and_then(|a| a.parse().ok()) {
                    return addr;
                }
            }
            assert!(Instant::now() < deadline, "not listening:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the log holds `n` access-log lines.
    fn wait_access_lines(&self, n: usize) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let log = self.log();
            if log.matches("quay_http::access").count() >= n {
                return log;
            }
            assert!(Instant::now() < deadline, "no access line:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn text_logs_in_a_file_carry_no_colour_codes() {
    let (server, addr) = LoggedServer::start(&[]);
    let resp = http_request(addr, "GET", "/v2/", &[], None).unwrap();
    assert_eq!(resp.status, 200);
    let log = server.wait_access_lines(1);
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    let access = log
        .lines()
        .find(|l| l.contains("quay_http::access"))
        .unwrap();
    assert!(
        access.contains(r#"method=GET path="/v2/" status=200"#),
        "{access}"
    );
}

#[test]
fn json_logs_by_flag_or_config_key() {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "QUAY_LOG_FORMAT: json\nDB_URI: sqlite://{}?mode=rwc\nDISTRIBUTED_STORAGE_CONFIG:\n  \
             local: [LocalStorage, {{storage_path: {:?}}}]\n",
            config_dir.path().join("metadata.db").display(),
            config_dir.path().join("storage")
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    for args in [vec!["--log-format", "json"], vec!["--config", &config]] {
        let (server, addr) = LoggedServer::start(&args);
        let resp = http_request(addr, "GET", "/v2/_catalog", &[], None).unwrap();
        assert_eq!(resp.status, 200);
        let log = server.wait_access_lines(1);
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {l}"))
            })
            .collect();
        let access = lines
            .iter()
            .find(|l| l["target"] == "quay_http::access")
            .unwrap();
        let f = &access["fields"];
        assert_eq!(
            (
                f["method"].as_str(),
                f["path"].as_str(),
                f["status"].as_u64()
            ),
            (Some("GET"), Some(r#""/v2/_catalog""#), Some(200)),
            "{args:?}: {access}"
        );
        assert!(f["bytes_out"].as_u64().unwrap() > 0, "{access}");
        assert!(!log.contains('\u{1b}'), "{log}");
    }
}

#[test]
fn a_configuration_error_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "DISTRIBUTED_STORAGE_CONFIG:\n  local: [LocalStorage, {storage_path: /tmp/x}]\n\
         QUAY_REPLICATION_WORKRS: 4\n",
    )
    .unwrap();
    for (binary, args) in [(SERVER, &[][..]), (QUAYCTL, &["status"][..])] {
        let out = run(Command::new(binary).arg("--config").arg(&config).args(args));
        assert!(!out.status.success(), "{}", describe(&out));
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            all.matches("did you mean QUAY_REPLICATION_WORKERS").count(),
            1,
            "{binary}: the error once:\n{all}"
        );
    }
}
