//! Database connection by URL scheme, one PostgreSQL schema or SQLite file per service, and
//! per-dialect migrations embedded in the binary.

use std::{borrow::Cow, path::PathBuf, str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    ConnectOptions, Connection, Executor, PgPool, SqlSafeStr, SqlitePool,
    migrate::{Migration, MigrationType, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use crate::config::DatabaseArgs;

/// One migration, embedded with `include_str!`.
#[derive(Clone, Copy, Debug)]
pub struct EmbeddedMigration {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

/// A service's migrations for both dialects.
#[derive(Clone, Copy, Debug)]
pub struct Migrations {
    pub postgres: &'static [EmbeddedMigration],
    pub sqlite: &'static [EmbeddedMigration],
}

/// Declares a service's migrations from `migrations/{postgres,sqlite}/<file>.sql`, relative to
/// the crate root: `migrations!(1 => "0001_init")`.
#[macro_export]
macro_rules! migrations {
    ($($version:literal => $file:literal),+ $(,)?) => {
        $crate::storage::Migrations {
            postgres: &[$($crate::storage::EmbeddedMigration {
                version: $version,
                description: $file,
                sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres/", $file, ".sql")),
            }),+],
            sqlite: &[$($crate::storage::EmbeddedMigration {
                version: $version,
                description: $file,
                sql: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite/", $file, ".sql")),
            }),+],
        }
    };
}

fn migrator(list: &'static [EmbeddedMigration]) -> Migrator {
    let migrations = list
        .iter()
        .map(|migration| {
            Migration::new(migration.version, Cow::Borrowed(migration.description), MigrationType::Simple, migration.sql.into_sql_str(), false)
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// Which database engine a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn of_url(url: &str) -> anyhow::Result<Backend> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            anyhow::bail!("unsupported database URL: expected postgres://... or sqlite://...")
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// A service's connection pool.
#[derive(Clone, Debug)]
pub enum Database {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// The SQLite file a service uses for a `sqlite:` URL: `{service}` is replaced, otherwise
/// `-<service>` goes before the extension.
pub fn sqlite_path_for(url: &str, service: &str) -> anyhow::Result<PathBuf> {
    let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).context("not a sqlite URL")?;
    let path = path.split('?').next().unwrap_or(path);
    anyhow::ensure!(!path.is_empty() && path != ":memory:", "a sqlite URL must name a file");
    if path.contains("{service}") {
        return Ok(PathBuf::from(path.replace("{service}", service)));
    }
    let path = PathBuf::from(path);
    let stem = path.file_stem().and_then(|stem| stem.to_str()).unwrap_or("clawx");
    let file = match path.extension().and_then(|ext| ext.to_str()) {
        Some(ext) => format!("{stem}-{service}.{ext}"),
        None => format!("{stem}-{service}"),
    };
    Ok(path.with_file_name(file))
}

/// Creates `path` empty and readable by its owner only (0600) unless it exists. SQLite would
/// create it with the umask's default (usually 0644), and on Unix it gives the `-wal` and `-shm`
/// files it creates later the database file's own permissions, so this covers all three.
fn create_private_file(path: &std::path::Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

/// The PostgreSQL schema a service uses.
pub fn schema_for(args: &DatabaseArgs, service: &str) -> String {
    format!("{}{}", args.database_schema_prefix, service)
}

fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Prepared statements each PostgreSQL connection keeps.
const STATEMENT_CACHE_CAPACITY: usize = 1024;

impl Database {
    /// Connects the pool of `service`, creating its schema or file when missing.
    pub async fn connect(args: &DatabaseArgs, service: &str) -> anyhow::Result<Database> {
        let url = args.database_url.as_deref().context("CLAWX_DATABASE_URL is not set (postgres://... or sqlite://path)")?;
        match Backend::of_url(url)? {
            Backend::Postgres => {
                let schema = schema_for(args, service);
                anyhow::ensure!(valid_identifier(&schema), "schema name {schema:?} must be lowercase letters, digits and _");
                let options = PgConnectOptions::from_str(url)
                    .context("invalid PostgreSQL URL")?
                    .application_name(&format!("clawx-{service}"))
                    // A multi-row statement has one text per row count (e.g. the mailboxes and
                    // conversations a batch of up to 256 messages creates): keep them all prepared
                    // rather than preparing again, one more round trip, when sqlx's default of 100
                    // evicts them.
                    .statement_cache_capacity(STATEMENT_CACHE_CAPACITY)
                    .log_statements(tracing::log::LevelFilter::Trace);
                // The schema must exist before pooled connections put it on their search path.
                let mut admin = options.connect().await.context("cannot connect to PostgreSQL")?;
                admin
                    .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")))
                    .await
                    .or_else(|error| match &error {
                        // Two services racing to create the same schema.
                        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => Ok(Default::default()),
                        _ => Err(error),
                    })
                    .with_context(|| format!("cannot create schema {schema}"))?;
                admin.close().await.ok();
                let pool = PgPoolOptions::new()
                    .max_connections(args.database_max_connections.max(1))
                    .acquire_timeout(Duration::from_secs(10))
                    // sqlx tests each connection with a round trip before handing it out (its
                    // default, kept on purpose): a connection the server ended while it sat in
                    // the pool, however briefly, is replaced rather than failing a request.
                    .connect_with(options.options([("search_path", schema.as_str())]))
                    .await
                    .context("cannot open PostgreSQL pool")?;
                Ok(Database::Postgres(pool))
            }
            Backend::Sqlite => {
                let path = sqlite_path_for(url, service)?;
                if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
                }
                create_private_file(&path).with_context(|| format!("cannot create SQLite database {}", path.display()))?;
                let options = SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10))
                    .log_statements(tracing::log::LevelFilter::Trace);
                let pool = SqlitePoolOptions::new()
                    .max_connections(args.database_max_connections.clamp(1, 16))
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(options)
                    .await
                    .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
                Ok(Database::Sqlite(pool))
            }
        }
    }

    /// Applies the migrations that have not run yet.
    pub async fn migrate(&self, migrations: &Migrations) -> anyhow::Result<()> {
        match self {
            Database::Postgres(pool) => migrator(migrations.postgres).run(pool).await?,
            Database::Sqlite(pool) => migrator(migrations.sqlite).run(pool).await?,
        }
        Ok(())
    }

    /// The pool's largest number of connections.
    pub fn max_connections(&self) -> u32 {
        match self {
            Database::Postgres(pool) => pool.options().get_max_connections(),
            Database::Sqlite(pool) => pool.options().get_max_connections(),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Database::Postgres(_) => Backend::Postgres,
            Database::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Whether a trivial query succeeds within two seconds.
    pub async fn ping(&self) -> bool {
        let query = async {
            match self {
                Database::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
                Database::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
            }
        };
        matches!(tokio::time::timeout(Duration::from_secs(2), query).await, Ok(Ok(())))
    }

    pub async fn close(&self) {
        match self {
            Database::Postgres(pool) => pool.close().await,
            Database::Sqlite(pool) => pool.close().await,
        }
    }
}

/// `$start, $start+1, ...` for `count` bind parameters (for `IN (...)` lists built at run time;
/// only placeholders, never values, are formatted into a statement).
pub fn placeholders(start: usize, count: usize) -> String {
    (start..start + count).map(|index| format!("${index}")).collect::<Vec<_>>().join(", ")
}

/// Whether a database error is a unique-constraint violation (PostgreSQL 23505, SQLite 2067/1555).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.is_unique_violation(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_are_per_service() {
        assert_eq!(sqlite_path_for("sqlite://data/clawx.db", "identity").unwrap(), PathBuf::from("data/clawx-identity.db"));
        assert_eq!(sqlite_path_for("sqlite:data/{service}.db?mode=rwc", "groups").unwrap(), PathBuf::from("data/groups.db"));
        assert_eq!(sqlite_path_for("sqlite:///tmp/x", "verify").unwrap(), PathBuf::from("/tmp/x-verify"));
        assert!(sqlite_path_for("sqlite::memory:", "verify").is_err());
    }

    #[test]
    fn schema_names_are_checked() {
        assert!(valid_identifier("identity"));
        assert!(valid_identifier("t_0a1b_identity"));
        assert!(!valid_identifier("Identity"));
        assert!(!valid_identifier("a\"; drop"));
        assert!(!valid_identifier("1abc"));
    }
}
