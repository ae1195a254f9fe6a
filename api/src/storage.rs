//! Streaming writes to S3: small objects in one PUT, large ones as a multipart upload, and nothing
//! left behind when the caller aborts.

use std::collections::VecDeque;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;

/// Parts are buffered to this size before upload: bounds memory per upload (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 << 20;

/// Parts being sent while the next one fills. Sending a part waits on the store (it receives, hashes
/// and writes 8 MiB); with parts in flight that wait overlaps reading and validating the next part
/// instead of stalling the client's stream. Memory per upload stays under (1 + this) × `PART_SIZE`.
const PARTS_IN_FLIGHT: usize = 2;

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
    /// Parts being sent, oldest first; each yields its `CompletedPart`.
    in_flight: VecDeque<tokio::task::JoinHandle<anyhow::Result<CompletedPart>>>,
}

impl Multipart {
    /// Waits for the oldest part in flight and records it.
    async fn settle_oldest(&mut self) -> anyhow::Result<()> {
        if let Some(sending) = self.in_flight.pop_front() {
            self.parts.push(sending.await??);
        }
        Ok(())
    }
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
            self.multipart = Some(Multipart { upload_id: upload_id.to_string(), parts: Vec::new(), in_flight: VecDeque::new() });
        }
        let multipart = self.multipart.as_mut().expect("created above");
        if multipart.in_flight.len() >= PARTS_IN_FLIGHT {
            multipart.settle_oldest().await?;
        }
        // Parts are numbered from 1 in the order they were filled: those done, then those in flight.
        let number = (multipart.parts.len() + multipart.in_flight.len()) as i32 + 1;
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&multipart.upload_id)
            .part_number(number)
            // The next part's buffer is sized at once (PART_SIZE plus room for the usual 64 KiB chunk
            // that crosses it) rather than grown by doubling, which would copy it several times.
            .body(ByteStream::from(std::mem::replace(&mut self.buffer, Vec::with_capacity(PART_SIZE + (64 << 10)))));
        multipart.in_flight.push_back(tokio::spawn(async move {
            let part = request.send().await?;
            Ok(CompletedPart::builder().part_number(number).set_e_tag(part.e_tag).build())
        }));
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
        let mut multipart = self.multipart.take().expect("checked above");
        while !multipart.in_flight.is_empty() {
            if let Err(e) = multipart.settle_oldest().await {
                // The caller only aborts what it still holds: clean up here.
                Self::abort_multipart(&self.client, &self.bucket, &self.key, multipart).await;
                return Err(e);
            }
        }
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
            Self::abort_multipart(&self.client, &self.bucket, &self.key, multipart).await;
        }
    }

    /// Lets the parts in flight finish first (a part that lands after the abort would be left
    /// behind), then aborts the upload, which deletes every part.
    async fn abort_multipart(client: &Client, bucket: &str, key: &str, mut multipart: Multipart) {
        for sending in multipart.in_flight.drain(..) {
            let _ = sending.await;
        }
        let aborted = client.abort_multipart_upload().bucket(bucket).key(key).upload_id(multipart.upload_id).send().await;
        if let Err(e) = aborted {
            tracing::error!(key = %key, error = %e, "could not abort multipart upload");
        }
    }
}
