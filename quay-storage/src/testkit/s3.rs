//! An S3 server for tests: the `s3s-fs` crate serving a folder over the S3 protocol on a
//! loopback port, in-process ([`S3TestServer`]) or as its own process (the `s3-test-server`
//! binary, which fault-injection tests can kill for real).
//!
//! ```
//! use quay_storage::build_location;
//! use quay_core::config::QuayConfig;
//! use quay_storage::testkit::s3::S3TestServer;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let server = S3TestServer::start(dir.path(), &["us-bucket"])?;
//! let location = server.driver_config("us-bucket", "quaydata"); // an S3Storage location
//! let engine = build_location(&"usstorage".parse()?, &location)?;
//! assert!(engine.capabilities().presign);
//!
//! // The same location in a config file.
//! let yaml = format!(
//!     "DISTRIBUTED_STORAGE_CONFIG:\n  usstorage: {}\n",
//!     server.location_yaml("us-bucket", "quaydata")
//! );
//! let config = QuayConfig::from_yaml(&yaml, None)?;
//! assert_eq!(config.locations.values().next(), Some(&location));
//! # Ok(())
//! # }
//! ```
//!
//! The server runs on its own thread and Tokio runtime, so it does not depend on the caller's
//! runtime and can be started from synchronous code. Dropping the [`S3TestServer`] stops it:
//! its port then refuses connections, as a dead storage server would.
//!
//! Two faults of `s3s-fs` 0.14.1 are corrected here: a `HEAD` or `GET` of a key that is a
//! "folder" (a prefix of other keys) answers `404 NoSuchKey` instead of `500`, and accepted
//! connections set `TCP_NODELAY`, so small objects are not held back by Nagle's algorithm.

use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use quay_core::{Error, ErrorKind, LocationId, Result, StorageEngine};
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput,
    CompleteMultipartUploadOutput, CopyObjectInput, CopyObjectOutput, CreateBucketInput,
    CreateBucketOutput, CreateMultipartUploadInput, CreateMultipartUploadOutput, DeleteBucketInput,
    DeleteBucketOutput, DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput,
    DeleteObjectsOutput, GetBucketLocationInput, GetBucketLocationOutput, GetObjectInput,
    GetObjectOutput, HeadBucketInput, HeadBucketOutput, HeadObjectInput, HeadObjectOutput,
    ListBucketsInput, ListBucketsOutput, ListObjectsInput, ListObjectsOutput, ListObjectsV2Input,
    ListObjectsV2Output, ListPartsInput, ListPartsOutput, PutObjectInput, PutObjectOutput,
    UploadPartCopyInput, UploadPartCopyOutput, UploadPartInput, UploadPartOutput,
};
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};
use tokio::sync::oneshot;

use super::storage::StorageFactory;
use quay_core::config::{DriverConfig, S3Settings, Secret};

/// The access key of servers started without one.
pub const DEFAULT_ACCESS_KEY: &str = "quay-test-access-key";
/// The secret key of servers started without one.
pub const DEFAULT_SECRET_KEY: &str = "quay-test-secret-key";

fn unavailable(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Unavailable, format!("S3 test server: {what}")).with_source(e)
}

/// How to start an [`S3TestServer`]: folder, port, key pair and buckets.
#[derive(Clone)]
pub struct S3TestServerBuilder {
    dir: PathBuf,
    port: u16,
    access_key: String,
    secret_key: String,
    buckets: Vec<String>,
}

impl fmt::Debug for S3TestServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3TestServerBuilder")
            .field("dir", &self.dir)
            .field("port", &self.port)
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

impl S3TestServerBuilder {
    /// The port to listen on, on 127.0.0.1 (default 0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The key pair requests must be signed with (default [`DEFAULT_ACCESS_KEY`],
    /// [`DEFAULT_SECRET_KEY`]).
    pub fn keys(mut self, access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        self.access_key = access_key.into();
        self.secret_key = secret_key.into();
        self
    }

    /// A bucket to create (a folder `DIR/<bucket>`) before serving.
    pub fn bucket(mut self, bucket: impl Into<String>) -> Self {
        self.buckets.push(bucket.into());
        self
    }

