//! The storage, cache, rate-limiter and pub/sub suites, each test run against every configured
//! backend as its own test case (`name::sqlite`, `name::postgres`, `name::memory`, `name::redis`).

use std::time::Duration;

use clawx_common::{
    Database,
    pubsub::Event,
    storage::{EmbeddedMigration, Migrations},
    testing::TestDatabase,
};
use sqlx::Row;

const PROBE_MIGRATIONS: Migrations = Migrations {
    postgres: &[
        EmbeddedMigration { version: 1, description: "probe", sql: "CREATE TABLE probe (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE)" },
        EmbeddedMigration { version: 2, description: "probe_more", sql: "ALTER TABLE probe ADD COLUMN note TEXT" },
    ],
    sqlite: &[
        EmbeddedMigration {
            version: 1,
            description: "probe",
            sql: "CREATE TABLE probe (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE)",
        },
        EmbeddedMigration { version: 2, description: "probe_more", sql: "ALTER TABLE probe ADD COLUMN note TEXT" },
    ],
};

async fn insert(database: &Database, name: &str) -> Result<(), sqlx::Error> {
    match database {
        Database::Postgres(pool) => sqlx::query("INSERT INTO probe (name) VALUES ($1)").bind(name).execute(pool).await.map(|_| ()),
        Database::Sqlite(pool) => sqlx::query("INSERT INTO probe (name) VALUES (?)").bind(name).execute(pool).await.map(|_| ()),
    }
}

async fn count(database: &Database) -> i64 {
    match database {
        Database::Postgres(pool) => sqlx::query("SELECT COUNT(*) AS n FROM probe").fetch_one(pool).await.unwrap().get("n"),
        Database::Sqlite(pool) => sqlx::query("SELECT COUNT(*) AS n FROM probe").fetch_one(pool).await.unwrap().get("n"),
    }
}

clawx_common::backend_tests! {
    async fn storage_migrates_once_isolates_services_and_maps_unique_violations(test_db) {
        let backend = test_db.backend.name();
        let alpha = Database::connect(&test_db.args, "alpha").await.unwrap();
        assert_eq!(alpha.backend(), test_db.backend);
        assert!(alpha.ping().await, "{backend}: ping");
        alpha.migrate(&PROBE_MIGRATIONS).await.unwrap();
        // Running again is a no-op, and a second pool sees the same data.
        alpha.migrate(&PROBE_MIGRATIONS).await.unwrap();
        insert(&alpha, "one").await.unwrap();
        let error = insert(&alpha, "one").await.unwrap_err();
        assert!(clawx_common::storage::is_unique_violation(&error), "{backend}: {error}");
        let again = Database::connect(&test_db.args, "alpha").await.unwrap();
        assert_eq!(count(&again).await, 1, "{backend}");

        // Another service has its own schema or file: same table name, separate rows.
        let beta = Database::connect(&test_db.args, "beta").await.unwrap();
        beta.migrate(&PROBE_MIGRATIONS).await.unwrap();
        assert_eq!(count(&beta).await, 0, "{backend}: services share no tables");
        insert(&beta, "one").await.unwrap();

        // A migration whose text changed after it ran is refused, not silently re-run.
        let changed = Migrations {
            postgres: &[EmbeddedMigration { version: 1, description: "probe", sql: "CREATE TABLE probe (id BIGINT)" }],
            sqlite: &[EmbeddedMigration { version: 1, description: "probe", sql: "CREATE TABLE probe (id BIGINT)" }],
        };
        assert!(alpha.migrate(&changed).await.is_err(), "{backend}: checksum mismatch detected");
        for database in [alpha, again, beta] {
            database.close().await;
        }
    }
}

