//! Cases of [`BlobIndex`](quay_core::BlobIndex).

use std::collections::BTreeSet;

use quay_core::metadata::{BlobIndex, BlobRecord, ManifestIndex, UploadStore};
use quay_core::{ErrorKind, LocationId, Result};

use super::{assert_kind, blob_commit, blob_digest, loc, part, repo, upload_id, MetadataHarness};

fn locations(record: &BlobRecord) -> BTreeSet<LocationId> {
    record.locations.iter().cloned().collect()
}

/// A commit records the blob, its placement, and its link into the (new) repository.
pub async fn commit_blob_records_blob_placement_and_link<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    store
        .commit_blob(&blob_commit("library/alpine", "layer", "us")?)
        .await?;
    let expected = BlobRecord {
        digest: blob_digest("layer"),
        size: 5,
        locations: vec![loc("us")?],
    };
    assert_eq!(
        store.get_blob(&blob_digest("layer")).await?,
        Some(expected.clone())
    );
    assert_eq!(
        store
            .repository_blob(&repo("library/alpine")?, &blob_digest("layer"))
            .await?,
        Some(expected)
    );
    assert_eq!(store.catalog(None, 10).await?.items, ["library/alpine"]);
    Ok(())
}

/// Committing the same blob again succeeds and duplicates nothing.
pub async fn commit_blob_twice_is_idempotent<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let commit = blob_commit("a", "layer", "us")?;
    store.commit_blob(&commit).await?;
    store.commit_blob(&commit).await?;
    let record = store.get_blob(&commit.digest).await?;
    assert_eq!(record.map(|r| r.locations), Some(vec![loc("us")?]));
    assert_eq!(store.catalog(None, 10).await?.items, ["a"]);
    Ok(())
}

/// A commit of a known blob in another location adds that placement, keeping the first.
pub async fn commit_blob_in_another_location_adds_placement<H: MetadataHarness>(
    h: &H,
) -> Result<()> {
    let store = h.open().await?;
    store.commit_blob(&blob_commit("a", "layer", "us")?).await?;
    store.commit_blob(&blob_commit("b", "layer", "eu")?).await?;
    let Some(record) = store.get_blob(&blob_digest("layer")).await? else {
        panic!("committed blob not found");
    };
    assert_eq!(locations(&record), BTreeSet::from([loc("eu")?, loc("us")?]));
    assert!(store
        .repository_blob(&repo("a")?, &record.digest)
        .await?
        .is_some());
    assert!(store
        .repository_blob(&repo("b")?, &record.digest)
        .await?
        .is_some());
    Ok(())
}

/// A commit that names its upload session removes the session and its parts.
pub async fn commit_blob_removes_its_upload<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let id = upload_id();
    store.create_upload(&id, &repo("a")?, &loc("us")?).await?;
    store.append_upload_part(&id, 0, &part(0, 5, None)).await?;
    let mut commit = blob_commit("a", "layer", "us")?;
    commit.upload_id = Some(id.clone());
    store.commit_blob(&commit).await?;
    assert_kind(
        store.get_upload(&id).await,
        ErrorKind::NotFound,
        "upload after commit",
    );
    assert!(store.get_blob(&commit.digest).await?.is_some());
    Ok(())
}

/// An unknown digest is unknown everywhere.
pub async fn get_unknown_blob_is_none<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    assert_eq!(store.get_blob(&blob_digest("nothing")).await?, None);
    assert_eq!(
        store
            .repository_blob(&repo("a")?, &blob_digest("nothing"))
            .await?,
        None
    );
    Ok(())
}

