//! The node store's conformance suite on SQLite and (when configured) PostgreSQL, each backend
//! its own test case: global ids, per-topic chaining, optimistic identity appends and the
//! address index.

use clawx_common::Database;
use clawx_messaging::node::store::{Direction, InboxPosition, NewCommitLogEntry, NewGroupMessage, NewWelcome, StoreError, for_database};

clawx_common::backend_tests! {
    async fn ids_chain_per_topic_and_identity_appends_are_optimistic(test_db) {
        let backend = test_db.backend.name();
        let database = Database::connect(&test_db.args, "messaging").await.unwrap();
        database.migrate(&clawx_messaging::MIGRATIONS).await.unwrap();
        let store = for_database(&database);

        let message = |group: &[u8], data: &[u8]| NewGroupMessage { group_id: group.to_vec(), data: data.to_vec(), sender_hmac: vec![], should_push: false, is_commit: false };
        let first = store.insert_group_messages(&[message(b"g1", b"a"), message(b"g2", b"b"), message(b"g1", b"c")], 10).await.unwrap();
        assert_eq!(first.iter().map(|inserted| inserted.previous_id).collect::<Vec<_>>(), vec![0, 0, first[0].item.id], "{backend}: chained per group");
        let welcome = store.insert_welcomes(&[NewWelcome { installation_key: b"k".to_vec(), message: b"w".to_vec() }], 11).await.unwrap();
        let again = store.insert_group_messages(&[message(b"g1", b"a"), message(b"g1", b"d")], 12).await.unwrap();
        assert_eq!(again.len(), 1, "{backend}: the duplicate is skipped");
        assert_eq!(again[0].previous_id, first[2].item.id);
        let ids = [first[0].item.id, first[1].item.id, first[2].item.id, welcome[0].item.id, again[0].item.id];
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{backend}: one global sequence {ids:?}");
        let page = store.group_messages(b"g1", first[0].item.id, Direction::Ascending, 10, 1 << 20).await.unwrap();
        assert!(!page.cut);
        assert_eq!(page.items.iter().map(|m| m.data.clone()).collect::<Vec<_>>(), vec![b"c".to_vec(), b"d".to_vec()]);

        // Identity: appends succeed only from the position they were computed against.
        let (position, log) = store.identity_log("inbox").await.unwrap();
        assert_eq!((position, log.len()), (None, 0));
        let created = store.append_identity_update("inbox", None, b"u1", &["0xaa".into()], &[], 1).await.unwrap();
        assert!(matches!(store.append_identity_update("inbox", None, b"u1", &[], &[], 1).await, Err(StoreError::Conflict(_))), "{backend}: created twice");
        let at = InboxPosition { last_sequence_id: created.sequence_id, update_count: 1 };
        let stale = InboxPosition { last_sequence_id: created.sequence_id - 1, update_count: 1 };
        assert!(matches!(store.append_identity_update("inbox", Some(stale), b"u2", &[], &[], 2).await, Err(StoreError::Conflict(_))), "{backend}: stale");
        let second = store.append_identity_update("inbox", Some(at), b"u2", &[], &["0xaa".into()], 2).await.unwrap();
        let (position, log) = store.identity_log("inbox").await.unwrap();
        assert_eq!(position, Some(InboxPosition { last_sequence_id: second.sequence_id, update_count: 2 }), "{backend}");
        assert_eq!(log.iter().map(|entry| entry.update_bytes.clone()).collect::<Vec<_>>(), vec![b"u1".to_vec(), b"u2".to_vec()]);

        // Address index: the newest unrevoked association wins; revoking falls back.
        store.append_identity_update("other", None, b"o1", &["0xbb".into()], &[], 3).await.unwrap();
        let moved = store.append_identity_update("inbox", Some(position.unwrap()), b"u3", &["0xbb".into()], &[], 4).await.unwrap();
        assert_eq!(store.inbox_ids(&["0xaa".into(), "0xbb".into(), "0xcc".into()]).await.unwrap(), vec![None, Some("inbox".into()), None], "{backend}");
        let position = InboxPosition { last_sequence_id: moved.sequence_id, update_count: 3 };
        store.append_identity_update("inbox", Some(position), b"u4", &[], &["0xbb".into()], 5).await.unwrap();
        assert_eq!(store.inbox_ids(&["0xbb".into()]).await.unwrap(), vec![Some("other".into())], "{backend}: falls back");
        let after = store.identity_updates_after(&[("inbox".into(), created.sequence_id), ("none".into(), 0)], 1 << 20).await.unwrap();
        assert_eq!((after[0].len(), after[1].len()), (3, 0), "{backend}");

        // Key packages: latest wins, bound to one inbox.
        store.upsert_key_package(b"i1", "inbox", b"kp1", 100, 1).await.unwrap();
        store.upsert_key_package(b"i1", "inbox", b"kp2", 100, 2).await.unwrap();
        assert!(matches!(store.upsert_key_package(b"i1", "other", b"kp3", 100, 3).await, Err(StoreError::Conflict(_))), "{backend}");
        assert_eq!(store.key_packages(&[b"i1".to_vec(), b"i2".to_vec()], 1 << 20).await.unwrap(), vec![(b"i1".to_vec(), b"kp2".to_vec())]);
        database.close().await;
    }
}