    /// Creates the folder and the buckets, binds the port and starts serving. When this
    /// returns, the port accepts connections.
    pub fn start(self) -> Result<S3TestServer> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| unavailable("cannot create the data folder", e))?;
        for bucket in &self.buckets {
            create_bucket_dir(&self.dir, bucket)?;
        }
        let fs = s3s_fs::FileSystem::new(&self.dir).map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("S3 test server: cannot open the data folder: {e:?}"),
            )
        })?;
        let root = self
            .dir
            .canonicalize()
            .map_err(|e| unavailable("cannot resolve the data folder", e))?;
        let mut service = s3s::service::S3ServiceBuilder::new(FolderFixes { inner: fs, root });
        service.set_auth(s3s::auth::SimpleAuth::from_single(
            self.access_key.clone(),
            self.secret_key.clone(),
        ));
        let service = service.build();

        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .map_err(|e| unavailable("cannot bind the port", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| unavailable("cannot configure the socket", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| unavailable("cannot read the bound address", e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-test-server")
            .enable_all()
            .build()
            .map_err(|e| unavailable("cannot start a runtime", e))?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("s3-test-server-{}", addr.port()))
            .spawn(move || runtime.block_on(serve(listener, service, stopped)))
            .map_err(|e| unavailable("cannot start a thread", e))?;
        Ok(S3TestServer {
            addr,
            endpoint: format!("http://{addr}"),
            dir: self.dir,
            access_key: self.access_key,
            secret_key: self.secret_key,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// Accepts connections until `stopped` fires; each is served on the runtime.
async fn serve(
    listener: TcpListener,
    service: s3s::service::S3Service,
    mut stopped: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => continue,
            },
            _ = &mut stopped => break,
        };
        // Without it a small response waits for the client's delayed ACK (~15 ms).
        let _ = socket.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

fn create_bucket_dir(dir: &Path, bucket: &str) -> Result<()> {
    // S3's rules, which s3s checks on every request.
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['.', '-'])
        && !bucket.ends_with(['.', '-']);
    if !valid {
        return Err(Error::new(
            ErrorKind::Config,
            format!("S3 test server: {bucket:?} is not a valid bucket name"),
        ));
    }
    std::fs::create_dir_all(dir.join(bucket))
        .map_err(|e| unavailable("cannot create a bucket folder", e))
}

/// A running S3 server on 127.0.0.1, serving a folder. Stopped when dropped.
pub struct S3TestServer {
    addr: SocketAddr,
    endpoint: String,
    dir: PathBuf,
    access_key: String,
    secret_key: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for S3TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3TestServer")
            .field("endpoint", &self.endpoint)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl S3TestServer {
    /// A builder for a server over the folder `dir` (created if missing; a bucket is the
    /// folder `dir/<bucket>`).
    pub fn builder(dir: impl Into<PathBuf>) -> S3TestServerBuilder {
        S3TestServerBuilder {
            dir: dir.into(),
            port: 0,
            access_key: DEFAULT_ACCESS_KEY.into(),
            secret_key: DEFAULT_SECRET_KEY.into(),
            buckets: Vec::new(),
        }
    }

    /// Starts a server over `dir` on a free port with the default keys, with `buckets`
    /// created.
    pub fn start(dir: impl Into<PathBuf>, buckets: &[&str]) -> Result<Self> {
        buckets
            .iter()
            .fold(Self::builder(dir), |b, bucket| b.bucket(*bucket))
            .start()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The folder it serves.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The access key requests are signed with.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret key requests are signed with.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Creates another bucket.
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        create_bucket_dir(&self.dir, bucket)
    }

    /// The settings of an `S3Storage` location on `bucket`, under `storage_path`.
    pub fn s3_settings(&self, bucket: &str, storage_path: &str) -> S3Settings {
        S3Settings {
            driver: "S3Storage".into(),
            bucket: bucket.into(),
            root: storage_path.into(),
            access_key: self.access_key.clone(),
            secret_key: Secret::new(self.secret_key.clone()),
            region: quay_core::config::DEFAULT_S3_REGION.into(),
            endpoint: Some(self.endpoint.clone()),
            virtual_host_style: false,
        }
    }

    /// The same location as a driver configuration, for
    /// [`build_location`](crate::build_location).
    pub fn driver_config(&self, bucket: &str, storage_path: &str) -> DriverConfig {
        DriverConfig::S3(self.s3_settings(bucket, storage_path))
    }

    /// The same location as Quay writes it in `DISTRIBUTED_STORAGE_CONFIG`, one line of YAML:
    /// `[S3Storage, {s3_bucket: ..., endpoint_url: ..., ...}]`.
    pub fn location_yaml(&self, bucket: &str, storage_path: &str) -> String {
        format!(
            "[S3Storage, {{s3_bucket: {bucket:?}, storage_path: {storage_path:?}, \
             s3_access_key: {:?}, s3_secret_key: {:?}, endpoint_url: {:?}}}]",
            self.access_key, self.secret_key, self.endpoint
        )
    }

    /// Stops the server and waits until its port is closed.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `s3s-fs` with its "folder" fault corrected; every other operation is passed through.
struct FolderFixes {
    inner: s3s_fs::FileSystem,
    root: PathBuf,
}

impl FolderFixes {
    /// Whether `bucket/key` is a folder on disk (a prefix of other keys, not an object).
    fn is_folder(&self, bucket: &str, key: &str) -> bool {
        let key = Path::new(key);
        let escapes = key
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)));
        !escapes && self.root.join(bucket).join(key).is_dir()
    }
}

/// Implements [`S3`] for [`FolderFixes`]: the two corrected operations, and the listed ones
/// passed through. (`async_trait` must see the expanded methods, so the whole impl is here.)
macro_rules! folder_fixes_impl {
    ($($op:ident($input:ty) -> $output:ty;)*) => {
        #[async_trait]
        impl S3 for FolderFixes {
            async fn head_object(
                &self,
                req: S3Request<HeadObjectInput>,
            ) -> S3Result<S3Response<HeadObjectOutput>> {
                if self.is_folder(&req.input.bucket, &req.input.key) {
                    return Err(s3_error!(NoSuchKey));
                }
                self.inner.head_object(req).await
            }

            async fn get_object(
                &self,
                req: S3Request<GetObjectInput>,
            ) -> S3Result<S3Response<GetObjectOutput>> {
                if self.is_folder(&req.input.bucket, &req.input.key) {
                    return Err(s3_error!(NoSuchKey));
                }
                self.inner.get_object(req).await
            }

            $(
                async fn $op(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    self.inner.$op(req).await
                }
            )*
        }
    };
}

folder_fixes_impl! {
    create_bucket(CreateBucketInput) -> CreateBucketOutput;
    copy_object(CopyObjectInput) -> CopyObjectOutput;
    delete_bucket(DeleteBucketInput) -> DeleteBucketOutput;
    delete_object(DeleteObjectInput) -> DeleteObjectOutput;
    delete_objects(DeleteObjectsInput) -> DeleteObjectsOutput;
    get_bucket_location(GetBucketLocationInput) -> GetBucketLocationOutput;
    head_bucket(HeadBucketInput) -> HeadBucketOutput;
    list_buckets(ListBucketsInput) -> ListBucketsOutput;
    list_objects(ListObjectsInput) -> ListObjectsOutput;
    list_objects_v2(ListObjectsV2Input) -> ListObjectsV2Output;
    put_object(PutObjectInput) -> PutObjectOutput;
    create_multipart_upload(CreateMultipartUploadInput) -> CreateMultipartUploadOutput;
    upload_part(UploadPartInput) -> UploadPartOutput;
    upload_part_copy(UploadPartCopyInput) -> UploadPartCopyOutput;
    list_parts(ListPartsInput) -> ListPartsOutput;
    complete_multipart_upload(CompleteMultipartUploadInput) -> CompleteMultipartUploadOutput;
    abort_multipart_upload(AbortMultipartUploadInput) -> AbortMultipartUploadOutput;
}

/// Fetches `url` with a plain HTTP `GET`, failing on a status other than 200.
pub async fn http_get(url: &str) -> Result<Bytes> {
    let response = reqwest::get(url)
        .await
        .map_err(|e| unavailable("cannot fetch the URL", e))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| unavailable("cannot read the body", e))?;
    if status != reqwest::StatusCode::OK {
        return Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "GET of a presigned URL answered {status}: {}",
                String::from_utf8_lossy(&body)
            ),
        ));
    }
    Ok(body)
}

