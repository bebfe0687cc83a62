//! Test support: the storage and cache backends a test runs against. SQLite and memory always;
//! PostgreSQL and Redis when `CLAWX_TEST_DATABASE_URL` / `CLAWX_TEST_REDIS_URL` are set (as
//! `scripts/test.sh` does), each test isolated in its own schemas and key prefix. With
//! `CLAWX_TEST_REQUIRE_BACKENDS=1` a missing URL fails the test instead of narrowing it.

use std::path::PathBuf;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::{Backends, config::DatabaseArgs, storage::Backend};

fn required() -> bool {
    std::env::var("CLAWX_TEST_REQUIRE_BACKENDS").is_ok_and(|value| value == "1")
}

fn random_tag() -> String {
    format!("{:010x}", rand::thread_rng().r#gen::<u64>() & 0xff_ffff_ffff)
}

/// A database under test. SQLite files live in a temporary directory removed on drop.
#[derive(Debug)]
pub struct TestDatabase {
    pub backend: Backend,
    pub args: DatabaseArgs,
    directory: Option<PathBuf>,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(directory) = &self.directory {
            let _ = std::fs::remove_dir_all(directory);
        }
    }
}

impl TestDatabase {
    pub fn sqlite() -> TestDatabase {
        let directory = std::env::temp_dir().join(format!("clawx-test-{}", random_tag()));
        std::fs::create_dir_all(&directory).expect("temporary directory");
        TestDatabase {
            backend: Backend::Sqlite,
            args: DatabaseArgs {
                database_url: Some(format!("sqlite://{}/{{service}}.db", directory.display())),
                database_max_connections: 4,
                database_schema_prefix: String::new(),
            },
            directory: Some(directory),
        }
    }

    /// PostgreSQL with a fresh schema prefix, if configured.
    pub fn postgres() -> Option<TestDatabase> {
        let url = match std::env::var("CLAWX_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                assert!(!required(), "CLAWX_TEST_DATABASE_URL is required (CLAWX_TEST_REQUIRE_BACKENDS=1)");
                return None;
            }
        };
        Some(TestDatabase {
            backend: Backend::Postgres,
            args: DatabaseArgs {
                database_url: Some(url),
                database_max_connections: 4,
                database_schema_prefix: format!("t{}_", random_tag()),
            },
            directory: None,
        })
    }

    /// Every database backend available to this run.
    pub fn all() -> Vec<TestDatabase> {
        let mut all = vec![TestDatabase::sqlite()];
        all.extend(TestDatabase::postgres());
        all
    }
}

/// Memory backends, plus Redis ones with a fresh key prefix when configured.
pub fn all_backends(shutdown: &CancellationToken) -> Vec<(&'static str, Backends)> {
    let mut all = vec![("memory", Backends::memory())];
    all.extend(redis_backends(shutdown).map(|backends| ("redis", backends)));
    all
}

/// Redis backends with a fresh key prefix, if configured.
pub fn redis_backends(shutdown: &CancellationToken) -> Option<Backends> {
    match std::env::var("CLAWX_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            let prefix = format!("clawx-test-{}", random_tag());
            Some(Backends::redis(&url, &prefix, shutdown.clone()).expect("CLAWX_TEST_REDIS_URL is valid"))
        }
        _ => {
            assert!(!required(), "CLAWX_TEST_REDIS_URL is required (CLAWX_TEST_REQUIRE_BACKENDS=1)");
            None
        }
    }
}
