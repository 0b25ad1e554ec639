//! Every route of the OCI Distribution API, with its error cases, run in-process on SQLite and
//! on PostgreSQL. PostgreSQL must be running: these tests fail (they never skip) without it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic on failure by design

mod cases {
    pub mod blobs;
    pub mod manifests;
}
mod common;

use common::{Backend, Server};

macro_rules! api_tests {
    ($backend:ident, $kind:expr; $($module:ident::$case:ident),* $(,)?) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = Server::start($kind).await;
                    cases::$module::$case(&server).await;
                }
            )*
        }
    };
}

macro_rules! all_cases {
    ($backend:ident, $kind:expr) => {
        api_tests!($backend, $kind;
            blobs::base_endpoint_answers_with_api_version,
            blobs::monolithic_push_then_get_and_head,
            blobs::chunked_upload_in_order,
            blobs::out_of_order_chunk_is_416_and_session_survives,
            blobs::streamed_patch_and_last_chunk_in_put,
            blobs::digest_mismatch_records_and_stores_nothing,
            blobs::put_without_or_with_malformed_digest_is_digest_invalid,
            blobs::unknown_upload_is_blob_upload_unknown,
            blobs::cancel_removes_session_and_parts,
            blobs::malformed_or_short_content_range_is_refused,
            blobs::unknown_and_invalid_blob_digests,
            blobs::ranged_reads,
            blobs::delete_blob,
            blobs::delete_keeps_blob_linked_elsewhere,
            blobs::cross_repository_mount,
            blobs::blobs_are_scoped_to_repositories,
            blobs::empty_and_sha512_blobs,
            blobs::invalid_names_are_name_invalid,
            blobs::unsupported_method_is_405,
            blobs::chunks_may_alternate_between_instances,
            manifests::manifest_by_tag_and_digest_returns_exact_bytes,
            manifests::manifest_put_answers_location_and_digest,
            manifests::manifest_by_digest_must_match,
            manifests::manifest_with_unknown_blob_is_refused,
            manifests::invalid_manifests_are_manifest_invalid,
            manifests::oversized_manifest_is_413,
            manifests::unknown_or_invalid_reference_is_404,
            manifests::accept_header_negotiation,
            manifests::delete_manifest_and_tags,
            manifests::index_and_docker_types,
            manifests::tags_list_sorted_and_paged,
            manifests::tags_of_unknown_repository_is_name_unknown,
            manifests::referrers_with_artifact_type_filter,
            manifests::catalog_sorted_and_paged,
        );
    };
}

all_cases!(sqlite, Backend::Sqlite);
all_cases!(postgres, Backend::Postgres);
