//! The groups store's conformance suite: each test runs on SQLite and (when configured)
//! PostgreSQL as its own test case.

use std::sync::Arc;

use clawx_common::{Database, testing::TestDatabase};
use clawx_groups::store::{GroupChanges, GroupsStore, IDEMPOTENCY_TTL_MS, NewGroup, NewMessage, SendOutcome, StoreError, for_database};

async fn open_store(test_db: &TestDatabase, connections: u32) -> (&'static str, Arc<dyn GroupsStore>) {
    let mut args = test_db.args.clone();
    args.database_max_connections = connections;
    let database = Database::connect(&args, "groups").await.unwrap();
    database.migrate(&clawx_groups::MIGRATIONS).await.unwrap();
    (test_db.backend.name(), for_database(&database))
}

fn group(id: &str, owner_id: i64, title: &str, description: &str, created_at: i64) -> NewGroup {
    NewGroup {
        id: id.into(),
        title: title.into(),
        description: description.into(),
        x_url: Some("https://x.com/g".into()),
        github_url: None,
        website_url: None,
        owner_id,
        created_at,
    }
}

fn message(group_id: &str, sender_id: i64, content: &str, sent_at: i64, key: Option<&str>) -> NewMessage {
    NewMessage {
        group_id: group_id.into(),
        sender_id,
        content: content.into(),
        sent_at,
        idempotency: key.map(|key| (key.to_string(), format!("{group_id}/{content}").into_bytes())),
    }
}

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbb";
const C: &str = "cccccccccccccccccccccccc";

