//! Media types and manifest parsing: OCI image manifest and index, Docker v2 schema 2
//! manifest and manifest list. Docker schema 1 is refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, ErrorKind};

/// Media type constants.
pub mod media_types {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI empty descriptor's media type (`{}`).
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker schema 1 manifest (refused).
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    /// Signed Docker schema 1 manifest (refused).
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";

    /// Every manifest media type this registry stores.
    pub const SUPPORTED: [&str; 4] = [
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ];
}

use media_types as mt;

/// The largest manifest accepted, in bytes (4 MiB, as the OCI spec suggests registries allow).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// A content descriptor as found in manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: i64,
    /// Artifact type, on index entries and referrers responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Platform, on index entries (kept as it came).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

/// What kind of manifest a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// A single image (OCI manifest or Docker schema 2): config plus layers.
    Image,
    /// A list of manifests (OCI index or Docker manifest list).
    Index,
}

/// A parsed and validated manifest, with what the registry needs to know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedManifest {
    /// The effective media type.
    pub media_type: String,
    /// Image or index.
    pub kind: ManifestKind,
    /// The config descriptor of an image.
    pub config: Option<Descriptor>,
    /// The layers (blobs) of an image.
    pub layers: Vec<Descriptor>,
    /// The manifests an index lists.
    pub manifests: Vec<Descriptor>,
    /// The subject this manifest refers to (OCI 1.1 referrers).
    pub subject: Option<Descriptor>,
    /// The artifact type: `artifactType`, else the config media type of an image.
    pub artifact_type: Option<String>,
    /// Top-level annotations.
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ParsedManifest {
    /// Digests of the blobs an image manifest needs (config first, then layers).
    pub fn blob_digests(&self) -> impl Iterator<Item = &Digest> {
        self.config
            .iter()
            .chain(self.layers.iter())
            .map(|d| &d.digest)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<serde_json::Value>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
    // Schema 1 fields, only to recognise and refuse it.
    fs_layers: Option<serde_json::Value>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::ManifestInvalid, message)
}

fn unsupported_schema1() -> Error {
    Error::new(
        ErrorKind::ManifestInvalid,
        "Docker schema 1 manifests are not supported: push with a client that writes \
         Docker v2 schema 2 or OCI manifests",
    )
}

