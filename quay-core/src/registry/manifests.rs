//! Manifests, tags, referrers and the catalog.

use bytes::Bytes;
use tracing::instrument;

use super::Registry;
use crate::digest::{Algorithm, Digest};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{media_types, parse_manifest, Descriptor, ManifestKind, ParsedManifest};
use crate::metadata::{ManifestRecord, NewManifest, Page};
use crate::names::{Reference, RepositoryName};

/// The outcome of a manifest push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestPut {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its subject, when it has one (answered as `OCI-Subject`).
    pub subject: Option<Digest>,
}

/// A page of tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagPage {
    /// The tags, sorted.
    pub tags: Vec<String>,
    /// Whether more tags follow.
    pub more: bool,
}

/// What a parsed manifest references in its repository: blobs (config and layers, foreign
/// layers excepted) and child manifests (an index's), each once.
pub(crate) fn references(parsed: &ParsedManifest) -> (Vec<Digest>, Vec<Digest>) {
    let mut blobs: Vec<Digest> = Vec::new();
    if parsed.kind == ManifestKind::Image {
        for d in parsed.config.iter().chain(parsed.layers.iter()) {
            if !is_foreign_layer(&d.media_type) && !blobs.contains(&d.digest) {
                blobs.push(d.digest.clone());
            }
        }
    }
    let mut children: Vec<Digest> = Vec::new();
    if parsed.kind == ManifestKind::Index {
        for d in &parsed.manifests {
            if !children.contains(&d.digest) {
                children.push(d.digest.clone());
            }
        }
    }
    (blobs, children)
}

/// Layer media types that live outside the registry and need not be pushed.
fn is_foreign_layer(media_type: &str) -> bool {
    media_type.contains("foreign") || media_type.contains("nondistributable")
}

fn manifest_unknown(reference: &Reference) -> Error {
    Error::new(
        ErrorKind::ManifestUnknown,
        format!("manifest {reference} is not known to this repository"),
    )
}

impl Registry {
    /// Validates and stores a manifest under `reference` (a tag, or the digest it must hash
    /// to). Every blob an image references must be in the repository, and every manifest an
    /// index lists, else [`ErrorKind::ManifestBlobUnknown`].
    #[instrument(skip(self, content), fields(repository = %repository, reference = %reference))]
    pub async fn put_manifest(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
        content_type: Option<&str>,
        content: Bytes,
    ) -> Result<ManifestPut> {
        let parsed = parse_manifest(content_type, &content)?;
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::compute(expected.algorithm(), &content);
                if &actual != expected {
                    return Err(Error::new(
                        ErrorKind::DigestInvalid,
                        format!("manifest hashes to {actual}, not {expected}"),
                    ));
                }
                actual
            }
            Reference::Tag(_) => Digest::compute(Algorithm::Sha256, &content),
        };
        let meta = &self.inner.metadata;
        let (blobs, children) = references(&parsed);
        for d in &blobs {
            if meta.repository_blob(repository, d).await?.is_none() {
                return Err(Error::new(
                    ErrorKind::ManifestBlobUnknown,
                    format!("blob {d} referenced by the manifest is not in {repository}"),
                ));
            }
        }
        for d in &children {
            let child = Reference::Digest(d.clone());
            if meta.get_manifest(repository, &child).await?.is_none() {
                return Err(Error::new(
                    ErrorKind::ManifestBlobUnknown,
                    format!("manifest {d} listed by the index is not in {repository}"),
                ));
            }
        }
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        let record = ManifestRecord {
            digest: digest.clone(),
            media_type: parsed.media_type.clone(),
            content,
            subject: subject.clone(),
            artifact_type: parsed.artifact_type.clone(),
            annotations: parsed.annotations.clone(),
        };
        let tag = match reference {
            Reference::Tag(t) => Some(t.clone()),
            Reference::Digest(_) => None,
        };
        let new = NewManifest {
            record,
            tag,
            blobs,
            children,
        };
        match meta.put_manifest(repository, &new).await {
            Ok(()) => Ok(ManifestPut { digest, subject }),
            // A blob or child checked above was collected before the store recorded the
            // reference: the store refused it, and the client pushes it again.
            Err(e) if e.kind() == ErrorKind::Conflict => Err(Error::new(
                ErrorKind::ManifestBlobUnknown,
                "a blob or manifest the manifest references was removed meanwhile; push it again",
            )
            .with_source(e)),
            Err(e) => Err(e),
        }
    }

    /// A manifest by tag or digest.
    pub async fn get_manifest(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<ManifestRecord> {
        self.inner
            .metadata
            .get_manifest(repository, reference)
            .await?
            .ok_or_else(|| manifest_unknown(reference))
    }

    /// Deletes a manifest (by digest, with its tags) or a tag (by tag).
    #[instrument(skip(self), fields(repository = %repository, reference = %reference))]
    pub async fn delete_manifest(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<()> {
        let meta = &self.inner.metadata;
        let deleted = match reference {
            Reference::Digest(d) => meta.delete_manifest(repository, d).await?,
            Reference::Tag(t) => meta.delete_tag(repository, t).await?,
        };
        if deleted {
            Ok(())
        } else {
            Err(manifest_unknown(reference))
        }
    }

    /// A page of tags, sorted, after `last`, at most `limit`.
    pub async fn list_tags(
        &self,
        repository: &RepositoryName,
        last: Option<&str>,
        limit: u64,
    ) -> Result<TagPage> {
        let page = self
            .inner
            .metadata
            .list_tags(repository, last, limit)
            .await?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NameUnknown,
                    format!("repository {repository} is not known"),
                )
            })?;
        Ok(TagPage {
            tags: page.items,
            more: page.more,
        })
    }

    /// Descriptors of the manifests whose subject is `subject`, optionally only those of
    /// `artifact_type`.
    pub async fn referrers(
        &self,
        repository: &RepositoryName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        let records = self.inner.metadata.referrers(repository, subject).await?;
        Ok(records
            .into_iter()
            .filter(|r| artifact_type.is_none() || r.artifact_type.as_deref() == artifact_type)
            .map(|r| Descriptor {
                media_type: r.media_type,
                size: r.content.len() as i64,
                digest: r.digest,
                artifact_type: r.artifact_type,
                annotations: r.annotations,
                platform: None,
            })
            .collect())
    }

    /// A page of repository names.
    pub async fn catalog(&self, last: Option<&str>, limit: u64) -> Result<Page> {
        self.inner.metadata.catalog(last, limit).await
    }
}

/// Whether a client's `Accept` list allows a manifest of `media_type`. An absent or wildcard
/// `Accept`, or one naming no manifest type at all, allows everything.
pub fn accepts(accept: &[&str], media_type: &str) -> bool {
    let types: Vec<&str> = accept
        .iter()
        .flat_map(|h| h.split(','))
        .map(|t| t.split(';').next().unwrap_or(t).trim())
        .filter(|t| !t.is_empty())
        .collect();
    if types.is_empty() || types.iter().any(|t| *t == "*/*" || *t == media_type) {
        return true;
    }
    !types.iter().any(|t| media_types::SUPPORTED.contains(t))
}