/// The storage conformance suite's factory on an in-process [`S3TestServer`]: each factory
/// starts its own server over a temporary folder with one bucket, `conformance`, and builds
/// its engines through an `S3Storage` location (`build_location`), so the config path is
/// exercised too. Presigned URLs are fetched with reqwest.
pub struct S3Factory {
    server: S3TestServer,
    // Dropped after the server (fields drop in order).
    _dir: tempfile::TempDir,
}

impl fmt::Debug for S3Factory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Factory")
            .field("server", &self.server)
            .finish()
    }
}

/// The bucket of an [`S3Factory`].
pub const CONFORMANCE_BUCKET: &str = "conformance";

impl S3Factory {
    /// Starts the server.
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("quay-test-s3-")
            .tempdir()
            .map_err(|e| unavailable("cannot create a temporary folder", e))?;
        let server = S3TestServer::start(dir.path(), &[CONFORMANCE_BUCKET])?;
        Ok(S3Factory { server, _dir: dir })
    }

    /// The server.
    pub fn server(&self) -> &S3TestServer {
        &self.server
    }
}

#[async_trait]
impl StorageFactory for S3Factory {
    async fn create(&self) -> Result<Arc<dyn StorageEngine>> {
        let id: LocationId = "s3-conformance".parse()?;
        let config = self.server.driver_config(CONFORMANCE_BUCKET, "quaydata");
        crate::build_location(&id, &config)
    }

    async fn fetch(&self, url: &str) -> Result<Bytes> {
        http_get(url).await
    }
}
