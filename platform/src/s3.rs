//! S3 connection settings and client construction shared by the api and the runner.

use serde::Deserialize;

/// Where objects live. SeaweedFS on loopback in development and tests; any S3 (AWS, MinIO, Garage,
/// SeaweedFS) in production.
#[derive(Debug, Clone, Deserialize)]
pub struct S3Config {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl S3Config {
    /// Builds the client from these settings alone (no AWS profile or environment lookup), so a
    /// runner's credentials come only from moetune's own configuration.
    pub fn client(&self) -> aws_sdk_s3::Client {
        use aws_sdk_s3::config::{BehaviorVersion, Builder, Credentials, Region};
        let credentials =
            Credentials::new(&self.access_key_id, &self.secret_access_key, None, None, "moetune-config");
        let config = Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .credentials_provider(credentials)
            .endpoint_url(&self.endpoint)
            // Local S3 servers (SeaweedFS, MinIO, Garage) serve buckets on the path, not on subdomains.
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }
}

/// Files up to this size go up in one request; larger ones in parts of this size, one in memory at a
/// time (S3 allows 10,000 parts: objects up to 625 GiB).
pub const PART_BYTES: u64 = 64 << 20;

/// Uploads the file at `path` to `bucket`/`key`, streamed from disk; returns its size and sha256.
pub async fn upload_file(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, path: &std::path::Path) -> anyhow::Result<(i64, String)> {
    upload_file_in_parts(s3, bucket, key, path, PART_BYTES).await
}

/// [`upload_file`] with parts of `part_bytes` (at least S3's 5 MiB). A multipart upload that fails is
/// aborted, so no parts are left behind.
pub async fn upload_file_in_parts(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, path: &std::path::Path, part_bytes: u64) -> anyhow::Result<(i64, String)> {
    use anyhow::Context;
    use aws_sdk_s3::primitives::ByteStream;
    use sha2::{Digest, Sha256};
    let size = tokio::fs::metadata(path).await.with_context(|| format!("reading {}", path.display()))?.len();
    if size <= part_bytes {
        let bytes = tokio::fs::read(path).await?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        s3.put_object().bucket(bucket).key(key).body(ByteStream::from(bytes)).send().await.with_context(|| format!("uploading {key}"))?;
        return Ok((size as i64, sha256));
    }
    let created = s3.create_multipart_upload().bucket(bucket).key(key).send().await.with_context(|| format!("starting the upload of {key}"))?;
    let upload_id = created.upload_id().context("S3 returned no upload id")?.to_string();
    let uploaded = upload_parts(s3, bucket, key, &upload_id, path, part_bytes).await;
    if uploaded.is_err() {
        // Best effort: a bucket lifecycle rule for incomplete uploads is the backstop.
        let _ = s3.abort_multipart_upload().bucket(bucket).key(key).upload_id(&upload_id).send().await;
    }
    Ok((size as i64, uploaded?))
}

async fn upload_parts(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, upload_id: &str, path: &std::path::Path, part_bytes: u64) -> anyhow::Result<String> {
    use anyhow::Context;
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await?;
    let (mut hasher, mut parts) = (Sha256::new(), Vec::new());
    for number in 1.. {
        let mut part = Vec::with_capacity(part_bytes as usize);
        (&mut file).take(part_bytes).read_to_end(&mut part).await?;
        if part.is_empty() {
            break;
        }
        hasher.update(&part);
        let sent = s3.upload_part().bucket(bucket).key(key).upload_id(upload_id).part_number(number).body(ByteStream::from(part)).send().await;
        let etag = sent.with_context(|| format!("uploading part {number} of {key}"))?.e_tag().context("S3 returned no ETag for a part")?.to_string();
        parts.push(CompletedPart::builder().part_number(number).e_tag(etag).build());
    }
    let completed = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
    s3.complete_multipart_upload().bucket(bucket).key(key).upload_id(upload_id).multipart_upload(completed).send().await.with_context(|| format!("completing the upload of {key}"))?;
    Ok(hex::encode(hasher.finalize()))
}

/// The bytes stored under `prefix/` (every page of the listing).
pub async fn prefix_bytes(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> anyhow::Result<i64> {
    let mut pages = s3.list_objects_v2().bucket(bucket).prefix(format!("{prefix}/")).into_paginator().send();
    let mut total = 0;
    while let Some(page) = pages.next().await {
        total += page?.contents().iter().map(|o| o.size().unwrap_or(0)).sum::<i64>();
    }
    Ok(total)
}

/// Downloads `bucket`/`key` into `path`, streamed to disk (never whole in memory).
pub async fn download_file(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, path: &std::path::Path) -> anyhow::Result<u64> {
    use anyhow::Context;
    use tokio::io::AsyncWriteExt;
    let object = s3.get_object().bucket(bucket).key(key).send().await.with_context(|| format!("downloading s3://{bucket}/{key}"))?;
    let mut body = object.body;
    let mut file = tokio::fs::File::create(path).await.with_context(|| format!("creating {}", path.display()))?;
    let mut written = 0u64;
    while let Some(chunk) = body.try_next().await.with_context(|| format!("downloading s3://{bucket}/{key}"))? {
        file.write_all(&chunk).await?;
        written += chunk.len() as u64;
    }
    file.flush().await?;
    Ok(written)
}
