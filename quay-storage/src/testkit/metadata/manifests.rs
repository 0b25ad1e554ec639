//! Cases of [`ManifestIndex`](quay_core::ManifestIndex).

use std::collections::BTreeMap;

use quay_core::metadata::{BlobIndex, ManifestIndex, NewManifest, Page};
use quay_core::{Digest, Reference, Result};

use super::{blob_commit, manifest, repo, MetadataHarness};

fn by_tag(tag: &str) -> Result<Reference> {
    Ok(Reference::Tag(tag.parse()?))
}

fn by_digest(m: &NewManifest) -> Reference {
    Reference::Digest(m.record.digest.clone())
}

/// A referrer of `subject`, with an artifact type and annotations.
fn referrer(seed: &str, subject: &Digest) -> Result<NewManifest> {
    let mut m = manifest(seed, None)?;
    m.record.subject = Some(subject.clone());
    m.record.artifact_type = Some("application/vnd.example.sbom".to_owned());
    m.record.annotations = Some(BTreeMap::from([
        ("org.example.seed".to_owned(), seed.to_owned()),
        (
            "org.opencontainers.image.created".to_owned(),
            "2024-01-01T00:00:00Z".to_owned(),
        ),
    ]));
    Ok(m)
}

fn page(items: &[&str], more: bool) -> Page {
    Page {
        items: items.iter().map(|s| (*s).to_owned()).collect(),
        more,
    }
}

/// A manifest pushed by tag comes back, byte for byte and with every field, by tag and by
/// digest, and creates its repository.
pub async fn put_manifest_by_tag_resolves_by_tag_and_digest<H: MetadataHarness>(
    h: &H,
) -> Result<()> {
    let store = h.open().await?;
    let r = repo("library/alpine")?;
    let m = referrer("index", &Digest::sha256_of(b"subject"))?;
    let m = NewManifest {
        tag: Some("latest".parse()?),
        ..m
    };
    store.put_manifest(&r, &m).await?;
    assert_eq!(
        store.get_manifest(&r, &by_tag("latest")?).await?,
        Some(m.record.clone())
    );
    assert_eq!(
        store.get_manifest(&r, &by_digest(&m)).await?,
        Some(m.record)
    );
    assert_eq!(
        store.list_tags(&r, None, 10).await?,
        Some(page(&["latest"], false))
    );
    assert_eq!(
        store.catalog(None, 10).await?,
        page(&["library/alpine"], false)
    );
    Ok(())
}

/// A manifest pushed by digest is stored without a tag.
pub async fn put_manifest_by_digest_creates_no_tag<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let r = repo("a")?;
    let m = manifest("one", None)?;
    store.put_manifest(&r, &m).await?;
    assert_eq!(
        store.get_manifest(&r, &by_digest(&m)).await?,
        Some(m.record)
    );
    assert_eq!(store.list_tags(&r, None, 10).await?, Some(page(&[], false)));
    Ok(())
}

/// Pushing a digest that exists keeps the stored manifest and still applies the new tag.
pub async fn put_same_manifest_twice_keeps_the_first<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let r = repo("a")?;
    let first = manifest("one", Some("v1"))?;
    let mut again = manifest("one", Some("v2"))?;
    again.record.artifact_type = Some("application/vnd.example.other".to_owned());
    store.put_manifest(&r, &first).await?;
    store.put_manifest(&r, &again).await?;
    assert_eq!(
        store.get_manifest(&r, &by_digest(&first)).await?,
        Some(first.record.clone())
    );
    assert_eq!(
        store.get_manifest(&r, &by_tag("v2")?).await?,
        Some(first.record)
    );
    assert_eq!(
        store.list_tags(&r, None, 10).await?,
        Some(page(&["v1", "v2"], false))
    );
    Ok(())
}