/// `get_blobs_with_removals` agrees with `get_blob` and `removals`, in the order asked, for
/// known and unknown blobs, the same blob twice, and after a removal of a copy is counted.
pub async fn get_blobs_with_removals_agrees_with_its_parts<H: MetadataHarness>(
    h: &H,
) -> Result<()> {
    use quay_core::metadata::PlacementIndex;
    let store = h.open().await?;
    let (eu, us) = (loc("eu")?, loc("us")?);
    let one = blob_commit("a", "layer", "us")?;
    let two = blob_commit("a", "config", "eu")?;
    store.commit_blob(&one).await?;
    store.commit_blob(&two).await?;
    store
        .commit_blob(&blob_commit("a", "config", "us")?)
        .await?;
    store.record_removed_copy(&one.digest, &eu).await?;
    let wanted = vec![
        (blob_digest("nothing"), eu.clone()),
        (one.digest.clone(), eu.clone()),
        (two.digest.clone(), us.clone()),
        (one.digest.clone(), us.clone()),
        (blob_digest("nothing"), us.clone()),
    ];
    let found = store.get_blobs_with_removals(&wanted).await?;
    assert_eq!(found.len(), wanted.len(), "one answer per blob asked");
    for ((digest, at), (blob, removals)) in wanted.iter().zip(found) {
        assert_eq!(
            blob,
            store.get_blob(digest).await?,
            "{digest} asked in {at}"
        );
        if let Some(n) = removals {
            assert_eq!(
                n,
                store.removals(digest, at).await?,
                "removals of {digest} in {at}"
            );
        }
    }
    assert!(store.get_blobs_with_removals(&[]).await?.is_empty());
    Ok(())
}

/// `add_placements` answers each copy as `add_placement` would, in order: a new copy is
/// recorded, a copy already recorded is fine, a copy of an unknown blob is not recorded, and a
/// copy written before a removal there was counted is refused (`Unavailable`).
pub async fn add_placements_answers_each_copy_in_order<H: MetadataHarness>(h: &H) -> Result<()> {
    use quay_core::metadata::{PlacementIndex, PlacementToAdd};
    let store = h.open().await?;
    let (eu, us, ap) = (loc("eu")?, loc("us")?, loc("ap")?);
    let one = blob_commit("a", "layer", "us")?;
    store.commit_blob(&one).await?;
    let seen = store.removals(&one.digest, &ap).await?;
    store.record_removed_copy(&one.digest, &ap).await?;
    let copy =
        |digest: &quay_core::Digest, location: &LocationId, removals_seen: u64| PlacementToAdd {
            digest: digest.clone(),
            location: location.clone(),
            removals_seen,
        };
    let answers = store
        .add_placements(&[
            copy(&one.digest, &eu, 0),
            copy(&one.digest, &us, 0),
            copy(&blob_digest("nothing"), &eu, 0),
            copy(&one.digest, &ap, seen),
        ])
        .await;
    assert_eq!(answers.len(), 4, "one answer per copy");
    let mut answers = answers.into_iter();
    assert!(
        matches!(answers.next(), Some(Ok(true))),
        "a new copy is recorded"
    );
    assert!(
        matches!(answers.next(), Some(Ok(true))),
        "a recorded copy is fine"
    );
    assert!(
        matches!(answers.next(), Some(Ok(false))),
        "an unknown blob is not recorded"
    );
    match answers.next() {
        Some(Err(e)) => assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}"),
        other => panic!("a copy older than a removal must be refused, got {other:?}"),
    }
    let Some(record) = store.get_blob(&one.digest).await? else {
        panic!("blob gone");
    };
    assert_eq!(locations(&record), BTreeSet::from([eu, us]));
    assert!(store.add_placements(&[]).await.is_empty());
    Ok(())
}

/// `repository_blob` answers only for repositories that link the blob.
pub async fn repository_blob_needs_a_link<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    store.commit_blob(&blob_commit("a", "layer", "us")?).await?;
    store.commit_blob(&blob_commit("b", "other", "us")?).await?;
    assert_eq!(
        store
            .repository_blob(&repo("b")?, &blob_digest("layer"))
            .await?,
        None
    );
    assert!(store.get_blob(&blob_digest("layer")).await?.is_some());
    Ok(())
}

