//! The secrets `clawx dev` generates once and keeps in its data directory.

use std::{fs, io::Write, path::Path};

use anyhow::Context;
use clawx_common::{Secret, config::SecretArgs};
use rand::RngCore;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct DevSecrets {
    jwt_secret: String,
    master_key: String,
}

const FILE_NAME: &str = "secrets.json";

/// Loads the data directory's secrets, generating them (readable by the owner only) on first
/// use.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<SecretArgs> {
    let path = data_dir.join(FILE_NAME);
    let secrets = if path.exists() {
        let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str::<DevSecrets>(&text).with_context(|| format!("{} is not valid", path.display()))?
    } else {
        let mut jwt = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut jwt);
        let secrets = DevSecrets { jwt_secret: hex::encode(jwt), master_key: clawx_common::crypto::generate_master_key() };
        write_private(&path, &serde_json::to_vec_pretty(&secrets)?)?;
        tracing::info!(path = %path.display(), "generated development secrets");
        secrets
    };
    Ok(SecretArgs { jwt_secret: Some(Secret::new(secrets.jwt_secret)), master_key: Some(Secret::new(secrets.master_key)), master_keys_retired: None })
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}
