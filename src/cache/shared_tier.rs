//! The edge cache's optional shared tier: an S3-compatible bucket behind every
//! replica's disk cache. A replica missing a file reads it from the bucket
//! before asking Dolt, and uploads what it fetched from Dolt, so replicas
//! behind one Service fetch each file from Dolt once between them.
//!
//! The bucket is trusted no more than Dolt: a file read from it is verified
//! like any fill before it reaches the disk tier, and an object that fails is
//! deleted so the next fill goes to Dolt.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::{Path as ObjectPath, PathPart};
use object_store::{ObjectStoreExt, WriteMultipart};

use super::store::Key;
use crate::config::{invalid, ConfigError, SecretSource, Secrets, SharedTierConfig};

/// Upload parts; S3 wants at least 5 MiB for every part but the last.
const PART_BYTES: usize = 8 << 20;
const PARTS_IN_FLIGHT: usize = 2;

/// Bytes of a file, as they arrive from wherever a fill reads them.
pub type ByteStream = BoxStream<'static, Result<Bytes, String>>;

pub struct SharedTier {
    bucket: AmazonS3,
    prefix: Vec<String>,
    /// Where the configuration says the bucket is, for messages.
    shown: String,
}

impl std::fmt::Debug for SharedTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl SharedTier {
    /// The client `[cache.shared]` describes (nothing is contacted yet).
    pub fn build(config: &SharedTierConfig, secrets: &Secrets) -> Result<SharedTier, ConfigError> {
        let key = "cache.shared";
        if !(config.endpoint.starts_with("http://") || config.endpoint.starts_with("https://")) {
            return Err(invalid(format!("{key}.endpoint"), "must be an http:// or https:// URL"));
        }
        if config.bucket.is_empty() {
            return Err(invalid(format!("{key}.bucket"), "name the bucket"));
        }
        if config.prefix.starts_with('/') || config.prefix.ends_with('/') {
            return Err(invalid(format!("{key}.prefix"), "no leading or trailing /"));
        }
        let secret = |name: &str, env: &Option<String>, file: &Option<std::path::PathBuf>| {
            let value = secrets.one_of(&[
                (format!("{key}.{name}_env"), env.as_deref().map(SecretSource::Env)),
                (format!("{key}.{name}_file"), file.as_deref().map(SecretSource::File)),
            ])?;
            let value = value.ok_or_else(|| invalid(format!("{key}.{name}_env"), "set it or the _file form"))?;
            String::from_utf8(value)
                .map(|v| v.trim().to_owned())
                .map_err(|_| invalid(format!("{key}.{name}"), "not UTF-8"))
        };
        let access_key_id = secret("access_key_id", &config.access_key_id_env, &config.access_key_id_file)?;
        let secret_access_key =
            secret("secret_access_key", &config.secret_access_key_env, &config.secret_access_key_file)?;
        // The HTTPS client uses the process's default crypto: the ring provider
        // doltgate is built with (already installed after a reload).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bucket = AmazonS3Builder::new()
            .with_endpoint(&config.endpoint)
            .with_allow_http(config.endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false)
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(access_key_id)
            .with_secret_access_key(secret_access_key)
            .build()
            .map_err(|e| invalid(key, e.to_string()))?;
        let prefix = config.prefix.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
        Ok(SharedTier { bucket, prefix, shown: format!("{}/{}", config.endpoint, config.bucket) })
    }

    fn object(&self, key: &Key) -> ObjectPath {
        let name = key.name.to_string();
        let parts = self.prefix.iter().map(String::as_str).chain(["v1", &key.cluster, &key.store, &name]);
        ObjectPath::from_iter(parts.map(PathPart::from))
    }

    /// The file's bytes from the bucket, or `None` when the bucket lacks it.
    pub async fn read(&self, key: &Key) -> Result<Option<ByteStream>, String> {
        match self.bucket.get(&self.object(key)).await {
            Ok(found) => Ok(Some(found.into_stream().map(|chunk| chunk.map_err(|e| e.to_string())).boxed())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(format!("{}: {err}", self.shown)),
        }
    }

    /// Uploads a verified file, `len` bytes read from `file`.
    pub async fn write(&self, key: &Key, file: Arc<std::fs::File>, len: u64) -> Result<(), String> {
        let failed = |e: object_store::Error| format!("{}: {e}", self.shown);
        let upload = self.bucket.put_multipart(&self.object(key)).await.map_err(failed)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut offset = 0u64;
        while offset < len {
            let size = (len - offset).min(PART_BYTES as u64) as usize;
            let file = file.clone();
            let part = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut buffer = vec![0; size];
                file.read_exact_at(&mut buffer, offset).map(|()| buffer)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("reading the cached file: {e}"))?;
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(failed)?;
            writer.write(&part);
            offset += size as u64;
        }
        writer.finish().await.map_err(failed)?;
        Ok(())
    }

    /// Removes an object that did not verify.
    pub async fn delete(&self, key: &Key) {
        if let Err(err) = self.bucket.delete(&self.object(key)).await {
            tracing::warn!(file = %key, error = %err, "cannot delete a bad object from the shared cache tier");
        }
    }
}
