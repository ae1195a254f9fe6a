//! S3 connection settings and client construction shared by the api and the runner.

use serde::Deserialize;

/// Where objects live. Garage on loopback in development and tests; any S3 in production.
#[derive(Debug, Clone, Deserialize)]
pub struct S3Config {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl S3Config {
    pub async fn client(&self) -> aws_sdk_s3::Client {
        let credentials = aws_sdk_s3::config::Credentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            None,
            None,
            "moetune-config",
        );
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(self.region.clone()))
            .credentials_provider(credentials)
            .endpoint_url(&self.endpoint)
            .load()
            .await;
        // Garage (like MinIO) serves buckets on the path, not on virtual-host subdomains.
        let config = aws_sdk_s3::config::Builder::from(&shared).force_path_style(true).build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}
