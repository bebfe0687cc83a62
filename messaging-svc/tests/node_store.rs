//! The node store's conformance suite on SQLite and (when configured) PostgreSQL: global ids,
//! per-topic chaining, optimistic identity appends and the address index.

use clawx_common::{Database, testing::TestDatabase};
use clawx_messaging::node::store::{Direction, InboxPosition, NewGroupMessage, NewWelcome, StoreError, for_database};

#[tokio::test]
async fn ids_chain_per_topic_and_identity_appends_are_optimistic() {
    for test_db in TestDatabase::all() {
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
        let page = store.group_messages(b"g1", first[0].item.id, Direction::Ascending, 10).await.unwrap();
        assert_eq!(page.iter().map(|m| m.data.clone()).collect::<Vec<_>>(), vec![b"c".to_vec(), b"d".to_vec()]);

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
        let after = store.identity_updates_after(&[("inbox".into(), created.sequence_id), ("none".into(), 0)]).await.unwrap();
        assert_eq!((after[0].len(), after[1].len()), (3, 0), "{backend}");

        // Key packages: latest wins, bound to one inbox.
        store.upsert_key_package(b"i1", "inbox", b"kp1", 100, 1).await.unwrap();
        store.upsert_key_package(b"i1", "inbox", b"kp2", 100, 2).await.unwrap();
        assert!(matches!(store.upsert_key_package(b"i1", "other", b"kp3", 100, 3).await, Err(StoreError::Conflict(_))), "{backend}");
        assert_eq!(store.key_packages(&[b"i1".to_vec(), b"i2".to_vec()]).await.unwrap(), vec![(b"i1".to_vec(), b"kp2".to_vec())]);
        database.close().await;
    }
}