/// Pushing another manifest under a tag moves the tag; the old manifest stays by digest.
pub async fn put_manifest_moves_tag<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let r = repo("a")?;
    let old = manifest("old", Some("latest"))?;
    let new = manifest("new", Some("latest"))?;
    store.put_manifest(&r, &old).await?;
    store.put_manifest(&r, &new).await?;
    assert_eq!(
        store.get_manifest(&r, &by_tag("latest")?).await?,
        Some(new.record)
    );
    assert_eq!(
        store.get_manifest(&r, &by_digest(&old)).await?,
        Some(old.record)
    );
    assert_eq!(
        store.list_tags(&r, None, 10).await?,
        Some(page(&["latest"], false))
    );
    Ok(())
}

/// Unknown repositories, tags and digests resolve to nothing, and manifests do not leak
/// across repositories.
pub async fn get_unknown_manifest_is_none<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let m = manifest("one", Some("latest"))?;
    store.put_manifest(&repo("a")?, &m).await?;
    let unknown = Reference::Digest(Digest::sha256_of(b"nothing"));
    assert_eq!(
        store
            .get_manifest(&repo("zzz")?, &by_tag("latest")?)
            .await?,
        None
    );
    assert_eq!(store.get_manifest(&repo("zzz")?, &unknown).await?, None);
    assert_eq!(
        store.get_manifest(&repo("a")?, &by_tag("other")?).await?,
        None
    );
    assert_eq!(store.get_manifest(&repo("a")?, &unknown).await?, None);
    assert_eq!(store.get_manifest(&repo("b")?, &by_digest(&m)).await?, None);
    Ok(())
}

/// Deleting a manifest removes every tag pointing at it and nothing else.
pub async fn delete_manifest_removes_its_tags<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let r = repo("a")?;
    let gone = manifest("gone", Some("a"))?;
    let kept = manifest("kept", Some("c"))?;
    store.put_manifest(&r, &gone).await?;
    store
        .put_manifest(
            &r,
            &NewManifest {
                tag: Some("b".parse()?),
                ..gone.clone()
            },
        )
        .await?;
    store.put_manifest(&r, &kept).await?;
    assert!(store.delete_manifest(&r, &gone.record.digest).await?);
    assert_eq!(store.get_manifest(&r, &by_digest(&gone)).await?, None);
    assert_eq!(store.get_manifest(&r, &by_tag("a")?).await?, None);
    assert_eq!(
        store.list_tags(&r, None, 10).await?,
        Some(page(&["c"], false))
    );
    assert_eq!(
        store.get_manifest(&r, &by_tag("c")?).await?,
        Some(kept.record)
    );
    assert!(!store.delete_manifest(&r, &gone.record.digest).await?);
    Ok(())
}

/// Deleting a tag says whether it existed and keeps the manifest.
pub async fn delete_tag_keeps_manifest<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let r = repo("a")?;
    let m = manifest("one", Some("latest"))?;
    store.put_manifest(&r, &m).await?;
    let latest = "latest".parse()?;
    assert!(store.delete_tag(&r, &latest).await?);
    assert!(!store.delete_tag(&r, &latest).await?);
    assert_eq!(store.get_manifest(&r, &by_tag("latest")?).await?, None);
    assert_eq!(
        store.get_manifest(&r, &by_digest(&m)).await?,
        Some(m.record)
    );
    assert_eq!(store.list_tags(&r, None, 10).await?, Some(page(&[], false)));
    Ok(())
}