clawx_common::backend_tests! {
    async fn replies_stay_within_their_byte_budget_and_commit_logs_keep_one_signer(test_db) {
        let backend = test_db.backend.name();
        let database = Database::connect(&test_db.args, "messaging").await.unwrap();
        database.migrate(&clawx_messaging::MIGRATIONS).await.unwrap();
        let store = for_database(&database);

        // Five 10 KiB messages: a 25 KiB budget reads two and says the page was cut; a budget
        // smaller than one message still reads that one.
        let message = |data: Vec<u8>| NewGroupMessage { group_id: b"big".to_vec(), data, sender_hmac: vec![], should_push: false, is_commit: false };
        store.insert_group_messages(&(0..5u8).map(|index| message(vec![index; 10 * 1024])).collect::<Vec<_>>(), 1).await.unwrap();
        let page = store.group_messages(b"big", 0, Direction::Ascending, 100, 25 * 1024).await.unwrap();
        assert_eq!((page.items.len(), page.cut), (2, true), "{backend}: cut by bytes");
        let page = store.group_messages(b"big", 0, Direction::Descending, 100, 100).await.unwrap();
        assert_eq!((page.items.len(), page.cut), (1, true), "{backend}: at least one");
        assert_eq!(page.items[0].data[0], 4, "{backend}: newest first");
        let all = store.group_messages(b"big", 0, Direction::Ascending, 100, 1 << 20).await.unwrap();
        assert_eq!((all.items.len(), all.cut), (5, false), "{backend}");

        // Whole answers refuse instead of cutting, and without content read no payload.
        let newest = store.newest_group_messages(&[b"big".to_vec()], true, 1024).await;
        assert!(matches!(newest, Err(StoreError::OverBudget(1024))), "{backend}: {newest:?}");
        let newest = store.newest_group_messages(&[b"big".to_vec(), b"none".to_vec()], false, 1024).await.unwrap();
        assert_eq!(newest.len(), 1, "{backend}");
        assert!(newest[&b"big".to_vec()].data.is_empty(), "{backend}: no content");
        store.upsert_key_package(b"kp", "inbox", &[7; 4096], 100, 1).await.unwrap();
        assert!(matches!(store.key_packages(&[b"kp".to_vec()], 1024).await, Err(StoreError::OverBudget(_))), "{backend}");
        store.append_identity_update("budget", None, &[1; 2048], &[], &[], 1).await.unwrap();
        let updates = store.identity_updates_after(&[("budget".into(), 0)], 1024).await;
        assert!(matches!(updates, Err(StoreError::OverBudget(_))), "{backend}");

        // Commit log: the first entry's signer is the group's; others are skipped; a cap per group.
        let entry = |signer: &[u8], byte: u8| NewCommitLogEntry { group_id: b"cl".to_vec(), entry: vec![byte], signature: Some(vec![byte]), signer: signer.to_vec() };
        let stored = store.insert_commit_log(&[entry(b"alice", 1), entry(b"mallory", 2), entry(b"alice", 3)], 3).await.unwrap();
        assert_eq!(stored.iter().map(|entry| entry.entry[0]).collect::<Vec<_>>(), vec![1, 3], "{backend}: one signer per group");
        assert!(store.insert_commit_log(&[entry(b"mallory", 4)], 3).await.unwrap().is_empty(), "{backend}");
        store.insert_commit_log(&[entry(b"alice", 5)], 3).await.unwrap();
        assert!(matches!(store.insert_commit_log(&[entry(b"alice", 6)], 3).await, Err(StoreError::Full(_))), "{backend}: capped");
        let page = store.commit_log(b"cl", 0, 100, 1 << 20).await.unwrap();
        assert_eq!(page.items.iter().map(|entry| entry.entry[0]).collect::<Vec<_>>(), vec![1, 3, 5], "{backend}");
        database.close().await;
    }
}

#[test]
fn every_migration_file_is_embedded() {
    clawx_common::testing::assert_migrations_embedded(env!("CARGO_MANIFEST_DIR"), &clawx_messaging::MIGRATIONS);
}
