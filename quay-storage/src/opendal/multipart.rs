//! S3's native multipart upload (create, upload part, complete, abort, list) as plain signed
//! requests: OpenDAL drives multipart uploads only inside one writer, and a chunked upload
//! spans several requests, maybe on several instances, so its upload id and part ETags live in
//! the database between them.
//!
//! Requests are signed with AWS Signature Version 4 in the `Authorization` header, with an
//! unsigned payload (`UNSIGNED-PAYLOAD`), path-style (`endpoint/bucket/key`).

use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use hmac::{Hmac, Mac};
use quay_core::config::S3Settings;
use quay_core::storage::{MultipartPart, MultipartUpload};
use quay_core::{ByteStream, Error, ErrorKind, Result};
use sha2::{Digest as _, Sha256};

/// Bytes of an answer read for its XML.
const ANSWER_LIMIT: usize = 1 << 20;

/// The signed-request client of one S3 location's multipart uploads.
#[derive(Clone)]
pub(crate) struct S3Multipart {
    client: reqwest::Client,
    /// `scheme://host[:port]`, no trailing slash.
    endpoint: String,
    host: String,
    bucket: String,
    /// The location's folder in the bucket, without slashes around it (may be empty).
    root: String,
    region: String,
    access_key: String,
    secret_key: String,
    name: String,
}

