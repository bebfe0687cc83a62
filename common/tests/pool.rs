//! PostgreSQL pool connections the server ended while they sat in the pool are replaced before
//! use, however briefly they sat there: no request fails on a dead connection.

use clawx_common::{Database, testing::TestDatabase};

#[tokio::test]
async fn connections_ended_by_the_server_while_pooled_are_replaced_before_use() {
    let Some(test_db) = TestDatabase::postgres() else { return };
    let database = Database::connect(&test_db.args, "pooltest").await.expect("PostgreSQL");
    let Database::Postgres(pool) = &database else { unreachable!("a PostgreSQL test database") };
    let url = std::env::var("CLAWX_TEST_DATABASE_URL").expect("configured");
    let admin = sqlx::PgPool::connect(&url).await.expect("admin connection");
    for round in 0..3 {
        // Open the pool's connections and put them back.
        let held: Vec<_> = futures::future::join_all((0..4).map(|_| pool.acquire())).await.into_iter().map(|c| c.expect("a connection")).collect();
        drop(held);
        // The server ends every one of them (a restart, a failover, an administrator), and they
        // are used again at once, all together.
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'clawx-pooltest' AND pid <> pg_backend_pid()) AS k",
        )
        .fetch_one(&admin)
        .await
        .unwrap();
        assert!(ended >= 1, "round {round}: the pool's connections were open");
        let answers = futures::future::join_all((0..8).map(|_| sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool))).await;
        let failed: Vec<String> = answers.into_iter().filter_map(|answer| answer.err().map(|error| error.to_string())).collect();
        assert!(failed.is_empty(), "round {round}: no query fails on a connection the server ended: {failed:?}");
    }
    admin.close().await;
    database.close().await;
}
