//! The check that every migration file of a service is embedded in its binary.

use std::path::Path;

use clawx_common::{
    storage::{EmbeddedMigration, Migrations},
    testing::assert_migrations_embedded,
};

const EMBEDDED: Migrations = Migrations {
    postgres: &[EmbeddedMigration { version: 1, description: "0001_meta", sql: "" }],
    sqlite: &[EmbeddedMigration { version: 1, description: "0001_meta", sql: "" }],
};

/// A crate directory holding `files` under `migrations/`, removed on drop.
struct CrateDir(std::path::PathBuf);

impl CrateDir {
    fn with(files: &[&str]) -> CrateDir {
        let root = std::env::temp_dir().join(format!("clawx-migrations-{}", rand::random::<u64>()));
        for file in files {
            let path = root.join("migrations").join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "SELECT 1;").unwrap();
        }
        CrateDir(root)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for CrateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn embedded_files_pass() {
    let dir = CrateDir::with(&["postgres/0001_meta.sql", "sqlite/0001_meta.sql", "sqlite/README.md"]);
    assert_migrations_embedded(dir.path(), &EMBEDDED);
}

#[test]
#[should_panic(expected = "not embedded")]
fn a_file_left_out_of_the_migrations_fails() {
    let dir = CrateDir::with(&["postgres/0001_meta.sql", "postgres/0002_more.sql", "sqlite/0001_meta.sql", "sqlite/0002_more.sql"]);
    assert_migrations_embedded(dir.path(), &EMBEDDED);
}

#[test]
#[should_panic(expected = "different versions")]
fn dialects_with_different_versions_fail() {
    let dir = CrateDir::with(&["postgres/0001_meta.sql", "sqlite/0001_meta.sql", "sqlite/0002_sqlite_only.sql"]);
    let migrations = Migrations {
        postgres: EMBEDDED.postgres,
        sqlite: &[
            EmbeddedMigration { version: 1, description: "0001_meta", sql: "" },
            EmbeddedMigration { version: 2, description: "0002_sqlite_only", sql: "" },
        ],
    };
    assert_migrations_embedded(dir.path(), &migrations);
}
