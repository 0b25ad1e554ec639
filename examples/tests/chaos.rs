//! Issue 14: the chaos soak. Two `quay-server` instances (us, eu) in redirect mode share a
//! private PostgreSQL cluster and a private Redis queue; each region has its own S3 server; a
//! standalone `quayctl worker` replicates. Image pushes and pulls run continuously through both
//! instances while faults fire one at a time: an S3 server killed (SIGKILL) and restarted, the
//! worker killed with SIGKILL and restarted, Redis restarted and flushed, PostgreSQL restarted,
//! a location drained and undrained, a replicated object deleted or corrupted behind the
//! registry's back.
//!
//! At the end, with every fault healed: replication converges (`status --wait`), a repairing
//! scrub then a plain scrub find every copy good, every acknowledged push is pullable from both
//! regions with the right digests, and after garbage collection no object in either bucket
//! lacks its database row. It prints what it did and what held.
//!
//! `QUAY_CHAOS_SECS` sets how long the load runs (default 75, as in CI);
//! `scripts/chaos-soak.sh` runs the full soak (8 minutes of load).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::pg::Cluster;
use common::s3::{location_yaml, S3Process, BUCKET};
use common::{fetch_blob, http_request, run_with_timeout, sha256_digest, Server};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};

/// A private `redis-server` on its own port, without persistence.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let port = if port == 0 {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        } else {
            port
        };
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server is needed (apt install redis-server): {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis { child, port }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child process that is killed when dropped, so that a failing test leaves nothing running.
struct Killed(Child);

impl Killed {
    fn id(&self) -> u32 {
        self.0.id()
    }

    fn wait(&mut self) {
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `quayctl worker` process.
fn start_worker(config: &str, log: &Path) -> Killed {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_quayctl"))
        .args(["--config", config, "worker"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .map(Killed)
        .unwrap()
}

fn quayctl(config: &str, args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quayctl"));
    cmd.args(["--config", config]).args(args);
    run_with_timeout(&mut cmd, timeout)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An acknowledged push: a tag, its manifest's digest and its blobs.
#[derive(Debug, Clone)]
struct Image {
    repo: String,
    tag: String,
    manifest: String,
    blobs: Vec<String>,
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    pushes_tried: AtomicU64,
    pushes_ok: AtomicU64,
    pulls_tried: AtomicU64,
    pulls_ok: AtomicU64,
    longest_ms: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn took(&self, started: Instant) {
        let ms = started.elapsed().as_millis() as u64;
        self.longest_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn error(&self, e: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 40 {
            errors.push(e);
        }
    }
}

/// Uploads `data` monolithically.
fn post_blob(addr: SocketAddr, repo: &str, data: &[u8]) -> Result<String, String> {
    let digest = sha256_digest(data);
    let resp = http_request(
        addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        &[("Content-Type", "application/octet-stream")],
        Some(data),
    )
    .map_err(|e| format!("POST blob: {e}"))?;
    if resp.status == 201 {
        Ok(digest)
    } else {
        Err(format!(
            "POST blob answered {}: {}",
            resp.status,
            resp.text()
        ))
    }
}

/// Pushes an image of one random layer through `addr`.
fn push_image(addr: SocketAddr, repo: &str, tag: &str) -> Result<Image, String> {
    let mut rng = rand::rng();
    let mut layer = vec![0u8; rng.random_range(1024..256 * 1024)];
    rng.fill_bytes(&mut layer);
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}");
    let layer_digest = post_blob(addr, repo, &layer)?;
    let config_digest = post_blob(addr, repo, config.as_bytes())?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": common::OCI_MANIFEST,
        "config": {"mediaType": common::OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": common::OCI_LAYER_GZIP, "digest": layer_digest, "size": layer.len()}],
    })
    .to_string();
    let resp = http_request(
        addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("Content-Type", common::OCI_MANIFEST)],
        Some(manifest.as_bytes()),
    )
    .map_err(|e| format!("PUT manifest: {e}"))?;
    if resp.status != 201 {
        return Err(format!(
            "PUT manifest answered {}: {}",
            resp.status,
            resp.text()
        ));
    }
    Ok(Image {
        repo: repo.to_owned(),
        tag: tag.to_owned(),
        manifest: sha256_digest(manifest.as_bytes()),
        blobs: vec![config_digest, layer_digest],
    })
}

/// Pulls `image` through `addr`: the manifest by tag, then every blob (following redirects).
fn pull_image(addr: SocketAddr, image: &Image) -> Result<(), String> {
    let resp = http_request(
        addr,
        "GET",
        &format!("/v2/{}/manifests/{}", image.repo, image.tag),
        &[("Accept", common::OCI_MANIFEST)],
        None,
    )
    .map_err(|e| format!("GET manifest: {e}"))?;
    if resp.status != 200 || sha256_digest(&resp.body) != image.manifest {
        return Err(format!(
            "GET manifest {}:{} answered {}",
            image.repo, image.tag, resp.status
        ));
    }
    for blob in &image.blobs {
        fetch_blob(addr, &image.repo, blob)?;
    }
    Ok(())
}

/// The blob objects (`sha256/…`) and every other object under the S3 server's bucket.
fn bucket_objects(s3: &S3Process) -> (BTreeSet<String>, Vec<PathBuf>) {
    let root = s3.dir.join(BUCKET).join("quaydata");
    let (mut blobs, mut other) = (BTreeSet::new(), Vec::new());
    common::walk_files(&root, &mut |p| {
        let rel = p.strip_prefix(&root).unwrap();
        let parts: Vec<_> = rel
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        match parts.as_slice() {
            [sha, _, hex] if sha == "sha256" => {
                blobs.insert(format!("sha256:{hex}"));
            }
            _ => other.push(rel.to_path_buf()),
        }
    });
    (blobs, other)
}

/// The digests the database places in `location`.
async fn placed(url: &str, location: &str) -> BTreeSet<String> {
    use quay_core::RepairIndex;
    let store = quay_storage::SqlMetadataStore::connect(url).await.unwrap();
    let location: quay_core::LocationId = location.parse().unwrap();
    let (mut all, mut after) = (BTreeSet::new(), None);
    loop {
        let page = store
            .placed_blobs(&location, after.as_ref(), 1000)
            .await
            .unwrap();
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        all.extend(page.iter().map(|(d, _)| d.to_string()));
        if page.len() < 1000 {
            break;
        }
    }
    all
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillS3,
    KillWorker,
    RestartRedis,
    RestartPostgres,
    Drain,
    DamageObject,
}

#[test]
fn chaos_soak() {
    let load_secs: u64 = std::env::var("QUAY_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(75);
    let soak_started = Instant::now();
    let cluster = Cluster::new();
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(0);
    let mut s3 = [
        S3Process::start(&dir.path().join("s3-us"), 0),
        S3Process::start(&dir.path().join("s3-eu"), 0),
    ];
    let names = ["usstorage", "eustorage"];
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "DB_URI: {db}\nDISTRIBUTED_STORAGE_CONFIG:\n  usstorage:\n{us}  eustorage:\n{eu}\
             DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: [usstorage, eustorage]\n\
             DISTRIBUTED_STORAGE_PREFERENCE: [usstorage, eustorage]\n\
             FEATURE_STORAGE_REPLICATION: true\nFEATURE_PROXY_STORAGE: false\n\
             QUAY_REPLICATION_QUEUE: redis\nQUAY_REPLICATION_REDIS: {{host: 127.0.0.1, port: {redis}}}\n\
             QUAY_STORAGE_TIMEOUT_SECS: 3\nQUAY_DATABASE_TIMEOUT_SECS: 15\n\
             QUAY_REPLICATION_LEASE_SECS: 5\nQUAY_RECONCILE_INTERVAL_SECS: 3\n\
             QUAY_GC_ORPHAN_GRACE_SECS: 5\nQUAY_GC_ORPHAN_SWEEP_INTERVAL_SECS: 0\n\
             FEATURE_GARBAGE_COLLECTION: false\n",
            db = cluster.url(),
            us = location_yaml(s3[0].port),
            eu = location_yaml(s3[1].port),
            redis = redis.port,
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap().to_owned();
    let start = |preference: &str| {
        Server::start_with(
            &[
                "--config",
                &cfg,
                "--health-interval-secs",
                "1",
                "--no-worker",
            ],
            &[("QUAY_DISTRIBUTED_STORAGE_PREFERENCE", preference)],
        )
    };
    let us = start("usstorage eustorage");
    let eu = start("eustorage usstorage");
    let addrs = [us.addr(), eu.addr()];
    let worker_log = dir.path().join("worker.log");
    let mut worker = start_worker(&cfg, &worker_log);

    let tally = Tally::default();
    let acked: Mutex<Vec<Image>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let mut faults: Vec<String> = Vec::new();
    std::thread::scope(|scope| {
        for p in 0..4 {
            let (tally, acked, stop) = (&tally, &acked, &stop);
            scope.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let addr = addrs[(p + n) % 2];
                    let (repo, tag) = (format!("chaos/app{p}"), format!("t{n}"));
                    n += 1;
                    tally.pushes_tried.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    let result = push_image(addr, &repo, &tag);
                    tally.took(started);
                    match result {
                        Ok(image) => {
                            tally.pushes_ok.fetch_add(1, Ordering::Relaxed);
                            acked.lock().unwrap().push(image);
                        }
                        Err(e) => tally.error(format!("push {repo}:{tag}: {e}")),
                    }
                }
            });
        }
        for _ in 0..2 {
            let (tally, acked, stop) = (&tally, &acked, &stop);
            scope.spawn(move || {
                let mut rng = rand::rng();
                while !stop.load(Ordering::Relaxed) {
                    let image = {
                        let acked = acked.lock().unwrap();
                        if acked.is_empty() {
                            None
                        } else {
                            Some(acked[rng.random_range(0..acked.len())].clone())
                        }
                    };
                    let Some(image) = image else {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    };
                    tally.pulls_tried.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    let result = pull_image(addrs[rng.random_range(0..2)], &image);
                    tally.took(started);
                    match result {
                        Ok(()) => {
                            tally.pulls_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tally.error(format!("pull {}:{}: {e}", image.repo, image.tag)),
                    }
                }
            });
        }

        // The faults, one at a time, every kind at least once, in random order.
        let mut rng = rand::rng();
        let kinds = [
            Fault::KillS3,
            Fault::KillWorker,
            Fault::RestartRedis,
            Fault::RestartPostgres,
            Fault::Drain,
            Fault::DamageObject,
        ];
        let mut order = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(load_secs);
        let every = Duration::from_secs((load_secs / 8).clamp(4, 30));
        std::thread::sleep(every.min(Duration::from_secs(5)));
        while Instant::now() + Duration::from_secs(4) < deadline {
            if order.is_empty() {
                order = kinds.to_vec();
                order.shuffle(&mut rng);
            }
            let fault = order.pop().unwrap();
            let at = soak_started.elapsed();
            let what = match fault {
                Fault::KillS3 => {
                    let i = rng.random_range(0..2);
                    let port = s3[i].port;
                    s3[i].kill();
                    std::thread::sleep(Duration::from_secs(3));
                    s3[i] = S3Process::start(&dir.path().join(["s3-us", "s3-eu"][i]), port);
                    format!(
                        "S3 server of {} killed (SIGKILL), restarted 3 s later",
                        names[i]
                    )
                }
                Fault::KillWorker => {
                    let _ = Command::new("kill")
                        .args(["-9", &worker.id().to_string()])
                        .status();
                    worker.wait();
                    std::thread::sleep(Duration::from_secs(1));
                    worker = start_worker(&cfg, &worker_log);
                    "worker killed (SIGKILL), restarted 1 s later".to_owned()
                }
                Fault::RestartRedis => {
                    let port = redis.port;
                    redis.kill();
                    redis = Redis::start(port);
                    let _ = Command::new("redis-cli")
                        .args(["-p", &port.to_string(), "FLUSHALL"])
                        .output();
                    "Redis restarted and flushed".to_owned()
                }
                Fault::RestartPostgres => {
                    cluster.restart();
                    "PostgreSQL restarted (fast: sessions terminated)".to_owned()
                }
                Fault::Drain => {
                    let l = names[rng.random_range(0..2)];
                    let out = quayctl(&cfg, &["location", "drain", l], Duration::from_secs(60));
                    assert!(out.status.success(), "drain: {}", text(&out));
                    std::thread::sleep(Duration::from_secs(4));
                    let out = quayctl(&cfg, &["location", "undrain", l], Duration::from_secs(60));
                    assert!(out.status.success(), "undrain: {}", text(&out));
                    format!("{l} drained for 4 s, then undrained")
                }
                Fault::DamageObject => {
                    // A blob held by both regions, so a good copy is left.
                    let candidates: Vec<String> = acked
                        .lock()
                        .unwrap()
                        .iter()
                        .flat_map(|i| i.blobs.clone())
                        .filter(|d| s3[0].holds(d) && s3[1].holds(d))
                        .collect();
                    match candidates.last() {
                        None => "no replicated blob to damage yet".to_owned(),
                        Some(digest) => {
                            let i = rng.random_range(0..2);
                            let hex = digest.strip_prefix("sha256:").unwrap();
                            let path = s3[i]
                                .dir
                                .join(BUCKET)
                                .join("quaydata/sha256")
                                .join(&hex[..2])
                                .join(hex);
                            if rng.random_bool(0.5) {
                                std::fs::remove_file(&path).unwrap();
                                format!(
                                    "copy of {digest} in {} deleted behind the registry",
                                    names[i]
                                )
                            } else {
                                let mut bytes = std::fs::read(&path).unwrap();
                                bytes[0] ^= 0xff;
                                std::fs::write(&path, &bytes).unwrap();
                                format!(
                                    "copy of {digest} in {} corrupted behind the registry",
                                    names[i]
                                )
                            }
                        }
                    }
                }
            };
            eprintln!("chaos: at {at:?}: {what}");
            faults.push(format!("at {:>6.1}s: {what}", at.as_secs_f64()));
            let pause = every.min(deadline.saturating_duration_since(Instant::now()));
            std::thread::sleep(pause);
        }
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        stop.store(true, Ordering::Relaxed);
    });
    let load_ended = Instant::now();

    // Converge: replication, then a repairing scrub, replication again, and a clean scrub.
    // What there is to copy and to read grows with the load: 240 s for the CI's 75 s of load,
    // and as much again for every further 75 s (a full soak stores several GB per location).
    let settle = 240 + load_secs.saturating_sub(75) * 240 / 75;
    let settle_arg = settle.to_string();
    let wait = |what: &str| {
        let out = quayctl(
            &cfg,
            &["status", "--wait", "--timeout", &settle_arg],
            Duration::from_secs(settle + 30),
        );
        assert!(
            out.status.success(),
            "{what}: {}\nworker log:\n{}",
            text(&out),
            std::fs::read_to_string(&worker_log).unwrap_or_default()
        );
    };
    wait("replication after the load");
    let repair = quayctl(&cfg, &["scrub", "--repair"], Duration::from_secs(settle));
    eprintln!("chaos: repairing scrub:\n{}", text(&repair));
    wait("replication after the repair");
    let scrub = quayctl(&cfg, &["scrub"], Duration::from_secs(settle));
    assert!(
        scrub.status.success(),
        "scrub still finds bad copies:\n{}",
        text(&scrub)
    );
    let converged = load_ended.elapsed();

    // Every acknowledged push, from both regions.
    let acked = acked.into_inner().unwrap();
    let mut lost = Vec::new();
    for image in &acked {
        for (addr, region) in addrs.iter().zip(["us", "eu"]) {
            if let Err(e) = pull_image(*addr, image) {
                lost.push(format!("{}:{} from {region}: {e}", image.repo, image.tag));
            }
        }
    }

    // Garbage collection, then no object without its row and no row without its object.
    std::thread::sleep(Duration::from_secs(6));
    let gc = quayctl(&cfg, &["gc"], Duration::from_secs(settle));
    assert!(gc.status.success(), "gc: {}", text(&gc));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut orphans = Vec::new();
    let mut leftovers = 0;
    for (s3, name) in s3.iter().zip(names) {
        let (objects, other) = bucket_objects(s3);
        let rows = rt.block_on(placed(&cluster.url(), name));
        orphans.extend(
            objects
                .difference(&rows)
                .map(|d| format!("{name}: object {d} has no row")),
        );
        orphans.extend(
            rows.difference(&objects)
                .map(|d| format!("{name}: row {d} has no object")),
        );
        leftovers += other.len();
    }

    let errors = tally.errors.lock().unwrap().clone();
    println!("chaos soak report");
    println!("  load: {load_secs} s through 2 instances (redirect mode), PostgreSQL, Redis queue, 2 S3 servers");
    println!(
        "  pushes: {} tried, {} acknowledged; pulls: {} tried, {} succeeded during the faults",
        tally.pushes_tried.load(Ordering::Relaxed),
        tally.pushes_ok.load(Ordering::Relaxed),
        tally.pulls_tried.load(Ordering::Relaxed),
        tally.pulls_ok.load(Ordering::Relaxed)
    );
    println!(
        "  longest request: {} ms",
        tally.longest_ms.load(Ordering::Relaxed)
    );
    println!("  faults injected: {}", faults.len());
    for f in &faults {
        println!("    {f}");
    }
    println!(
        "  failed requests during the faults (first {}):",
        errors.len()
    );
    for e in &errors {
        println!("    {e}");
    }
    println!("  converged (replication, repair, clean scrub) {converged:?} after the load stopped");
    println!(
        "  acknowledged pushes lost: {} of {} (checked from both regions)",
        lost.len(),
        acked.len()
    );
    println!(
        "  objects without a row / rows without an object after gc: {}",
        orphans.len()
    );
    println!("  other objects left under the buckets (upload parts): {leftovers}");
    println!("  total time {:?}", soak_started.elapsed());
    assert!(lost.is_empty(), "acknowledged pushes lost: {lost:#?}");
    assert!(orphans.is_empty(), "{orphans:#?}");
    assert!(acked.len() > 10, "only {} pushes acknowledged", acked.len());
    drop((worker, us, eu));
}