/// Tags come sorted byte-wise (upper case, `_`, then lower case), in pages that start after
/// `last` and say whether more follow.
pub async fn tags_are_sorted_and_paged<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let r = repo("a")?;
    for tag in ["v2", "latest", "a.b", "V1", "_z", "a-b", "v10"] {
        store.put_manifest(&r, &manifest(tag, Some(tag))?).await?;
    }
    store
        .put_manifest(&repo("other")?, &manifest("x", Some("0"))?)
        .await?;
    let all = ["V1", "_z", "a-b", "a.b", "latest", "v10", "v2"];
    assert_eq!(
        store.list_tags(&r, None, 100).await?,
        Some(page(&all, false))
    );
    assert_eq!(
        store.list_tags(&r, None, 3).await?,
        Some(page(&all[..3], true))
    );
    assert_eq!(
        store.list_tags(&r, Some("a-b"), 3).await?,
        Some(page(&all[3..6], true))
    );
    assert_eq!(
        store.list_tags(&r, Some("v10"), 3).await?,
        Some(page(&["v2"], false))
    );
    assert_eq!(
        store.list_tags(&r, Some("latest"), 2).await?,
        Some(page(&all[5..], false))
    );
    // `last` need not be a tag that exists.
    assert_eq!(
        store.list_tags(&r, Some("b"), 1).await?,
        Some(page(&["latest"], true))
    );
    assert_eq!(
        store.list_tags(&r, Some("v2"), 3).await?,
        Some(page(&[], false))
    );
    assert_eq!(store.list_tags(&r, None, 0).await?, Some(page(&[], true)));
    Ok(())
}

/// A repository that was never pushed to has no tag list at all.
pub async fn list_tags_of_unknown_repository_is_none<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    store
        .put_manifest(&repo("a")?, &manifest("one", Some("latest"))?)
        .await?;
    assert_eq!(store.list_tags(&repo("b")?, None, 10).await?, None);
    assert_eq!(
        store.list_tags(&repo("b")?, Some("latest"), 10).await?,
        None
    );
    Ok(())
}

/// Referrers are the repository's manifests whose subject is the digest, with their artifact
/// type and annotations.
pub async fn referrers_filter_by_subject<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let r = repo("a")?;
    let subject = manifest("image", Some("latest"))?;
    let s = subject.record.digest.clone();
    let (one, two) = (referrer("sbom", &s)?, referrer("signature", &s)?);
    let elsewhere = referrer("other", &Digest::sha256_of(b"another subject"))?;
    store.put_manifest(&r, &subject).await?;
    for m in [&one, &two, &elsewhere] {
        store.put_manifest(&r, m).await?;
    }
    store
        .put_manifest(&repo("b")?, &referrer("foreign", &s)?)
        .await?;

    let mut found = store.referrers(&r, &s).await?;
    found.sort_by(|x, y| x.digest.cmp(&y.digest));
    let mut expected = vec![one.record, two.record];
    expected.sort_by(|x, y| x.digest.cmp(&y.digest));
    assert_eq!(found, expected);
    assert!(store
        .referrers(&r, &Digest::sha256_of(b"nothing"))
        .await?
        .is_empty());
    assert!(store.referrers(&repo("zzz")?, &s).await?.is_empty());
    Ok(())
}

/// The catalog lists repositories made by blobs and manifests, sorted byte-wise, in pages.
pub async fn catalog_is_sorted_and_paged<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    assert_eq!(store.catalog(None, 10).await?, page(&[], false));
    for name in ["b", "a/x", "c-d"] {
        store
            .commit_blob(&blob_commit(name, "layer", "us")?)
            .await?;
    }
    for name in ["a", "a.b", "b"] {
        store
            .put_manifest(&repo(name)?, &manifest(name, Some("latest"))?)
            .await?;
    }
    let all = ["a", "a.b", "a/x", "b", "c-d"];
    assert_eq!(store.catalog(None, 10).await?, page(&all, false));
    assert_eq!(store.catalog(None, 2).await?, page(&all[..2], true));
    assert_eq!(store.catalog(Some("a.b"), 2).await?, page(&all[2..4], true));
    assert_eq!(store.catalog(Some("b"), 2).await?, page(&all[4..], false));
    assert_eq!(store.catalog(Some("a/x"), 2).await?, page(&all[3..], false));
    assert_eq!(store.catalog(None, 0).await?, page(&[], true));
    Ok(())
}
