//! Request artifacts: IIB's directories for request logs and (recursive) related bundles, and
//! the S3 bucket (`IIB_AWS_S3_BUCKET_NAME`, credentials from the standard `AWS_*` variables).

use super::read::Reader;
use super::source::SettingsError;
use super::Environment;
use crate::api::DataDirs;
use crate::artifacts::S3Bucket;
use std::path::PathBuf;

#[derive(Clone, Debug, Default)]
pub struct ArtifactSettings {
    /// `IIB_REQUEST_LOGS_DIR`, `IIB_REQUEST_RELATED_BUNDLES_DIR`,
    /// `IIB_REQUEST_RECURSIVE_RELATED_BUNDLES_DIR` (or IIB's older spelling
    /// `IIB_RECURSIVE_REQUEST_RELATED_BUNDLES_DIR`); unset or empty: not kept.
    pub dirs: DataDirs,
    /// The bucket artifacts also go to, with its client (built once, offline).
    pub s3: Option<S3Bucket>,
}

impl ArtifactSettings {
    /// Each directory with the suffix of the files iib writes there, for the purge.
    pub fn retained_dirs(&self) -> Vec<(PathBuf, &'static str)> {
        [
            (self.dirs.logs.clone(), ".log"),
            (self.dirs.related_bundles.clone(), "_related_bundles.json"),
            (
                self.dirs.nested_bundles.clone(),
                "_recursive_related_bundles.json",
            ),
        ]
        .into_iter()
        .filter_map(|(dir, suffix)| dir.map(|d| (d, suffix)))
        .collect()
    }
}

pub(super) fn read(r: &Reader, env: &Environment) -> Result<ArtifactSettings, SettingsError> {
    let nested = r.optional_path("IIB_REQUEST_RECURSIVE_RELATED_BUNDLES_DIR");
    // Read both spellings either way, so the older one is known to be read.
    let older = r.optional_path("IIB_RECURSIVE_REQUEST_RELATED_BUNDLES_DIR");
    Ok(ArtifactSettings {
        dirs: DataDirs {
            logs: r.optional_path("IIB_REQUEST_LOGS_DIR"),
            related_bundles: r.optional_path("IIB_REQUEST_RELATED_BUNDLES_DIR"),
            nested_bundles: nested.or(older),
        },
        s3: s3(r, env)?,
    })
}

fn s3(r: &Reader, env: &Environment) -> Result<Option<S3Bucket>, SettingsError> {
    let Some(bucket) = r.optional_text("IIB_AWS_S3_BUCKET_NAME") else {
        return Ok(None);
    };
    let (Some(key), Some(secret)) = (
        env.get("AWS_ACCESS_KEY_ID"),
        env.get("AWS_SECRET_ACCESS_KEY"),
    ) else {
        return Err(SettingsError::Invalid {
            key: "IIB_AWS_S3_BUCKET_NAME".into(),
            problem: format!(
                "the bucket is {bucket:?} but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set; set them, or unset IIB_AWS_S3_BUCKET_NAME"
            ),
        });
    };
    let region = env
        .get("AWS_REGION")
        .or_else(|| env.get("AWS_DEFAULT_REGION"))
        .unwrap_or("us-east-1");
    Ok(Some(S3Bucket::new(
        &bucket,
        region,
        env.get("AWS_ENDPOINT_URL"),
        (
            key,
            secret,
            env.get("AWS_SESSION_TOKEN").map(str::to_string),
        ),
    )))
}
