//! Cases of [`UploadStore`](quay_core::UploadStore).

use quay_core::metadata::{now_ms, UploadStore};
use quay_core::{Digest, ErrorKind, Result};

use super::{assert_kind, loc, part, repo, tick, upload_id, MetadataHarness};

/// A new session has no bytes, no parts, and the repository and location it was opened with.
pub async fn create_then_get_upload_returns_empty_session<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let id = upload_id();
    let before = now_ms();
    store
        .create_upload(&id, &repo("library/alpine")?, &loc("us")?)
        .await?;
    let after = now_ms();
    let rec = store.get_upload(&id).await?;
    assert_eq!(rec.id, id);
    assert_eq!(rec.repository, repo("library/alpine")?);
    assert_eq!(rec.location, loc("us")?);
    assert_eq!(rec.size, 0);
    assert!(rec.parts.is_empty());
    assert!(
        (before..=after).contains(&rec.created_at),
        "created_at {}",
        rec.created_at
    );
    assert_eq!(rec.updated_at, rec.created_at);
    Ok(())
}

/// `get_upload` of an id never created fails with `NotFound`.
pub async fn get_unknown_upload_is_not_found<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    assert_kind(
        store.get_upload(&upload_id()).await,
        ErrorKind::NotFound,
        "get_upload of an unknown id",
    );
    Ok(())
}

/// Opening a session under an id in use fails with `Conflict` and keeps the first session.
pub async fn create_upload_with_taken_id_conflicts<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let id = upload_id();
    store.create_upload(&id, &repo("a")?, &loc("us")?).await?;
    assert_kind(
        store.create_upload(&id, &repo("b")?, &loc("eu")?).await,
        ErrorKind::Conflict,
        "create_upload with a taken id",
    );
    assert_eq!(store.get_upload(&id).await?.repository, repo("a")?);
    Ok(())
}

/// Parts add up to the session's size and come back in offset order, digests included.
pub async fn append_parts_grows_upload<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let id = upload_id();
    store.create_upload(&id, &repo("a")?, &loc("us")?).await?;
    let first = part(0, 5, Some(Digest::sha256_of(b"hello")));
    let second = part(5, 3, None);
    assert_eq!(store.append_upload_part(&id, 0, &first).await?, 5);
    tick();
    assert_eq!(store.append_upload_part(&id, 5, &second).await?, 8);
    let rec = store.get_upload(&id).await?;
    assert_eq!(rec.size, 8);
    assert_eq!(rec.parts, vec![first, second]);
    assert!(
        rec.updated_at > rec.created_at,
        "appending moves updated_at"
    );
    Ok(())
}

/// An append that expects a size the session no longer has fails with `Conflict`, and records
/// nothing.
pub async fn append_part_with_stale_size_conflicts<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let id = upload_id();
    store.create_upload(&id, &repo("a")?, &loc("us")?).await?;
    store.append_upload_part(&id, 0, &part(0, 5, None)).await?;
    assert_kind(
        store.append_upload_part(&id, 0, &part(0, 7, None)).await,
        ErrorKind::Conflict,
        "append with a stale size",
    );
    let rec = store.get_upload(&id).await?;
    assert_eq!(rec.size, 5);
    assert_eq!(rec.parts, vec![part(0, 5, None)]);
    Ok(())
}

/// Appending to a session that does not exist fails with `NotFound`.
pub async fn append_part_to_unknown_upload_is_not_found<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    assert_kind(
        store
            .append_upload_part(&upload_id(), 0, &part(0, 5, None))
            .await,
        ErrorKind::NotFound,
        "append to an unknown session",
    );
    Ok(())
}

/// A part must start at the expected size and hold bytes; otherwise `InvalidInput`, and the
/// session is unchanged.
pub async fn append_part_at_wrong_offset_is_invalid<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let id = upload_id();
    store.create_upload(&id, &repo("a")?, &loc("us")?).await?;
    assert_kind(
        store.append_upload_part(&id, 0, &part(3, 5, None)).await,
        ErrorKind::InvalidInput,
        "append at an offset other than the expected size",
    );
    assert_kind(
        store.append_upload_part(&id, 0, &part(0, 0, None)).await,
        ErrorKind::InvalidInput,
        "append of an empty part",
    );
    assert_eq!(store.get_upload(&id).await?.size, 0);
    Ok(())
}

