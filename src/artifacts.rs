//! Where request artifacts live (request logs, related bundles, recursive related bundles):
//! files in local directories, and, with `IIB_AWS_S3_BUCKET_NAME`, objects in S3 under IIB's
//! keys (`request_logs/{id}.log`, `related_bundles/{id}_related_bundles.json`,
//! `recursive_related_bundles/{id}_recursive_related_bundles.json`).
//!
//! S3 credentials and region come from the standard AWS environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` or
//! `AWS_DEFAULT_REGION`); `AWS_ENDPOINT_URL` points at an S3-compatible server.

use aws_sdk_s3::primitives::ByteStream;

/// The largest artifact read back from S3 to serve: a request's log or related-bundles file
/// is far smaller; a bigger object is not ours to load into the API's memory.
pub const MAX_ARTIFACT_BYTES: usize = 256 << 20;

/// The kinds of artifact, with IIB's S3 prefix and file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    Logs,
    RelatedBundles,
    RecursiveRelatedBundles,
}

impl Artifact {
    pub fn prefix(self) -> &'static str {
        match self {
            Artifact::Logs => "request_logs",
            Artifact::RelatedBundles => "related_bundles",
            Artifact::RecursiveRelatedBundles => "recursive_related_bundles",
        }
    }

    pub fn file_name(self, request_id: u64) -> String {
        match self {
            Artifact::Logs => format!("{request_id}.log"),
            Artifact::RelatedBundles => format!("{request_id}_related_bundles.json"),
            Artifact::RecursiveRelatedBundles => {
                format!("{request_id}_recursive_related_bundles.json")
            }
        }
    }

    pub fn key(self, request_id: u64) -> String {
        format!("{}/{}", self.prefix(), self.file_name(request_id))
    }
}

/// An S3 bucket holding artifacts.
#[derive(Clone)]
pub struct S3Bucket {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl std::fmt::Debug for S3Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Bucket({})", self.bucket)
    }
}

impl S3Bucket {
    /// A bucket reached with these credentials (`endpoint`: an S3-compatible server).
    pub fn new(
        bucket: &str,
        region: &str,
        endpoint: Option<&str>,
        (key, secret, token): (&str, &str, Option<String>),
    ) -> Self {
        let credentials =
            aws_sdk_s3::config::Credentials::new(key, secret, token, None, "environment");
        let mut builder = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(region.to_string()))
            .credentials_provider(credentials);
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint).force_path_style(true);
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: bucket.to_string(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Uploads `bytes` as the artifact of a request.
    pub async fn put(
        &self,
        artifact: Artifact,
        request_id: u64,
        bytes: Vec<u8>,
    ) -> Result<(), String> {
        let key = artifact.key(request_id);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "Unable to upload file {key} to bucket {}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            })
    }

    /// The artifact of a request, if the bucket has it and it is at most `MAX_ARTIFACT_BYTES` (any error reads as absent, as in IIB).
    pub async fn get(&self, artifact: Artifact, request_id: u64) -> Option<Vec<u8>> {
        let key = artifact.key(request_id);
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(object) => {
                let mut body = object.body;
                let mut bytes = Vec::new();
                if object
                    .content_length
                    .is_some_and(|length| length > MAX_ARTIFACT_BYTES as i64)
                {
                    tracing::warn!(
                        key,
                        limit = MAX_ARTIFACT_BYTES,
                        "artifact in S3 too large to serve"
                    );
                    return None;
                }
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.ok()?;
                    if bytes.len() + chunk.len() > MAX_ARTIFACT_BYTES {
                        tracing::warn!(
                            key,
                            limit = MAX_ARTIFACT_BYTES,
                            "artifact in S3 too large to serve"
                        );
                        return None;
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Some(bytes)
            }
            Err(e) => {
                tracing::debug!(key, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "artifact not in S3");
                None
            }
        }
    }
}