clawx_common::backend_tests! {
    async fn groups_are_created_listed_searched_and_paged_newest_first(test_db) {
        let (backend, store) = open_store(&test_db, 4).await;
        let created = store.create_group(&group(A, 1, "Rust Agents", "We write Rust", 1_000)).await.unwrap();
        assert_eq!((created.id.as_str(), created.member_count, created.owner_id, created.updated_at), (A, 1, 1, 1_000), "{backend}");
        assert_eq!(created.x_url.as_deref(), Some("https://x.com/g"), "{backend}");
        store.create_group(&group(B, 2, "100% Ünïcode_club", "percent and underscore", 1_000)).await.unwrap();
        store.create_group(&group(C, 1, "Quiet", "nothing to see", 900)).await.unwrap();
        assert!(matches!(store.create_group(&group(A, 3, "again", "same id", 2_000)).await, Err(StoreError::IdTaken)), "{backend}");

        // Newest first by creation order (not by clock: C was created last).
        let (page, total) = store.list_groups(None, 2, 0).await.unwrap();
        assert_eq!((page.iter().map(|group| group.id.as_str()).collect::<Vec<_>>(), total), (vec![C, B], 3), "{backend}");
        let (page, _) = store.list_groups(None, 2, 2).await.unwrap();
        assert_eq!(page.iter().map(|group| group.id.as_str()).collect::<Vec<_>>(), vec![A], "{backend}");

        // Search: lower-cased title or description; LIKE wildcards match only themselves.
        let ids = |(groups, total): (Vec<clawx_groups::store::GroupRecord>, u64)| (groups.into_iter().map(|group| group.id).collect::<Vec<_>>(), total);
        assert_eq!(ids(store.list_groups(Some("rust"), 10, 0).await.unwrap()), (vec![A.to_string()], 1), "{backend}");
        assert_eq!(ids(store.list_groups(Some("ünïcode"), 10, 0).await.unwrap()), (vec![B.to_string()], 1), "{backend}");
        assert_eq!(ids(store.list_groups(Some("100%"), 10, 0).await.unwrap()), (vec![B.to_string()], 1), "{backend}");
        assert_eq!(ids(store.list_groups(Some("%"), 10, 0).await.unwrap()).1, 1, "{backend}: % is literal");
        assert_eq!(ids(store.list_groups(Some("_"), 10, 0).await.unwrap()).1, 1, "{backend}: _ is literal");
        assert_eq!(ids(store.list_groups(Some("\\"), 10, 0).await.unwrap()).1, 0, "{backend}");
        assert_eq!(ids(store.list_groups(Some("to see"), 10, 0).await.unwrap()), (vec![C.to_string()], 1), "{backend}");
    }

    async fn owners_alone_update_and_delete(test_db) {
        let (backend, store) = open_store(&test_db, 4).await;
        store.create_group(&group(A, 1, "Title", "Description", 1_000)).await.unwrap();
        let changes = GroupChanges { title: Some("New".into()), x_url: Some(None), github_url: Some(Some("https://github.com/x".into())), ..Default::default() };
        assert!(matches!(store.update_group(A, 2, &changes, 2_000).await, Err(StoreError::NotOwner)), "{backend}");
        assert!(matches!(store.update_group(B, 1, &changes, 2_000).await, Err(StoreError::NotFound)), "{backend}");
        let updated = store.update_group(A, 1, &changes, 2_000).await.unwrap();
        assert_eq!((updated.title.as_str(), updated.description.as_str(), updated.x_url, updated.github_url.as_deref()), ("New", "Description", None, Some("https://github.com/x")), "{backend}");
        assert_eq!((updated.created_at, updated.updated_at), (1_000, 2_000), "{backend}");
        assert_eq!(store.list_groups(Some("new"), 10, 0).await.unwrap().1, 1, "{backend}: search follows the new title");
        assert_eq!(store.list_groups(Some("title"), 10, 0).await.unwrap().1, 0, "{backend}");

        store.join(A, 2, 3_000).await.unwrap();
        store.send_message(&message(A, 2, "hello", 3_000, Some("k1"))).await.unwrap();
        assert!(matches!(store.delete_group(A, 2).await, Err(StoreError::NotOwner)), "{backend}");
        store.delete_group(A, 1).await.unwrap();
        assert_eq!(store.group(A).await.unwrap(), None, "{backend}");
        assert!(matches!(store.delete_group(A, 1).await, Err(StoreError::NotFound)), "{backend}");
        assert_eq!(store.members(A, 10).await.unwrap(), vec![], "{backend}");
        assert_eq!(store.messages(A, i64::MAX, 0, 10).await.unwrap(), vec![], "{backend}");
        // The key went with its message: reusable in another group.
        store.create_group(&group(B, 1, "Other", "Other", 4_000)).await.unwrap();
        store.join(B, 2, 4_000).await.unwrap();
        assert!(matches!(store.send_message(&message(B, 2, "hello", 5_000, Some("k1"))).await.unwrap(), SendOutcome::Stored(_)), "{backend}");
    }

    async fn members_join_once_and_the_owner_cannot_leave(test_db) {
        let (backend, store) = open_store(&test_db, 4).await;
        store.create_group(&group(A, 1, "Title", "Description", 1_000)).await.unwrap();
        assert_eq!(store.join(A, 2, 2_000).await.unwrap(), (true, 2), "{backend}");
        assert_eq!(store.join(A, 2, 3_000).await.unwrap(), (false, 2), "{backend}: a no-op");
        assert_eq!(store.join(A, 1, 3_000).await.unwrap(), (false, 2), "{backend}: the owner is a member");
        assert!(matches!(store.join(B, 2, 3_000).await, Err(StoreError::NotFound)), "{backend}");
        let members: Vec<(i64, i64)> = store.members(A, 10).await.unwrap().into_iter().map(|member| (member.account_id, member.joined_at)).collect();
        assert_eq!(members, vec![(1, 1_000), (2, 2_000)], "{backend}: by join time, the first join kept");
        assert_eq!(store.member_ids(A).await.unwrap(), vec![1, 2], "{backend}");
        assert!(store.is_member(A, 2).await.unwrap() && !store.is_member(A, 3).await.unwrap(), "{backend}");

        assert!(matches!(store.leave(A, 1).await, Err(StoreError::OwnerCannotLeave)), "{backend}");
        assert!(matches!(store.leave(A, 3).await, Err(StoreError::NotAMember)), "{backend}");
        assert!(matches!(store.leave(B, 3).await, Err(StoreError::NotFound)), "{backend}");
        assert_eq!(store.leave(A, 2).await.unwrap(), 1, "{backend}");
        assert!(matches!(store.leave(A, 2).await, Err(StoreError::NotAMember)), "{backend}");

        store.join(A, 3, 4_000).await.unwrap();
        store.join(A, 4, 4_000).await.unwrap();
        assert_eq!(store.remove_members(A, &[1, 3, 99]).await.unwrap(), 1, "{backend}: never the owner");
        assert_eq!(store.group(A).await.unwrap().unwrap().member_count, 2, "{backend}");
        assert_eq!(store.remove_members(B, &[3]).await.unwrap(), 0, "{backend}: no such group");
        assert_eq!(store.members(A, 1).await.unwrap().len(), 1, "{backend}: bounded");
    }

    async fn member_count_is_exact_under_concurrent_joins_and_leaves(test_db) {
        let (backend, store) = open_store(&test_db, 16).await;
        store.create_group(&group(A, 1, "Busy", "Many at once", 1_000)).await.unwrap();
        // 40 accounts join twice each at once; then half of them leave while others join.
        let joins = (0..80).map(|index| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.join(A, 100 + index % 40, 2_000).await })
        });
        let outcomes: Vec<_> = futures::future::join_all(joins).await.into_iter().map(|joined| joined.unwrap().unwrap()).collect();
        assert_eq!(outcomes.iter().filter(|(joined, _)| *joined).count(), 40, "{backend}: each account joined once");
        assert_eq!(store.group(A).await.unwrap().unwrap().member_count, 41, "{backend}");
        let churn = (0..40).map(|index| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                if index % 2 == 0 { store.leave(A, 100 + index).await.map(|_| ()) } else { store.join(A, 200 + index, 3_000).await.map(|_| ()) }
            })
        });
        for outcome in futures::future::join_all(churn).await {
            outcome.unwrap().unwrap();
        }
        let count = store.group(A).await.unwrap().unwrap().member_count;
        assert_eq!(count, 41, "{backend}: 20 left, 20 joined");
        assert_eq!(count, store.member_ids(A).await.unwrap().len() as i64, "{backend}: the count is the rows");
    }

    async fn messages_page_newest_first_for_members(test_db) {
        let (backend, store) = open_store(&test_db, 4).await;
        store.create_group(&group(A, 1, "Chat", "Chat", 1_000)).await.unwrap();
        store.join(A, 2, 1_000).await.unwrap();
        let mut ids = Vec::new();
        for index in 0..5 {
            let SendOutcome::Stored(record) = store.send_message(&message(A, 1 + index % 2, &format!("m{index}"), 2_000 + index, None)).await.unwrap() else {
                panic!("{backend}: stored");
            };
            assert_eq!((record.group_id.as_str(), record.content.clone()), (A, format!("m{index}")), "{backend}");
            ids.push(record.id);
        }
        let contents = |records: Vec<clawx_groups::store::MessageRecord>| records.into_iter().map(|record| record.content).collect::<Vec<_>>();
        assert_eq!(contents(store.messages(A, i64::MAX, 0, 2).await.unwrap()), vec!["m4", "m3"], "{backend}");
        assert_eq!(contents(store.messages(A, ids[3], 0, 2).await.unwrap()), vec!["m2", "m1"], "{backend}: before");
        assert_eq!(contents(store.messages(A, i64::MAX, ids[2], 10).await.unwrap()), vec!["m4", "m3"], "{backend}: after");
        assert!(matches!(store.send_message(&message(A, 3, "intruder", 3_000, None)).await, Err(StoreError::NotAMember)), "{backend}");
        assert!(matches!(store.send_message(&message(B, 1, "nowhere", 3_000, None)).await, Err(StoreError::NotFound)), "{backend}");
    }

    async fn idempotency_keys_answer_the_first_message_for_a_day(test_db) {
        let (backend, store) = open_store(&test_db, 16).await;
        store.create_group(&group(A, 1, "Chat", "Chat", 1_000)).await.unwrap();
        store.create_group(&group(B, 1, "Chat", "Chat", 1_000)).await.unwrap();
        let SendOutcome::Stored(first) = store.send_message(&message(A, 1, "once", 10_000, Some("k"))).await.unwrap() else { panic!("{backend}") };
        assert_eq!(store.send_message(&message(A, 1, "once", 11_000, Some("k"))).await.unwrap(), SendOutcome::Repeated(first.clone()), "{backend}");
        assert_eq!(store.send_message(&message(A, 1, "other", 11_000, Some("k"))).await.unwrap(), SendOutcome::KeyReused, "{backend}");
        assert_eq!(store.send_message(&message(B, 1, "once", 11_000, Some("k"))).await.unwrap(), SendOutcome::KeyReused, "{backend}: another group");
        assert_eq!(store.messages(A, i64::MAX, 0, 10).await.unwrap().len(), 1, "{backend}: stored once");
        // Another account's key of the same name is its own.
        store.join(A, 2, 1_000).await.unwrap();
        assert!(matches!(store.send_message(&message(A, 2, "once", 11_000, Some("k"))).await.unwrap(), SendOutcome::Stored(_)), "{backend}");
        // A day later the key is free again.
        let later = 10_000 + IDEMPOTENCY_TTL_MS + 1;
        assert!(matches!(store.send_message(&message(A, 1, "other", later, Some("k"))).await.unwrap(), SendOutcome::Stored(_)), "{backend}");

        // Concurrent sends with one new key store one message; all answer it.
        let sends = (0..12).map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.send_message(&message(A, 1, "race", later + 1, Some("race"))).await.unwrap() })
        });
        let outcomes: Vec<SendOutcome> = futures::future::join_all(sends).await.into_iter().map(|sent| sent.unwrap()).collect();
        let stored: Vec<_> = outcomes.iter().filter_map(|outcome| match outcome { SendOutcome::Stored(record) => Some(record.id), _ => None }).collect();
        assert_eq!(stored.len(), 1, "{backend}: {outcomes:?}");
        assert!(outcomes.iter().all(|outcome| match outcome {
            SendOutcome::Stored(record) | SendOutcome::Repeated(record) => record.id == stored[0],
            SendOutcome::KeyReused => false,
        }), "{backend}: {outcomes:?}");
    }
}
