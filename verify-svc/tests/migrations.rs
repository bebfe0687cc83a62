//! Every migration file of the verify service is embedded in the binary, for both dialects.

#[test]
fn every_migration_file_is_embedded() {
    clawx_common::testing::assert_migrations_embedded(env!("CARGO_MANIFEST_DIR"), &clawx_verify::MIGRATIONS);
}
