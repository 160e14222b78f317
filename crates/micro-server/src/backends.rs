//! The one backend factory: typed config in, trait objects out.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::StoreConfig;

/// Opens the store backend `config` names; `server_dir` is `MICRO_HOME/server`.
pub async fn store(config: &StoreConfig, server_dir: &Path) -> anyhow::Result<Arc<dyn micro_store::Store>> {
    match config.backend.as_str() {
        "memory" => Ok(Arc::new(micro_store::memory::MemoryStore::new())),
        "file" => {
            let path = server_dir.join("store").join("store.redb");
            let store = micro_store::file::FileStore::open(&path)
                .with_context(|| format!("cannot open the store file {}", path.display()))?;
            Ok(Arc::new(store))
        }
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => anyhow::bail!(
            "the postgres store backend is not compiled into this build: rebuild with --features postgres"
        ),
        other => anyhow::bail!("unknown store backend {other:?}: use file, memory or a postgres:// URL"),
    }
}

/// The key config secrets are sealed with: `MICRO_CONFIG_SECRET_KEY` (base64 of 32 bytes) when
/// set, else `server_dir/config_secret_key`, generated (0600) on first boot.
pub fn config_secret_key(server_dir: &Path) -> anyhow::Result<micro_config::SecretKey> {
    match std::env::var("MICRO_CONFIG_SECRET_KEY") {
        Ok(encoded) if !encoded.is_empty() => micro_config::SecretKey::from_base64(&encoded)
            .context("MICRO_CONFIG_SECRET_KEY must be the base64 encoding of 32 random bytes"),
        _ => {
            let path = server_dir.join("config_secret_key");
            micro_config::SecretKey::load_or_create(&path)
                .with_context(|| format!("cannot load the config secret key {}", path.display()))
        }
    }
}