/// Linking a known blob (a cross-repository mount) creates the repository; linking again is
/// fine.
pub async fn link_blob_links_a_known_blob<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    store.commit_blob(&blob_commit("a", "layer", "us")?).await?;
    let digest = blob_digest("layer");
    assert!(store.link_blob(&repo("b")?, &digest).await?);
    assert!(store.link_blob(&repo("b")?, &digest).await?);
    let linked = store.repository_blob(&repo("b")?, &digest).await?;
    assert_eq!(linked.map(|r| r.locations), Some(vec![loc("us")?]));
    assert_eq!(store.catalog(None, 10).await?.items, ["a", "b"]);
    Ok(())
}

/// Linking an unknown blob returns false and creates no repository.
pub async fn link_unknown_blob_is_false_and_creates_nothing<H: MetadataHarness>(
    h: &H,
) -> Result<()> {
    let store = h.open().await?;
    assert!(
        !store
            .link_blob(&repo("b")?, &blob_digest("nothing"))
            .await?
    );
    assert!(store.catalog(None, 10).await?.items.is_empty());
    assert_eq!(store.list_tags(&repo("b")?, None, 10).await?, None);
    Ok(())
}

/// Unlinking says whether there was a link; the blob's records stay until deleted.
pub async fn unlink_blob_reports_whether_it_was_linked<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    store.commit_blob(&blob_commit("a", "layer", "us")?).await?;
    let digest = blob_digest("layer");
    assert!(store.unlink_blob(&repo("a")?, &digest).await?);
    assert!(!store.unlink_blob(&repo("a")?, &digest).await?);
    assert!(
        !store
            .unlink_blob(&repo("zzz")?, &blob_digest("nothing"))
            .await?
    );
    assert_eq!(store.repository_blob(&repo("a")?, &digest).await?, None);
    assert!(store.get_blob(&digest).await?.is_some());
    Ok(())
}

/// A blob still linked by some repository is not deleted, placements included.
pub async fn delete_blob_keeps_linked_blobs<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    store.commit_blob(&blob_commit("a", "layer", "us")?).await?;
    store.commit_blob(&blob_commit("b", "layer", "eu")?).await?;
    let digest = blob_digest("layer");
    store.unlink_blob(&repo("a")?, &digest).await?;
    assert_eq!(
        store.delete_blob_if_unreferenced(&digest, false).await?,
        None
    );
    let Some(record) = store.repository_blob(&repo("b")?, &digest).await? else {
        panic!("linked blob was deleted");
    };
    assert_eq!(locations(&record), BTreeSet::from([loc("eu")?, loc("us")?]));
    Ok(())
}

/// An unlinked blob is deleted with its placements, and the locations that held it come back.
pub async fn delete_unreferenced_blob_returns_its_locations<H: MetadataHarness>(
    h: &H,
) -> Result<()> {
    let store = h.open().await?;
    store.commit_blob(&blob_commit("a", "layer", "us")?).await?;
    store.commit_blob(&blob_commit("a", "layer", "eu")?).await?;
    store.commit_blob(&blob_commit("a", "other", "us")?).await?;
    let digest = blob_digest("layer");
    store.unlink_blob(&repo("a")?, &digest).await?;
    let Some(former) = store.delete_blob_if_unreferenced(&digest, false).await? else {
        panic!("unlinked blob was kept");
    };
    assert_eq!(
        former.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([loc("eu")?, loc("us")?])
    );
    assert_eq!(store.get_blob(&digest).await?, None);
    assert!(store.get_blob(&blob_digest("other")).await?.is_some());
    // The same content can be pushed again afterwards.
    store.commit_blob(&blob_commit("a", "layer", "us")?).await?;
    assert!(store.repository_blob(&repo("a")?, &digest).await?.is_some());
    Ok(())
}

/// Deleting a blob nobody knows deletes nothing and reports no locations.
pub async fn delete_unknown_blob_returns_no_locations<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    assert_eq!(
        store
            .delete_blob_if_unreferenced(&blob_digest("nothing"), false)
            .await?,
        Some(Vec::new())
    );
    Ok(())
}