clawx_common::cache_backend_tests! {
    async fn cache_stores_expires_and_takes_on_every_backend(backend, backends) {
        let cache = &backends.cache;
        assert_eq!(cache.backend_name(), backend);
        assert!(cache.ping().await, "{backend}: ping");
        assert_eq!(cache.get("absent").await.unwrap(), None);
        cache.set("k", b"v1", Duration::from_secs(30)).await.unwrap();
        assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]), "{backend}");
        assert!(!cache.set_if_absent("k", b"v2", Duration::from_secs(30)).await.unwrap(), "{backend}");
        assert!(cache.set_if_absent("fresh", b"v3", Duration::from_secs(30)).await.unwrap(), "{backend}");
        assert_eq!(cache.take("fresh").await.unwrap().as_deref(), Some(&b"v3"[..]), "{backend}");
        assert_eq!(cache.take("fresh").await.unwrap(), None, "{backend}: single use");
        cache.delete("k").await.unwrap();
        assert_eq!(cache.get("k").await.unwrap(), None, "{backend}");
        cache.set("short", b"x", Duration::from_millis(50)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(cache.get("short").await.unwrap(), None, "{backend}: expired");
    }
}

clawx_common::cache_backend_tests! {
    async fn rate_limiter_allows_a_burst_then_refuses_per_key(backend, backends) {
        let limiter = &backends.limiter;
        let window = Duration::from_secs(60);
        for expected in (0..5).rev() {
            let decision = limiter.check("ip:1", 5, window).await.unwrap();
            assert!(decision.allowed, "{backend}");
            assert_eq!(decision.remaining, expected, "{backend}");
            assert_eq!(decision.limit, 5);
        }
        let refused = limiter.check("ip:1", 5, window).await.unwrap();
        assert!(!refused.allowed, "{backend}");
        assert!(refused.retry_after > Duration::from_secs(10) && refused.retry_after <= Duration::from_secs(12), "{backend}: {refused:?}");
        assert!(limiter.check("ip:2", 5, window).await.unwrap().allowed, "{backend}: keys are independent");
        // A fast window refills quickly.
        for _ in 0..2 {
            assert!(limiter.check("fast", 2, Duration::from_millis(100)).await.unwrap().allowed);
        }
        assert!(!limiter.check("fast", 2, Duration::from_millis(100)).await.unwrap().allowed, "{backend}");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(limiter.check("fast", 2, Duration::from_millis(100)).await.unwrap().allowed, "{backend}: refilled");
    }
}

clawx_common::cache_backend_tests! {
    async fn pubsub_delivers_to_subscribers_of_the_channel_only(backend, backends) {
        let pubsub = &backends.pubsub;
        assert!(pubsub.wait_connected(Duration::from_secs(5)).await, "{backend}: connected");
        let mut first = pubsub.subscribe("room:a");
        let mut second = pubsub.subscribe("room:a");
        let mut other = pubsub.subscribe("room:b");
        // A gap may be announced right after the Redis listener connects; skip it.
        pubsub.publish("room:a", b"hello").await.unwrap();
        for subscription in [&mut first, &mut second] {
            let event = loop {
                let event = tokio::time::timeout(Duration::from_secs(5), subscription.recv()).await.expect("delivered").unwrap();
                if event != Event::Gap {
                    break event;
                }
            };
            assert_eq!(event, Event::Message(b"hello"[..].into()), "{backend}");
        }
        pubsub.publish("room:b", b"other").await.unwrap();
        let event = loop {
            let event = tokio::time::timeout(Duration::from_secs(5), other.recv()).await.expect("delivered").unwrap();
            if event != Event::Gap {
                break event;
            }
        };
        assert_eq!(event, Event::Message(b"other"[..].into()), "{backend}: room:b got only its own message");
    }
}

clawx_common::cache_backend_tests! {
    async fn pubsub_publishes_several_messages_at_once_in_order(backend, backends) {
        let pubsub = &backends.pubsub;
        assert!(pubsub.wait_connected(Duration::from_secs(5)).await, "{backend}: connected");
        let mut first = pubsub.subscribe("many:a");
        let mut second = pubsub.subscribe("many:b");
        let messages: Vec<(String, Vec<u8>)> =
            vec![("many:a".into(), b"a1".to_vec()), ("many:b".into(), b"b1".to_vec()), ("many:a".into(), b"a2".to_vec())];
        pubsub.publish_all(&messages).await.unwrap();
        pubsub.publish_all(&[]).await.unwrap();
        for (subscription, expected) in [(&mut first, vec![&b"a1"[..], b"a2"]), (&mut second, vec![b"b1"])] {
            let mut received = Vec::new();
            while received.len() < expected.len() {
                match tokio::time::timeout(Duration::from_secs(5), subscription.recv()).await.expect("delivered").unwrap() {
                    Event::Gap => {}
                    Event::Message(payload) => received.push(payload),
                }
            }
            assert_eq!(received, expected.into_iter().map(Into::into).collect::<Vec<_>>(), "{backend}: each channel its own, in order");
        }
    }
}