impl S3Multipart {
    /// The client of a path-style S3 location (`None` for virtual-host addressing, which keeps
    /// the writer's multipart uploads only).
    pub(crate) fn new(settings: &S3Settings, name: &str) -> Option<Self> {
        if settings.virtual_host_style {
            return None;
        }
        let endpoint = settings
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", settings.region));
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let host = endpoint
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(&endpoint)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let client = reqwest::Client::builder()
            .pool_idle_timeout(std::time::Duration::from_secs(4))
            .connect_timeout(std::time::Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()
            .ok()?;
        Some(S3Multipart {
            client,
            endpoint,
            host,
            bucket: settings.bucket.clone(),
            root: settings.root.trim_matches('/').to_owned(),
            region: settings.region.clone(),
            access_key: settings.access_key.clone(),
            secret_key: settings.secret_key.expose().to_owned(),
            name: name.to_owned(),
        })
    }

    fn key(&self, path: &str) -> String {
        let path = path.trim_start_matches('/');
        if self.root.is_empty() {
            path.to_owned()
        } else {
            format!("{}/{path}", self.root)
        }
    }

    /// The path of `key` relative to the location's root.
    fn relative(&self, key: &str) -> Option<String> {
        if self.root.is_empty() {
            return Some(key.to_owned());
        }
        key.strip_prefix(&self.root)
            .and_then(|k| k.strip_prefix('/'))
            .map(str::to_owned)
    }

    /// A signed request for the object `key` (or the bucket with `None`) with `query`.
    fn request(
        &self,
        method: reqwest::Method,
        key: Option<&str>,
        query: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let uri = match key {
            Some(key) => format!("/{}/{}", encode(&self.bucket, true), encode(key, false)),
            None => format!("/{}", encode(&self.bucket, true)),
        };
        let mut pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (encode(k, true), encode(v, true)))
            .collect();
        pairs.sort();
        let canonical_query = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let (date, time) = utc_now();
        let amz_date = format!("{date}T{time}Z");
        let payload = "UNSIGNED-PAYLOAD";
        let canonical = format!(
            "{method}\n{uri}\n{canonical_query}\nhost:{}\nx-amz-content-sha256:{payload}\n\
             x-amz-date:{amz_date}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload}",
            self.host
        );
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut key = hmac(
            format!("AWS4{}", self.secret_key).as_bytes(),
            date.as_bytes(),
        );
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
        let url = if canonical_query.is_empty() {
            format!("{}{uri}", self.endpoint)
        } else {
            format!("{}{uri}?{canonical_query}", self.endpoint)
        };
        self.client
            .request(method, url)
            .header("x-amz-date", amz_date)
            .header("x-amz-content-sha256", payload)
            .header(
                reqwest::header::AUTHORIZATION,
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{scope}, \
                     SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}",
                    self.access_key
                ),
            )
    }

    /// Sends `request`; the answer's status and (bounded) body.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
        path: &str,
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, String)> {
        let response = request.send().await.map_err(|e| {
            // The body stream's own error (a client gone), when that is what failed.
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = source {
                if let Some(ours) = err.downcast_ref::<Error>() {
                    return Error::new(ours.kind(), ours.message().to_owned())
                        .set_temporary(ours.is_temporary());
                }
                source = err.source();
            }
            Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{}: {what} of {path} failed: {}",
                    self.name,
                    e.without_url()
                ),
            )
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut text = String::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.len() >= ANSWER_LIMIT {
                break;
            }
        }
        // A `200` of CompleteMultipartUpload may still carry an error.
        if status.is_success() && !text.contains("<Error>") {
            return Ok((status, headers, text));
        }
        let code = tag(&text, "Code").unwrap_or_default();
        let kind = if code == "NoSuchUpload" || status.as_u16() == 404 {
            ErrorKind::NotFound
        } else if code == "NotImplemented" || status.as_u16() == 501 {
            ErrorKind::Unsupported
        } else if status.is_server_error() || status.as_u16() == 429 || code == "InternalError" {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Internal
        };
        Err(Error::new(
            kind,
            format!("{}: {what} of {path} answered {status} {code}", self.name),
        ))
    }

    /// Starts a multipart upload of the object at `path`; returns its upload id.
    pub(crate) async fn start(&self, path: &str) -> Result<String> {
        let key = self.key(path);
        let req = self.request(reqwest::Method::POST, Some(&key), &[("uploads", "")]);
        let (_, _, text) = self.send(req, "CreateMultipartUpload", path).await?;
        tag(&text, "UploadId").ok_or_else(|| {
            Error::new(
                ErrorKind::Internal,
                format!("{}: CreateMultipartUpload gave no upload id", self.name),
            )
        })
    }

    /// Uploads part `number` of `size` bytes; returns its ETag.
    pub(crate) async fn put_part(
        &self,
        path: &str,
        upload_id: &str,
        number: u32,
        data: ByteStream,
        size: u64,
    ) -> Result<String> {
        let key = self.key(path);
        let number = number.to_string();
        let req = self
            .request(
                reqwest::Method::PUT,
                Some(&key),
                &[("partNumber", &number), ("uploadId", upload_id)],
            )
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(data));
        let (_, headers, _) = self.send(req, "UploadPart", path).await?;
        headers
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Internal,
                    format!("{}: UploadPart gave no ETag", self.name),
                )
            })
    }

    /// Completes the upload from `parts`, in part-number order.
    pub(crate) async fn complete(
        &self,
        path: &str,
        upload_id: &str,
        parts: &[MultipartPart],
    ) -> Result<()> {
        let key = self.key(path);
        let mut body = String::from("<CompleteMultipartUpload>");
        for p in parts {
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                p.number,
                xml_escape(&p.etag)
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let req = self
            .request(
                reqwest::Method::POST,
                Some(&key),
                &[("uploadId", upload_id)],
            )
            .header(reqwest::header::CONTENT_TYPE, "application/xml")
            .body(body);
        self.send(req, "CompleteMultipartUpload", path)
            .await
            .map(|_| ())
    }

    /// Aborts the upload; an upload already gone is not an error.
    pub(crate) async fn abort(&self, path: &str, upload_id: &str) -> Result<()> {
        let key = self.key(path);
        let req = self.request(
            reqwest::Method::DELETE,
            Some(&key),
            &[("uploadId", upload_id)],
        );
        match self.send(req, "AbortMultipartUpload", path).await {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// The multipart uploads in progress under `prefix`.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<MultipartUpload>> {
        let prefix_key = self.key(prefix);
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (String::new(), String::new());
        loop {
            let mut query = vec![("uploads", ""), ("prefix", prefix_key.as_str())];
            if !key_marker.is_empty() {
                query.push(("key-marker", &key_marker));
                query.push(("upload-id-marker", &id_marker));
            }
            let req = self.request(reqwest::Method::GET, None, &query);
            let (_, _, text) = self.send(req, "ListMultipartUploads", prefix).await?;
            for upload in text.split("<Upload>").skip(1) {
                let (Some(key), Some(id)) = (tag(upload, "Key"), tag(upload, "UploadId")) else {
                    continue;
                };
                let Some(path) = self.relative(&key) else {
                    continue;
                };
                out.push(MultipartUpload {
                    path,
                    upload_id: id,
                    initiated: tag(upload, "Initiated").and_then(|t| parse_time(&t)),
                });
            }
            if tag(&text, "IsTruncated").as_deref() != Some("true") {
                return Ok(out);
            }
            key_marker = tag(&text, "NextKeyMarker").unwrap_or_default();
            id_marker = tag(&text, "NextUploadIdMarker").unwrap_or_default();
            if key_marker.is_empty() {
                return Ok(out);
            }
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // An HMAC takes a key of any length: `new_from_slice` cannot fail.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// URI-encodes as SigV4 wants: every byte but the unreserved ones (and `/` in a key).
fn encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if !slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn xml_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The text of the first `<name>` element.
fn tag(xml: &str, name: &str) -> Option<String> {
    let (_, rest) = xml.split_once(&format!("<{name}>"))?;
    let (value, _) = rest.split_once(&format!("</{name}>"))?;
    Some(xml_unescape(value))
}

/// Today's date (`YYYYMMDD`) and time (`HHMMSS`) in UTC.
fn utc_now() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60),
    )
}

/// The calendar date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a calendar date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds since the epoch of an S3 timestamp (`2026-12-01T19:20:28.000Z`).
fn parse_time(t: &str) -> Option<i64> {
    let (date, time) = t.split_once('T')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let time = time.trim_end_matches('Z');
    let (hms, _) = time.split_once('.').unwrap_or((time, ""));
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, s) = (parts.next()??, parts.next()??, parts.next()??);
    let days = days_from_civil(y, u32::try_from(m).ok()?, u32::try_from(d).ok()?);
    Some(((days * 86_400) + h * 3600 + mi * 60 + s) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2026, 12, 1), 20_788);
        assert_eq!(civil_from_days(20_788), (2026, 12, 1));
        assert_eq!(
            parse_time("1970-01-02T00:00:01.000Z"),
            Some((86_400 + 1) * 1000)
        );
    }

    #[test]
    fn keys_are_encoded_for_signing() {
        assert_eq!(encode("a b/c~d", false), "a%20b/c~d");
        assert_eq!(encode("a/b", true), "a%2Fb");
    }
}