/// Instances committing one blob at the same time, into several repositories and locations,
/// all succeed and every placement and link is recorded.
pub async fn concurrent_commits_of_one_blob_succeed<H: MetadataHarness>(h: &H) -> Result<()> {
    let stores = [h.open().await?, h.open().await?];
    let mut commits = Vec::new();
    for i in 0..8 {
        let location = if i % 2 == 0 { "us" } else { "eu" };
        commits.push(blob_commit(&format!("repo{}", i % 4), "layer", location)?);
    }
    let results = futures::future::join_all(
        commits
            .iter()
            .enumerate()
            .map(|(i, c)| stores[i % 2].commit_blob(c)),
    )
    .await;
    for result in results {
        result?;
    }
    let digest = blob_digest("layer");
    let Some(record) = stores[0].get_blob(&digest).await? else {
        panic!("committed blob not found");
    };
    assert_eq!(locations(&record), BTreeSet::from([loc("eu")?, loc("us")?]));
    for i in 0..4 {
        let linked = stores[1]
            .repository_blob(&repo(&format!("repo{i}"))?, &digest)
            .await?;
        assert!(linked.is_some(), "repo{i} links the blob");
    }
    Ok(())
}

/// The outbox contract: a commit that asks for replication records one job per target that
/// lacks the blob, and a delete that asks for it one delete job per former location, in the
/// queue the store's `outbox` returns.
pub async fn commits_record_their_jobs_in_the_outbox<H: MetadataHarness>(h: &H) -> Result<()> {
    use quay_core::{JobKind, JobOutbox};
    let store = h.open().await?;
    let Some(outbox) = store.outbox() else {
        panic!(
            "MetadataStore::outbox returned None: this store records no replication jobs, so a \
             registry on it cannot replicate (a wrapper must delegate outbox() too)"
        );
    };
    let mut commit = blob_commit("a", "layer", "us")?;
    commit.replicate_to = vec![loc("eu")?, loc("ap")?];
    store.commit_blob(&commit).await?;
    // Committing again, or in another repository, records nothing twice.
    store.commit_blob(&commit).await?;
    let leases = outbox.claim(10, std::time::Duration::from_secs(60)).await?;
    let mut jobs: Vec<(JobKind, String, String)> = leases
        .iter()
        .map(|l| {
            (
                l.job.spec.kind,
                l.job.spec.digest.to_string(),
                l.job.spec.target.to_string(),
            )
        })
        .collect();
    jobs.sort();
    let d = blob_digest("layer").to_string();
    assert_eq!(
        jobs,
        [
            (JobKind::Replicate, d.clone(), "ap".to_owned()),
            (JobKind::Replicate, d.clone(), "eu".to_owned()),
        ],
        "jobs recorded by the commit"
    );
    outbox.complete_all(&leases).await?;
    assert!(
        store
            .unlink_blob(&repo("a")?, &blob_digest("layer"))
            .await?
    );
    let former = store
        .delete_blob_if_unreferenced(&blob_digest("layer"), true)
        .await?;
    assert_eq!(former, Some(vec![loc("us")?]));
    let leases = outbox.claim(10, std::time::Duration::from_secs(60)).await?;
    let deletes: Vec<(JobKind, String)> = leases
        .iter()
        .map(|l| (l.job.spec.kind, l.job.spec.target.to_string()))
        .collect();
    assert_eq!(deletes, [(JobKind::Delete, "us".to_owned())], "delete jobs");
    outbox.complete_all(&leases).await?;
    Ok(())
}

