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
