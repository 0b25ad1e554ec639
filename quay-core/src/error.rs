//! The one error type of the engine.
//!
//! Every backend maps its native errors into an [`Error`] once, in its own `error.rs`; the
//! HTTP frontend maps each [`ErrorKind`] to an OCI error code and status in one table.

use std::fmt;

/// What went wrong, in terms a caller can act on.
///
/// The first group are the registry-level conditions of the OCI Distribution spec; the second
/// group are infrastructure conditions raised by storage, database and queue backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A blob is not known to the registry or to the repository.
    BlobUnknown,
    /// The upload is invalid: a chunk does not match what was declared.
    BlobUploadInvalid,
    /// The upload session is not known (never existed, finished, cancelled or expired).
    BlobUploadUnknown,
    /// A digest is malformed or does not match the content.
    DigestInvalid,
    /// A manifest references a blob or manifest the repository does not hold.
    ManifestBlobUnknown,
    /// A manifest is not valid JSON, has the wrong media type, or is otherwise malformed.
    ManifestInvalid,
    /// A manifest is not known under that tag or digest.
    ManifestUnknown,
    /// A repository name does not follow the OCI grammar.
    NameInvalid,
    /// The repository is not known.
    NameUnknown,
    /// A declared size does not match the content.
    SizeInvalid,
    /// The request or content is larger than this registry accepts.
    TooLarge,
    /// A limit on open resources (such as upload sessions) is reached; try again later.
    TooManyRequests,
    /// A requested byte range cannot be satisfied, or a chunk arrived out of order.
    RangeInvalid,
    /// The operation is not supported (by this registry or by a backend).
    Unsupported,
    /// The request lacks valid credentials.
    Unauthorized,
    /// The caller is authenticated but not allowed to do this.
    Denied,
    /// A malformed request that fits no more specific kind.
    InvalidInput,
    /// The client stopped sending its request body, or sent it slower than the registry
    /// accepts. The client's fault: never counted against a backend's health.
    ClientTimeout,
    /// An object, row or job is not found in a backend.
    NotFound,
    /// A conditional write lost a race (unique violation, compare-and-set failure).
    Conflict,
    /// A backend is unreachable or failing; trying again later may succeed.
    Unavailable,
    /// A backend did not answer in time.
    Timeout,
    /// The configuration is invalid.
    Config,
    /// A bug or an unexpected backend answer.
    Internal,
}

impl ErrorKind {
    /// A short, stable, lower-case name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BlobUnknown => "blob_unknown",
            ErrorKind::BlobUploadInvalid => "blob_upload_invalid",
            ErrorKind::BlobUploadUnknown => "blob_upload_unknown",
            ErrorKind::DigestInvalid => "digest_invalid",
            ErrorKind::ManifestBlobUnknown => "manifest_blob_unknown",
            ErrorKind::ManifestInvalid => "manifest_invalid",
            ErrorKind::ManifestUnknown => "manifest_unknown",
            ErrorKind::NameInvalid => "name_invalid",
            ErrorKind::NameUnknown => "name_unknown",
            ErrorKind::SizeInvalid => "size_invalid",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::TooManyRequests => "too_many_requests",
            ErrorKind::RangeInvalid => "range_invalid",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Denied => "denied",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::ClientTimeout => "client_timeout",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Config => "config",
            ErrorKind::Internal => "internal",
        }
    }

    /// Whether errors of this kind are temporary by default.
    fn default_temporary(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Timeout)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error with a kind, a message, a temporary flag, key-value context and an optional source.
pub struct Error {
    kind: ErrorKind,
    message: String,
    temporary: bool,
    context: Vec<(&'static str, String)>,
    source: Option<Source>,
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            temporary: kind.default_temporary(),
            context: Vec::new(),
            source: None,
        }
    }

    /// Adds a key-value pair that says where the error happened (location, path, operation).
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.context.push((key, value.to_string()));
        self
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Marks the error as temporary (retrying may succeed) or permanent.
    pub fn set_temporary(mut self, temporary: bool) -> Self {
        self.temporary = temporary;
        self
    }

    /// A copy of this error for another caller (each request of a batch that failed as a
    /// whole gets one): kind, message, temporary flag and context; the source, which cannot be
    /// copied, is kept as text in the message.
    pub fn duplicate(&self) -> Error {
        let message = match &self.source {
            Some(source) => format!("{}: {source}", self.message),
            None => self.message.clone(),
        };
        Error {
            kind: self.kind,
            message,
            temporary: self.temporary,
            context: self.context.clone(),
            source: None,
        }
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without context.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    /// The key-value context.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// Shorthand for an [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }

    /// Shorthand for an [`ErrorKind::NotFound`] error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if !self.context.is_empty() {
            f.write_str(" (")?;
            for (i, (k, v)) in self.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k}: {v}")?;
            }
            f.write_str(")")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("temporary", &self.temporary)
            .field("context", &self.context)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_includes_context_and_source() {
        let err = Error::new(ErrorKind::Unavailable, "read failed")
            .with_context("location", "usstorage")
            .with_source(std::io::Error::other("connection reset"));
        assert_eq!(
            err.to_string(),
            "read failed (location: usstorage): connection reset"
        );
        assert!(err.is_temporary());
        assert!(!Error::new(ErrorKind::BlobUnknown, "x").is_temporary());
    }
}