/// A commit into a location yields to removals of a former copy there: one counted since the
/// commit's read (`removals_seen`) or one running now (a leased delete job) refuses it with a
/// temporary `Unavailable` and records nothing; a delete job still pending is taken over (the
/// commit removes it, so that it never deletes the new copy).
pub async fn commit_blob_yields_to_removals_of_its_location<H: MetadataHarness>(
    h: &H,
) -> Result<()> {
    use quay_core::metadata::PlacementIndex;
    use quay_core::{JobKind, JobOutbox};
    let store = h.open().await?;
    let us = loc("us")?;
    let refused = |result: Result<()>, what: &str| match result {
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{what}: {e}");
            assert!(e.is_temporary(), "{what}: {e}");
        }
        Ok(()) => panic!("{what}: the commit was accepted"),
    };

    // A removal counted since the commit read the count.
    let mut commit = blob_commit("a", "removed since", "us")?;
    let seen = store.removals(&commit.digest, &us).await?;
    store.record_removed_copy(&commit.digest, &us).await?;
    commit.removals_seen = Some(seen);
    refused(store.commit_blob(&commit).await, "removal since the read");
    assert!(
        store.get_blob(&commit.digest).await?.is_none(),
        "nothing recorded"
    );
    commit.removals_seen = Some(store.removals(&commit.digest, &us).await?);
    store.commit_blob(&commit).await?;
    assert!(
        store.get_blob(&commit.digest).await?.is_some(),
        "a fresh read commits"
    );

    let Some(outbox) = store.outbox() else {
        return Ok(());
    };
    // A blob deleted with a delete job for its copy in us, then pushed there again.
    let deleted_then = |seed: &'static str| {
        let store = &store;
        async move {
            let commit = blob_commit("a", seed, "us")?;
            store.commit_blob(&commit).await?;
            assert!(
                store
                    .unlink_blob(&commit.repository, &commit.digest)
                    .await?
            );
            let former = store
                .delete_blob_if_unreferenced(&commit.digest, true)
                .await?;
            assert_eq!(former, Some(vec![loc("us")?]));
            Ok::<_, quay_core::Error>(commit)
        }
    };
    // The delete job is running: the commit is refused.
    let mut running = deleted_then("removal running").await?;
    let leases = outbox.claim(10, std::time::Duration::from_secs(60)).await?;
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].job.spec.kind, JobKind::Delete);
    running.removals_seen = Some(store.removals(&running.digest, &us).await?);
    refused(store.commit_blob(&running).await, "removal running");
    assert!(
        store.get_blob(&running.digest).await?.is_none(),
        "nothing recorded"
    );
    outbox.complete_all(&leases).await?;

    // The delete job is still pending: the commit takes it over.
    let mut pending = deleted_then("removal pending").await?;
    pending.removals_seen = Some(store.removals(&pending.digest, &us).await?);
    store.commit_blob(&pending).await?;
    let Some(record) = store.get_blob(&pending.digest).await? else {
        panic!("the commit that took over a pending removal is not recorded");
    };
    assert_eq!(locations(&record), BTreeSet::from([us.clone()]));
    let left = outbox.claim(10, std::time::Duration::from_secs(60)).await?;
    assert!(left.is_empty(), "the pending delete job is gone: {left:?}");
    Ok(())
}

