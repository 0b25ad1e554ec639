//! An S3 server over a folder, for tests that need one as a separate process (to kill it for
//! real): the `s3s-fs` crate on 127.0.0.1, as in `quay_storage::testkit::s3::S3TestServer`.
//!
//! ```text
//! s3-test-server --port 0 --dir /tmp/s3 --access-key K --secret-key S --bucket us --bucket eu
//! ```
//!
//! When it is ready it prints one line, `listening on http://127.0.0.1:<port>`, and serves
//! until it is killed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use quay_storage::testkit::s3::{S3TestServer, DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY};

/// Serves a folder over S3 on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "s3-test-server")]
struct Args {
    /// Port to listen on (0: any free port; the line printed names it).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Folder to serve; each bucket is a folder inside it.
    #[arg(long)]
    dir: PathBuf,
    /// Access key requests must be signed with.
    #[arg(long, default_value = DEFAULT_ACCESS_KEY)]
    access_key: String,
    /// Secret key requests must be signed with.
    #[arg(long, default_value = DEFAULT_SECRET_KEY)]
    secret_key: String,
    /// A bucket to create before serving (repeat for more).
    #[arg(long = "bucket")]
    buckets: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let builder = args.buckets.iter().fold(
        S3TestServer::builder(&args.dir)
            .port(args.port)
            .keys(&args.access_key, &args.secret_key),
        |b, bucket| b.bucket(bucket),
    );
    let server = match builder.start() {
        Ok(server) => server,
        Err(e) => {
            eprintln!("s3-test-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "listening on {}", server.endpoint())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    // Serves on its own thread until the process is killed.
    loop {
        std::thread::park();
    }
}
