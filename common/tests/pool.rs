//! PostgreSQL pool connections that died while idle are replaced before use: a connection idle
//! for a while is tested when it is taken (one in constant use is not, to save a round trip).

use std::time::Duration;

use clawx_common::{Database, testing::TestDatabase};

#[tokio::test]
async fn connections_that_died_while_idle_are_replaced_before_use() {
    let Some(test_db) = TestDatabase::postgres() else { return };
    let database = Database::connect(&test_db.args, "pooltest").await.expect("PostgreSQL");
    let Database::Postgres(pool) = &database else { unreachable!("a PostgreSQL test database") };
    // Open the pool's connections.
    let held: Vec<_> = futures::future::join_all((0..4).map(|_| pool.acquire())).await.into_iter().map(|c| c.expect("a connection")).collect();
    drop(held);

    // Every connection of this pool is killed on the server side, as a database restart would.
    let url = std::env::var("CLAWX_TEST_DATABASE_URL").expect("configured");
    let admin = sqlx::PgPool::connect(&url).await.expect("admin connection");
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'clawx-pooltest' AND pid <> pg_backend_pid()) AS k",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(killed >= 1, "the pool's connections were open");

    // Once they have been idle long enough, they are tested and replaced: no query fails.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    for _ in 0..8 {
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(pool).await.expect("a live connection");
        assert_eq!(one, 1);
    }
    admin.close().await;
    database.close().await;
}
