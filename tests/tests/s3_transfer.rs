//! The runner's artifact and checkpoint transfers (`moetune_platform::s3`) against the real S3: a file over
//! the part size goes up in parts, streamed from disk, and comes back byte for byte; a failed upload
//! leaves no parts behind.

use moetune_e2e::TestEnv;
use moetune_platform::s3::{download_file, upload_file_in_parts};
use sha2::Digest;
use sqlx::PgPool;

const PART: u64 = 5 << 20;

#[sqlx::test(migrations = "../migrations")]
async fn large_files_go_up_in_parts_and_come_back_whole(pool: PgPool) {
    let env = TestEnv::start(pool).await;
    let dir = std::env::temp_dir().join(format!("moetune-s3-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    // Two and a half parts of bytes that differ from part to part.
    let bytes: Vec<u8> = (0..(5 * PART / 2)).map(|i| (i % 251) as u8 ^ (i >> 20) as u8).collect();
    let source = dir.join("model-00001-of-00002.safetensors");
    std::fs::write(&source, &bytes).unwrap();
    let bucket = &env.config.s3.bucket;

    let (size, sha256) = upload_file_in_parts(&env.s3, bucket, "artifacts/big", &source, PART).await.unwrap();
    assert_eq!((size, sha256.as_str()), (bytes.len() as i64, hex::encode(sha2::Sha256::digest(&bytes)).as_str()));
    let head = env.s3.head_object().bucket(bucket).key("artifacts/big").send().await.unwrap();
    assert!(head.e_tag().unwrap().ends_with("-3\""), "three parts: {:?}", head.e_tag());
    let back = dir.join("back");
    assert_eq!(download_file(&env.s3, bucket, "artifacts/big", &back).await.unwrap(), bytes.len() as u64);
    assert!(std::fs::read(&back).unwrap() == bytes);

    // A small file is one request.
    let small = dir.join("config.json");
    std::fs::write(&small, b"{}").unwrap();
    assert_eq!(upload_file_in_parts(&env.s3, bucket, "artifacts/config.json", &small, PART).await.unwrap().0, 2);

    // A read that fails once the multipart upload has started (a directory has a size, but reading it
    // fails): the error comes back and the upload is aborted, leaving no parts behind.
    let unreadable = dir.join("unreadable");
    std::fs::create_dir(&unreadable).unwrap();
    let failed = upload_file_in_parts(&env.s3, bucket, "artifacts/unreadable", &unreadable, 1024).await;
    assert!(failed.is_err());
    let (_, unfinished) = env.stored_objects().await;
    assert_eq!(unfinished, 0, "no multipart upload is left behind");
    std::fs::remove_dir_all(&dir).ok();
}
