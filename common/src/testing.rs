//! Test support: the storage and cache backends a test runs against. SQLite and memory always;
//! PostgreSQL and Redis when `CLAWX_TEST_DATABASE_URL` / `CLAWX_TEST_REDIS_URL` are set (as
//! `scripts/test.sh` does), each test isolated in its own schemas and key prefix. With
//! `CLAWX_TEST_REQUIRE_BACKENDS=1` a missing URL fails the test instead of narrowing it.
//!
//! Built only with the `testing` feature, which crates enable from their dev-dependencies, so
//! production builds do not carry it.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use rand::Rng;
use tokio::net::TcpListener;
/// For [`cache_backend_tests!`]: the token that stops a Redis pub/sub listener.
#[doc(hidden)]
pub use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{
    Backends,
    config::DatabaseArgs,
    storage::{Backend, Migrations},
};

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
            args: DatabaseArgs { database_url: Some(url), database_max_connections: 4, database_schema_prefix: format!("t{}_", random_tag()) },
            directory: None,
        })
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

/// A service a test runs in its own process, on a loopback port.
#[derive(Clone, Debug)]
pub struct SpawnedService {
    pub address: SocketAddr,
    /// A connection to the service, for the test's clients.
    pub channel: Channel,
}

/// Binds `127.0.0.1:0`, spawns `run` on that listener (a service's `run(config, listener,
/// shutdown)`) and returns once the server answers health checks, that is once its migrations
/// ran. Panics with the service's error if it stops first, or after 60 seconds.
pub async fn spawn_service<Run, Serving>(run: Run) -> SpawnedService
where
    Run: FnOnce(TcpListener) -> Serving,
    Serving: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let address = listener.local_addr().expect("listener address");
    let task = tokio::spawn(run(listener));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if task.is_finished() {
            match task.await {
                Ok(Ok(())) => panic!("the service at {address} stopped before serving"),
                Ok(Err(error)) => panic!("the service at {address} failed to start: {error:#}"),
                Err(error) => panic!("the service at {address} panicked: {error}"),
            }
        }
        if let Some(channel) = health_checked(address).await {
            return SpawnedService { address, channel };
        }
        assert!(tokio::time::Instant::now() < deadline, "the service at {address} did not serve within 60 seconds");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn health_checked(address: SocketAddr) -> Option<Channel> {
    let endpoint = Channel::from_shared(format!("http://{address}")).expect("valid address");
    let channel = tokio::time::timeout(Duration::from_secs(1), endpoint.connect()).await.ok()?.ok()?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
    let answer = tokio::time::timeout(Duration::from_secs(1), health.check(request)).await.ok()?.ok()?;
    let serving = answer.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    serving.then_some(channel)
}

/// Declares a storage conformance test once and runs it on each database backend as its own
/// test: `name::sqlite` always, `name::postgres` when `CLAWX_TEST_DATABASE_URL` is set (skipped
/// otherwise, failed when `CLAWX_TEST_REQUIRE_BACKENDS=1`). The body receives the
/// [`TestDatabase`] under the name given in parentheses and sees the items of the enclosing
/// module.
///
/// ```ignore
/// clawx_common::backend_tests! {
///     async fn handles_are_unique(test_db) {
///         let database = Database::connect(&test_db.args, "identity").await.unwrap();
///         ...
///     }
/// }
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($($(#[$attribute:meta])* async fn $name:ident($test_db:ident) $body:block)+) => {
        $(
            $(#[$attribute])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn run($test_db: $crate::testing::TestDatabase) $body

                #[tokio::test]
                async fn sqlite() {
                    run($crate::testing::TestDatabase::sqlite()).await;
                }

                #[tokio::test]
                async fn postgres() {
                    if let Some(test_db) = $crate::testing::TestDatabase::postgres() {
                        run(test_db).await;
                    }
                }
            }
        )+
    };
}

/// Like [`backend_tests!`] for cache, rate-limiter and pub/sub suites: `name::memory` always,
/// `name::redis` when `CLAWX_TEST_REDIS_URL` is set (with a fresh key prefix; skipped otherwise,
/// failed when `CLAWX_TEST_REQUIRE_BACKENDS=1`). The body receives the backend's name and its
/// [`Backends`].
#[macro_export]
macro_rules! cache_backend_tests {
    ($($(#[$attribute:meta])* async fn $name:ident($backend:ident, $backends:ident) $body:block)+) => {
        $(
            $(#[$attribute])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn run($backend: &'static str, $backends: $crate::Backends) $body

                #[tokio::test]
                async fn memory() {
                    run("memory", $crate::Backends::memory()).await;
                }

                #[tokio::test]
                async fn redis() {
                    let shutdown = $crate::testing::CancellationToken::new();
                    if let Some(backends) = $crate::testing::redis_backends(&shutdown) {
                        run("redis", backends).await;
                    }
                    shutdown.cancel();
                }
            }
        )+
    };
}

/// Fails unless every `migrations/{postgres,sqlite}/*.sql` file of the crate at `crate_dir` is
/// embedded in its `migrations` under its own version (the file name's number), and both
/// dialects have the same versions. A file left out of `migrations!` would otherwise never run.
pub fn assert_migrations_embedded(crate_dir: impl AsRef<Path>, migrations: &Migrations) {
    let mut versions_of = Vec::new();
    for (dialect, embedded) in [("postgres", migrations.postgres), ("sqlite", migrations.sqlite)] {
        let directory = crate_dir.as_ref().join("migrations").join(dialect);
        let entries = std::fs::read_dir(&directory).unwrap_or_else(|error| panic!("{}: {error}", directory.display()));
        let mut on_disk: Vec<String> = entries
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "sql"))
            .map(|path| path.file_stem().and_then(|stem| stem.to_str()).expect("UTF-8 file name").to_string())
            .collect();
        on_disk.sort();
        let missing: Vec<&String> = on_disk.iter().filter(|name| !embedded.iter().any(|migration| migration.description == name.as_str())).collect();
        assert!(missing.is_empty(), "{}: {missing:?} not embedded in the service's migrations!(...)", directory.display());
        for migration in embedded {
            assert_eq!(
                file_version(migration.description),
                migration.version,
                "{dialect}: {} is embedded as version {}",
                migration.description,
                migration.version
            );
        }
        let versions: Vec<i64> = on_disk.iter().map(|name| file_version(name)).collect();
        let mut unique = versions.clone();
        unique.dedup();
        assert_eq!(unique, versions, "{}: two files share a version: {on_disk:?}", directory.display());
        versions_of.push((dialect, versions));
    }
    let (postgres, sqlite) = (&versions_of[0], &versions_of[1]);
    assert_eq!(postgres.1, sqlite.1, "postgres and sqlite migrations have different versions");
}

/// The version a migration file's name starts with: `0002_accounts` is 2.
fn file_version(name: &str) -> i64 {
    let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("migration {name:?} does not start with its version number"))
}
