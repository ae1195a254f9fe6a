//! Streaming writes to S3: small objects in one PUT, large ones as a multipart upload, and nothing
//! left behind when the caller aborts.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;

/// Parts are buffered to this size before upload: bounds memory per upload (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 << 20;

/// An object being written. Bytes are buffered until a part is full; nothing is visible in the
/// bucket until [`StagedObject::commit`], and [`StagedObject::abort`] removes every uploaded part.
pub struct StagedObject {
    client: Client,
    bucket: String,
    key: String,
    buffer: Vec<u8>,
    multipart: Option<Multipart>,
}

struct Multipart {
    upload_id: String,
    parts: Vec<CompletedPart>,
}

impl StagedObject {
    pub fn new(client: Client, bucket: &str, key: &str) -> Self {
        Self { client, bucket: bucket.into(), key: key.into(), buffer: Vec::with_capacity(64 << 10), multipart: None }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= PART_SIZE {
            self.flush_part().await?;
        }
        Ok(())
    }

    async fn flush_part(&mut self) -> anyhow::Result<()> {
        if self.multipart.is_none() {
            let created = self.client.create_multipart_upload().bucket(&self.bucket).key(&self.key).send().await?;
            let upload_id = created.upload_id().ok_or_else(|| anyhow::anyhow!("S3 returned no upload id"))?;
            self.multipart = Some(Multipart { upload_id: upload_id.to_string(), parts: Vec::new() });
        }
        let multipart = self.multipart.as_mut().expect("created above");
        let number = multipart.parts.len() as i32 + 1;
        let body = ByteStream::from(std::mem::take(&mut self.buffer));
        let part = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&multipart.upload_id)
            .part_number(number)
            .body(body)
            .send()
            .await?;
        multipart.parts.push(CompletedPart::builder().part_number(number).set_e_tag(part.e_tag).build());
        Ok(())
    }

    pub async fn commit(mut self) -> anyhow::Result<()> {
        if self.multipart.is_none() {
            let body = ByteStream::from(std::mem::take(&mut self.buffer));
            self.client.put_object().bucket(&self.bucket).key(&self.key).body(body).send().await?;
            return Ok(());
        }
        if !self.buffer.is_empty() {
            self.flush_part().await?;
        }
        let multipart = self.multipart.take().expect("checked above");
        let completed = CompletedMultipartUpload::builder().set_parts(Some(multipart.parts)).build();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(multipart.upload_id)
            .multipart_upload(completed)
            .send()
            .await?;
        Ok(())
    }

    pub async fn abort(self) {
        if let Some(multipart) = self.multipart {
            let aborted = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(multipart.upload_id)
                .send()
                .await;
            if let Err(e) = aborted {
                tracing::error!(key = %self.key, error = %e, "could not abort multipart upload");
            }
        }
    }
}