/// Two chunks racing for the same offset: exactly one wins, the other gets `Conflict`.
pub async fn concurrent_appends_at_one_size_let_one_win<H: MetadataHarness>(h: &H) -> Result<()> {
    let (one, two) = (h.open().await?, h.open().await?);
    let id = upload_id();
    one.create_upload(&id, &repo("a")?, &loc("us")?).await?;
    let mut a = part(0, 4, None);
    a.path = "uploads/test/a".into();
    let mut b = part(0, 6, None);
    b.path = "uploads/test/b".into();
    let (ra, rb) = futures::join!(
        one.append_upload_part(&id, 0, &a),
        two.append_upload_part(&id, 0, &b)
    );
    let winner = match (ra, rb) {
        (Ok(4), Err(e)) if e.kind() == ErrorKind::Conflict => a,
        (Err(e), Ok(6)) if e.kind() == ErrorKind::Conflict => b,
        other => panic!("expected one success and one conflict, got {other:?}"),
    };
    let rec = one.get_upload(&id).await?;
    assert_eq!(rec.size, winner.size);
    assert_eq!(rec.parts, vec![winner]);
    Ok(())
}

/// Deleting a session removes it and its parts.
pub async fn delete_upload_removes_session_and_parts<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let id = upload_id();
    store.create_upload(&id, &repo("a")?, &loc("us")?).await?;
    store.append_upload_part(&id, 0, &part(0, 5, None)).await?;
    store.delete_upload(&id).await?;
    assert_kind(
        store.get_upload(&id).await,
        ErrorKind::NotFound,
        "get after delete",
    );
    assert!(store.stale_uploads(now_ms() + 60_000, 10).await?.is_empty());
    // The id is free again, and the new session starts empty.
    store.create_upload(&id, &repo("a")?, &loc("us")?).await?;
    assert!(store.get_upload(&id).await?.parts.is_empty());
    Ok(())
}

/// Deleting an unknown session succeeds.
pub async fn delete_unknown_upload_is_ok<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    store.delete_upload(&upload_id()).await?;
    Ok(())
}

/// Open sessions are counted per repository; a deleted session no longer counts.
pub async fn uploads_are_counted_per_repository<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let (counted, other) = (repo("counted/app")?, repo("counted/other")?);
    assert_eq!(store.count_uploads(&counted).await?, 0);
    let (a, b, c) = (upload_id(), upload_id(), upload_id());
    store.create_upload(&a, &counted, &loc("us")?).await?;
    store.create_upload(&b, &counted, &loc("eu")?).await?;
    store.create_upload(&c, &other, &loc("us")?).await?;
    assert_eq!(store.count_uploads(&counted).await?, 2);
    assert_eq!(store.count_uploads(&other).await?, 1);
    store.delete_upload(&a).await?;
    assert_eq!(store.count_uploads(&counted).await?, 1);
    Ok(())
}

/// Sessions idle since before the cut-off come back oldest first, with their parts, at most
/// `limit` of them.
pub async fn stale_uploads_are_oldest_first_and_limited<H: MetadataHarness>(h: &H) -> Result<()> {
    let store = h.open().await?;
    let (a, b, c, d) = (upload_id(), upload_id(), upload_id(), upload_id());
    for id in [&a, &b, &c] {
        store.create_upload(id, &repo("a")?, &loc("us")?).await?;
        tick();
    }
    // Touching `a` makes it the most recently updated of the three.
    store.append_upload_part(&a, 0, &part(0, 5, None)).await?;
    tick();
    let cutoff = now_ms();
    tick();
    store.create_upload(&d, &repo("a")?, &loc("us")?).await?;

    let stale = store.stale_uploads(cutoff, 10).await?;
    let ids: Vec<&str> = stale.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [b.as_str(), c.as_str(), a.as_str()]);
    assert_eq!(stale[2].parts, vec![part(0, 5, None)]);
    assert_eq!(stale[2].size, 5);

    let first_two = store.stale_uploads(cutoff, 2).await?;
    let ids: Vec<&str> = first_two.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [b.as_str(), c.as_str()]);
    assert!(store.stale_uploads(cutoff, 0).await?.is_empty());
    Ok(())
}

/// A session lives in the database: a part appended through one instance is seen, and
/// guarded, by another.
pub async fn upload_survives_across_two_store_instances<H: MetadataHarness>(h: &H) -> Result<()> {
    let (one, two) = (h.open().await?, h.open().await?);
    let id = upload_id();
    one.create_upload(&id, &repo("a")?, &loc("us")?).await?;
    one.append_upload_part(&id, 0, &part(0, 5, None)).await?;
    let seen = two.get_upload(&id).await?;
    assert_eq!(seen.size, 5);
    assert_eq!(seen.parts, vec![part(0, 5, None)]);
    assert_eq!(two.append_upload_part(&id, 5, &part(5, 2, None)).await?, 7);
    assert_eq!(one.get_upload(&id).await?.size, 7);
    assert_kind(
        one.append_upload_part(&id, 5, &part(5, 1, None)).await,
        ErrorKind::Conflict,
        "append through the instance that missed the other's chunk",
    );
    Ok(())
}