#[tokio::test]
async fn a_slow_subscriber_is_told_about_the_gap() {
    let pubsub = clawx_common::PubSub::memory();
    let mut slow = pubsub.subscribe("busy");
    for index in 0..200u32 {
        pubsub.publish("busy", &index.to_be_bytes()).await.unwrap();
    }
    assert_eq!(slow.recv().await, Some(Event::Gap));
}

#[tokio::test]
async fn channels_are_freed_when_their_last_subscriber_leaves() {
    let pubsub = clawx_common::PubSub::memory();
    let first = pubsub.subscribe("a");
    let second = pubsub.subscribe("a");
    let other = pubsub.subscribe("b");
    assert_eq!(pubsub.channel_count(), 2);
    drop(first);
    assert_eq!(pubsub.channel_count(), 2, "a still has a subscriber");
    drop(second);
    assert_eq!(pubsub.channel_count(), 1, "a is gone");
    drop(other);
    assert_eq!(pubsub.channel_count(), 0);
    // Publishing to a channel nobody listens to keeps nothing.
    pubsub.publish("c", b"x").await.unwrap();
    assert_eq!(pubsub.channel_count(), 0);
}

clawx_common::cache_backend_tests! {
    async fn rate_limiter_forgets_keys_once_they_are_replenished(backend, backends) {
        let limiter = &backends.limiter;
        let window = Duration::from_millis(100);
        // ip:0 spends its burst before the other keys are checked: 500 Redis round trips can take
        // longer than the window, which would refill it.
        assert!(limiter.check("ip:0", 2, window).await.unwrap().allowed, "{backend}");
        assert!(limiter.check("ip:0", 2, window).await.unwrap().allowed, "{backend}");
        assert!(!limiter.check("ip:0", 2, window).await.unwrap().allowed, "{backend}: ip:0 spent its burst");
        for index in 1..500 {
            assert!(limiter.check(&format!("ip:{index}"), 2, window).await.unwrap().allowed, "{backend}");
        }
        if let Some(entries) = limiter.memory_entries() {
            assert_eq!(entries, 500, "{backend}");
        }
        // Once a key's budget is whole again it holds no state; the next check starts afresh.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let fresh = limiter.check("ip:new", 2, window).await.unwrap();
        assert!(fresh.allowed && fresh.remaining == 1, "{backend}: {fresh:?}");
        if let Some(entries) = limiter.memory_entries() {
            assert_eq!(entries, 1, "{backend}: expired keys are evicted");
        }
        let again = limiter.check("ip:0", 2, window).await.unwrap();
        assert!(again.allowed && again.remaining == 1, "{backend}: {again:?}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn sqlite_files_are_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let test_db = TestDatabase::sqlite();
    let database = Database::connect(&test_db.args, "private").await.unwrap();
    database.migrate(&PROBE_MIGRATIONS).await.unwrap();
    insert(&database, "secret").await.unwrap();
    let url = test_db.args.database_url.as_deref().unwrap();
    let main = clawx_common::storage::sqlite_path_for(url, "private").unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", main.display()));
        let mode = std::fs::metadata(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display())).permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}: {:o}", path.display(), mode & 0o777);
    }
    database.close().await;

    // An existing file keeps working and keeps its mode.
    let reopened = Database::connect(&test_db.args, "private").await.unwrap();
    assert_eq!(count(&reopened).await, 1);
    assert_eq!(std::fs::metadata(&main).unwrap().permissions().mode() & 0o777, 0o600);
    reopened.close().await;
}
