//! A dataset stream written to S3 while every line is validated and the bytes are hashed: the one
//! path by which training data enters storage (direct uploads and assembled multi-part uploads). Holds
//! at most one line and three S3 parts (one filling, two being sent) in memory, whatever the file's
//! size.

use moetune_types::dataset::LineSplitter;
use moetune_types::{DatasetSummary, DatasetValidator, LineError};
use sha2::{Digest, Sha256};

use crate::storage::StagedObject;

/// What the whole stream held, once it has ended.
pub struct Finished {
    pub bytes: i64,
    pub sha256: String,
    /// The summary, or the line errors (the first 20) and how many lines had one.
    pub validation: Result<DatasetSummary, (Vec<LineError>, u64)>,
}

pub struct ValidatingSink {
    object: StagedObject,
    validator: DatasetValidator,
    splitter: LineSplitter,
    hasher: Sha256,
    bytes: i64,
}

impl ValidatingSink {
    pub fn new(s3: aws_sdk_s3::Client, bucket: &str, key: &str) -> Self {
        Self {
            object: StagedObject::new(s3, bucket, key),
            validator: DatasetValidator::new(),
            splitter: LineSplitter::new(),
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub async fn write(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.bytes += chunk.len() as i64;
        self.hasher.update(chunk);
        self.splitter.feed(chunk, &mut self.validator);
        self.object.write(chunk).await
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> i64 {
        self.bytes
    }

    /// Ends the stream. The object stays staged: `commit` makes it visible, `abort` removes it.
    pub fn finish(self) -> (Finished, StagedObject) {
        let Self { object, mut validator, splitter, hasher, bytes } = self;
        splitter.finish(&mut validator);
        let finished = Finished { bytes, sha256: hex::encode(hasher.finalize()), validation: validator.finish() };
        (finished, object)
    }

    pub async fn abort(self) {
        self.object.abort().await;
    }
}

/// One sentence for people: how many lines are wrong and the first few, with line numbers.
pub fn describe_problems(lines: &[LineError], total: u64) -> String {
    if lines.first().is_some_and(|l| l.line == 0) {
        return "Invalid file: the file is empty; upload JSONL with one training example per line.".to_string();
    }
    let shown: Vec<String> = lines.iter().take(5).map(|l| format!("line {}: {}", l.line, l.message)).collect();
    let more = if total as usize > shown.len() { format!(" (and {} more)", total as usize - shown.len()) } else { String::new() };
    format!("Invalid file: {total} line(s) have problems. {}{more}", shown.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use moetune_types::dataset::MAX_LINE_BYTES;

    fn validate(chunks: &[&[u8]]) -> Result<DatasetSummary, (Vec<LineError>, u64)> {
        let mut validator = DatasetValidator::new();
        let mut splitter = LineSplitter::new();
        for chunk in chunks {
            splitter.feed(chunk, &mut validator);
        }
        splitter.finish(&mut validator);
        validator.finish()
    }

    /// Lines are the same whatever the chunk boundaries: within a chunk, across chunks, a CRLF split
    /// between chunks, an oversized line split anywhere, and a last line without a newline.
    #[test]
    fn chunk_boundaries_do_not_change_the_lines() {
        let good = r#"{"prompt": "2+2=", "completion": "4"}"#;
        let mut file = format!("{good}\n{good}\r\n\n{{\"prompt\": 1}}\n").into_bytes();
        file.extend(b"{\"prompt\": \"");
        file.extend(std::iter::repeat_n(b'a', MAX_LINE_BYTES));
        file.extend(format!("\", \"completion\": \"b\"}}\n{good}\n{good}").as_bytes());
        let whole = validate(&[&file]);
        let (errors, count) = whole.clone().expect_err("the file has bad lines");
        assert_eq!(count, 3, "{errors:?}");
        assert_eq!(errors.iter().map(|e| e.line).collect::<Vec<_>>(), [3, 4, 5]);
        for size in [1, 2, 3, 7, 64, 4096, MAX_LINE_BYTES - 1, MAX_LINE_BYTES + 13] {
            let chunks: Vec<&[u8]> = file.chunks(size).collect();
            assert_eq!(validate(&chunks), whole, "chunks of {size} bytes");
        }
        // A line of exactly the limit is accepted whether or not it arrives in one piece.
        let padding = MAX_LINE_BYTES - r#"{"prompt": "", "completion": "b"}"#.len();
        let at_limit = format!("{{\"prompt\": \"{}\", \"completion\": \"b\"}}\n", "a".repeat(padding)).into_bytes();
        assert_eq!(at_limit.len(), MAX_LINE_BYTES + 1);
        assert!(validate(&[&at_limit]).is_ok());
        assert!(validate(&at_limit.chunks(1000).collect::<Vec<_>>()).is_ok());
    }
}