/// Parses a manifest.
///
/// `content_type` is the `Content-Type` of the upload, if any. When it is given and the
/// document also has a `mediaType`, they must agree. Schema 1 is refused with a clear error.
pub fn parse_manifest(content_type: Option<&str>, bytes: &[u8]) -> Result<ParsedManifest, Error> {
    if bytes.len() > MAX_MANIFEST_SIZE {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!(
                "manifest is {} bytes, the limit is {MAX_MANIFEST_SIZE}",
                bytes.len()
            ),
        ));
    }
    let content_type = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| !c.is_empty());
    if matches!(
        content_type,
        Some(mt::DOCKER_SCHEMA1 | mt::DOCKER_SCHEMA1_SIGNED)
    ) {
        return Err(unsupported_schema1());
    }
    let raw: RawManifest = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("manifest is not valid JSON for its type: {e}")))?;
    match raw.schema_version.as_ref().and_then(|v| v.as_i64()) {
        Some(2) => {}
        Some(1) => return Err(unsupported_schema1()),
        Some(n) => return Err(invalid(format!("unsupported schemaVersion {n}"))),
        None if raw.fs_layers.is_some() => return Err(unsupported_schema1()),
        None => return Err(invalid("manifest has no integer schemaVersion")),
    }
    if let Some(body) = raw.media_type.as_deref() {
        if matches!(body, mt::DOCKER_SCHEMA1 | mt::DOCKER_SCHEMA1_SIGNED) {
            return Err(unsupported_schema1());
        }
    }
    let media_type = match (content_type, raw.media_type.as_deref()) {
        (Some(header), Some(body)) if header != body => {
            return Err(invalid(format!(
                "Content-Type {header:?} does not match the manifest's mediaType {body:?}"
            )))
        }
        (Some(header), _) => header.to_owned(),
        (None, Some(body)) => body.to_owned(),
        (None, None) => {
            // OCI manifests may omit mediaType; tell image from index by shape.
            if raw.manifests.is_some() {
                mt::OCI_INDEX.to_owned()
            } else {
                mt::OCI_MANIFEST.to_owned()
            }
        }
    };
    let kind = match media_type.as_str() {
        mt::OCI_MANIFEST | mt::DOCKER_MANIFEST => ManifestKind::Image,
        mt::OCI_INDEX | mt::DOCKER_MANIFEST_LIST => ManifestKind::Index,
        other => {
            let shown: String = other.chars().take(100).collect();
            return Err(invalid(format!(
                "unsupported manifest media type {shown:?}; supported: {}",
                mt::SUPPORTED.join(", ")
            )));
        }
    };
    let parsed = match kind {
        ManifestKind::Image => {
            let config = raw
                .config
                .ok_or_else(|| invalid("image manifest has no config descriptor"))?;
            if raw.manifests.is_some() {
                return Err(invalid("image manifest must not list manifests"));
            }
            let layers = raw.layers.unwrap_or_default();
            if media_type == mt::DOCKER_MANIFEST && layers.is_empty() {
                return Err(invalid("Docker schema 2 manifest has no layers"));
            }
            for d in std::iter::once(&config).chain(layers.iter()) {
                check_descriptor(d)?;
            }
            let artifact_type = raw
                .artifact_type
                .clone()
                .or_else(|| Some(config.media_type.clone()));
            ParsedManifest {
                media_type,
                kind,
                config: Some(config),
                layers,
                manifests: Vec::new(),
                subject: raw.subject,
                artifact_type,
                annotations: raw.annotations,
            }
        }
        ManifestKind::Index => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(invalid("an index must not have config or layers"));
            }
            let manifests = raw
                .manifests
                .ok_or_else(|| invalid("index has no manifests list"))?;
            for d in &manifests {
                check_descriptor(d)?;
            }
            ParsedManifest {
                media_type,
                kind,
                config: None,
                layers: Vec::new(),
                manifests,
                subject: raw.subject,
                artifact_type: raw.artifact_type,
                annotations: raw.annotations,
            }
        }
    };
    if let Some(subject) = &parsed.subject {
        check_descriptor(subject)?;
    }
    Ok(parsed)
}

fn check_descriptor(d: &Descriptor) -> Result<(), Error> {
    if d.size < 0 {
        return Err(invalid(format!(
            "descriptor {} has a negative size",
            d.digest
        )));
    }
    if d.media_type.is_empty() {
        return Err(invalid(format!("descriptor {} has no mediaType", d.digest)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn image() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":10}}]}}"#,
            mt::OCI_MANIFEST,
            digest('a'),
            digest('b')
        )
    }

    #[test]
    fn parses_oci_image() {
        let m = parse_manifest(Some(mt::OCI_MANIFEST), image().as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.blob_digests().count(), 2);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
    }

    #[test]
    fn parses_index_without_media_type() {
        let doc = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":5,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            mt::OCI_MANIFEST,
            digest('c')
        );
        let m = parse_manifest(None, doc.as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert_eq!(m.media_type, mt::OCI_INDEX);
        assert_eq!(m.manifests.len(), 1);
    }

    #[test]
    fn refuses_schema1() {
        let doc = r#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        let err = parse_manifest(None, doc.as_bytes()).unwrap_err();
        assert!(err.message().contains("schema 1"));
        let err = parse_manifest(Some(mt::DOCKER_SCHEMA1_SIGNED), b"{}").unwrap_err();
        assert!(err.message().contains("schema 1"));
    }

    #[test]
    fn refuses_mismatch_and_garbage() {
        let err = parse_manifest(Some(mt::DOCKER_MANIFEST), image().as_bytes()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ManifestInvalid);
        assert!(parse_manifest(None, b"not json").is_err());
        assert!(parse_manifest(Some("text/plain"), br#"{"schemaVersion":2}"#).is_err());
        let bad_digest = image().replace(&digest('b'), "sha256:nothex");
        assert!(parse_manifest(None, bad_digest.as_bytes()).is_err());
    }

    #[test]
    fn refuses_oversized() {
        let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
        assert_eq!(
            parse_manifest(None, &big).unwrap_err().kind(),
            ErrorKind::TooLarge
        );
    }
}