/// A verified copy (`add_placements`) yields to removals queued at its location, as a commit
/// does: a delete job still pending there is taken over (removed with the placement, so that
/// it never deletes the new copy), a running one (leased) refuses the copy with a temporary
/// `Unavailable`, and each copy of one batch is answered on its own. A copy placed again after
/// it was found bad resolves the recorded problem.
pub async fn add_placements_yield_to_delete_jobs_of_their_location<H: MetadataHarness>(
    h: &H,
) -> Result<()> {
    use quay_core::metadata::{PlacementIndex, PlacementToAdd};
    use quay_core::{JobKind, JobOutbox, JobSpec};
    let store = h.open().await?;
    let Some(outbox) = store.outbox() else {
        return Ok(());
    };
    let (eu, us, ap, sa) = (loc("eu")?, loc("us")?, loc("ap")?, loc("sa")?);
    let commit = blob_commit("a", "layer", "us")?;
    store.commit_blob(&commit).await?;
    let delete = |target: &LocationId| JobSpec {
        kind: JobKind::Delete,
        digest: commit.digest.clone(),
        target: target.clone(),
    };
    let lease = std::time::Duration::from_secs(60);
    // A removal running in ap, one pending in eu; none in sa.
    outbox.enqueue(&[delete(&ap)]).await?;
    let running = outbox.claim(10, lease).await?;
    assert_eq!(running.len(), 1, "the delete job in ap is claimed");
    outbox.enqueue(&[delete(&eu)]).await?;
    let copy = |location: &LocationId| -> Result<PlacementToAdd> {
        Ok(PlacementToAdd {
            digest: commit.digest.clone(),
            location: location.clone(),
            removals_seen: 0,
        })
    };
    let answers = store
        .add_placements(&[copy(&eu)?, copy(&ap)?, copy(&sa)?])
        .await;
    assert_eq!(answers.len(), 3, "one answer per copy");
    let mut answers = answers.into_iter();
    assert!(
        matches!(answers.next(), Some(Ok(true))),
        "a copy where a removal is pending is recorded"
    );
    match answers.next() {
        Some(Err(e)) => {
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            assert!(e.is_temporary(), "{e}");
        }
        other => panic!("a copy where a removal is running must be refused, got {other:?}"),
    }
    assert!(
        matches!(answers.next(), Some(Ok(true))),
        "a copy with no removal in its way is recorded"
    );
    let Some(record) = store.get_blob(&commit.digest).await? else {
        panic!("blob gone");
    };
    assert_eq!(locations(&record), BTreeSet::from([eu.clone(), sa, us]));
    let left = outbox.claim(10, lease).await?;
    assert!(
        left.is_empty(),
        "the pending delete job was taken over: {left:?}"
    );
    assert_eq!(
        outbox.complete_all(&running).await?,
        1,
        "the running one stays"
    );

    // A copy found bad loses its placement; a verified copy placed again forgets the problem.
    use quay_core::{CopyProblem, RepairIndex};
    assert!(
        store
            .record_bad_copy(&commit.digest, &eu, CopyProblem::Corrupt)
            .await?,
        "us holds it too, so eu's placement goes"
    );
    assert_eq!(
        store.bad_copies(10).await?.len(),
        1,
        "the problem is recorded"
    );
    let again = store.add_placements(&[copy(&eu)?]).await;
    assert!(
        matches!(again.as_slice(), [Ok(true)]),
        "the copy is back: {again:?}"
    );
    assert!(
        store.bad_copies(10).await?.is_empty(),
        "a verified copy placed again resolves its problem"
    );
    Ok(())
}

/// Push-time durability: the copies a commit carries are recorded with it, and no
/// replication job is recorded for a location that a copy already fills.
pub async fn commit_records_its_copies_without_jobs_for_them<H: MetadataHarness>(
    h: &H,
) -> Result<()> {
    use quay_core::metadata::PlacementIndex;
    use quay_core::{JobOutbox, PlacedCopy};
    let store = h.open().await?;
    let mut commit = blob_commit("a", "layer", "us")?;
    commit.replicate_to = vec![loc("eu")?, loc("ap")?];
    commit.copies = vec![PlacedCopy {
        location: loc("eu")?,
        removals_seen: store.removals(&commit.digest, &loc("eu")?).await?,
    }];
    store.commit_blob(&commit).await?;
    let Some(record) = store.get_blob(&commit.digest).await? else {
        panic!("committed blob not found");
    };
    assert_eq!(locations(&record), BTreeSet::from([loc("eu")?, loc("us")?]));
    if let Some(outbox) = store.outbox() {
        let leases = outbox.claim(10, std::time::Duration::from_secs(60)).await?;
        let targets: Vec<String> = leases
            .iter()
            .map(|l| l.job.spec.target.to_string())
            .collect();
        assert_eq!(targets, ["ap"], "a job only where no copy was made");
        outbox.complete_all(&leases).await?;
    }
    Ok(())
}
