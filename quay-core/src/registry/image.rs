//! Per-image replication status: is every blob of an image in every default location?
//!
//! An image is resolved from its manifest (by tag or digest); an index contributes the blobs
//! of every child manifest it lists (and of theirs, for nested indexes). The blobs are the
//! configs and layers, foreign layers excepted (they live outside the registry). Manifests
//! themselves live in the database, which every instance shares, so they are never missing.

use std::collections::BTreeSet;

use serde::Serialize;

use super::manifests::references;
use super::Registry;
use crate::digest::Digest;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::parse_manifest;
use crate::names::{LocationId, Reference, RepositoryName};

/// Nested indexes are followed at most this deep (an index of indexes of images is 2).
const MAX_INDEX_DEPTH: usize = 8;

/// A blob of the image that a location lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingBlob {
    /// The blob.
    pub digest: Digest,
    /// Its size in bytes (0 when the registry does not know the blob at all).
    pub size: u64,
}

/// One default location's share of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocationImageStatus {
    /// The location.
    pub location: LocationId,
    /// Whether it holds every blob of the image.
    pub complete: bool,
    /// How many of the image's blobs it holds.
    pub blobs_held: u64,
    /// The blobs it lacks, in the order the image lists them.
    pub missing: Vec<MissingBlob>,
}

/// Where an image stands: see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageStatus {
    /// The repository.
    pub repository: RepositoryName,
    /// The reference asked about (a tag or a digest).
    pub reference: String,
    /// The digest of the manifest the reference resolved to.
    pub digest: Digest,
    /// The media type of that manifest.
    pub media_type: String,
    /// Every manifest visited: the one resolved and, for an index, its children.
    pub manifests: Vec<Digest>,
    /// How many distinct blobs the image has.
    pub blobs: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Whether every default location holds every blob.
    pub complete: bool,
    /// Per default location, in the configured order.
    pub locations: Vec<LocationImageStatus>,
}

impl ImageStatus {
    /// How many (blob, location) copies are missing.
    pub fn missing_copies(&self) -> u64 {
        self.locations.iter().map(|l| l.missing.len() as u64).sum()
    }

    /// A short human-readable report, one line per location and per missing blob.
    pub fn render(&self) -> String {
        let mut out = format!(
            "image {}@{} ({}): {} blobs, {} bytes, {} manifest(s): {}\n",
            self.repository,
            self.digest,
            self.reference,
            self.blobs,
            self.bytes,
            self.manifests.len(),
            if self.complete {
                "replicated everywhere"
            } else {
                "INCOMPLETE"
            }
        );
        for l in &self.locations {
            out.push_str(&format!(
                "  {}: {}/{} blobs{}\n",
                l.location,
                l.blobs_held,
                self.blobs,
                if l.complete {
                    ", complete"
                } else {
                    ", missing:"
                }
            ));
            for m in &l.missing {
                out.push_str(&format!("    {} ({} bytes)\n", m.digest, m.size));
            }
        }
        out
    }
}

impl Registry {
    /// The locations an image must be in: `DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS`, or every
    /// configured location when none is named.
    pub fn status_locations(&self) -> Vec<LocationId> {
        if self.inner.config.default_locations.is_empty() {
            self.inner.locations.keys().cloned().collect()
        } else {
            self.inner.config.default_locations.clone()
        }
    }

    /// Whether every blob of the image `repository:reference` is in every default location,
    /// and what is missing where. An unknown repository or reference is
    /// [`ErrorKind::ManifestUnknown`], as for a pull.
    pub async fn image_status(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<ImageStatus> {
        let meta = &self.inner.metadata;
        let top = self.get_manifest(repository, reference).await?;
        let mut manifests: Vec<Digest> = Vec::new();
        let mut blob_order: Vec<Digest> = Vec::new();
        let mut seen_blobs: BTreeSet<Digest> = BTreeSet::new();
        // (manifest digest, its content, depth)
        let mut pending = vec![(
            top.digest.clone(),
            top.content.clone(),
            top.media_type.clone(),
            0,
        )];
        while let Some((digest, content, media_type, depth)) = pending.pop() {
            if manifests.contains(&digest) {
                continue;
            }
            manifests.push(digest.clone());
            let parsed = parse_manifest(Some(media_type.as_str()), &content)
                .or_else(|_| parse_manifest(None, &content))?;
            let (blobs, children) = references(&parsed);
            for b in blobs {
                if seen_blobs.insert(b.clone()) {
                    blob_order.push(b);
                }
            }
            if depth >= MAX_INDEX_DEPTH {
                continue;
            }
            // Children in the order listed: push them reversed onto the stack.
            for child in children.into_iter().rev() {
                let record = meta
                    .get_manifest(repository, &Reference::Digest(child.clone()))
                    .await?
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::ManifestUnknown,
                            format!("manifest {child} listed by the index is not in {repository}"),
                        )
                    })?;
                pending.push((child, record.content, record.media_type, depth + 1));
            }
        }
        let targets = self.status_locations();
        let mut locations: Vec<LocationImageStatus> = targets
            .iter()
            .map(|l| LocationImageStatus {
                location: l.clone(),
                complete: true,
                blobs_held: 0,
                missing: Vec::new(),
            })
            .collect();
        let mut bytes = 0u64;
        for digest in &blob_order {
            let record = meta.get_blob(digest).await?;
            let size = record.as_ref().map_or(0, |r| r.size);
            bytes += size;
            for l in &mut locations {
                let held = record
                    .as_ref()
                    .is_some_and(|r| r.locations.contains(&l.location));
                if held {
                    l.blobs_held += 1;
                } else {
                    l.complete = false;
                    l.missing.push(MissingBlob {
                        digest: digest.clone(),
                        size,
                    });
                }
            }
        }
        Ok(ImageStatus {
            repository: repository.clone(),
            reference: reference.to_string(),
            digest: top.digest,
            media_type: top.media_type,
            manifests,
            blobs: blob_order.len() as u64,
            bytes,
            complete: locations.iter().all(|l| l.complete),
            locations,
        })
    }
}
