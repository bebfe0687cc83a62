//! Work one caller can make the node do, counted at the store: a subscription start reads only
//! the topics that have something to replay, and the inbox-state cache evicts the least
//! recently used inbox, so lookups of fresh inboxes cannot force busy ones to be replayed.
//! Each test runs on SQLite and (when configured) PostgreSQL as its own test case.

mod support;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use async_trait::async_trait;
use clawx_common::{Database, PubSub, testing::TestDatabase};
use clawx_messaging::node::{
    Node, NodeLimits,
    feed::{self, GroupTopic},
    store::{
        Budgeted, Direction, InboxPosition, Inserted, NewCommitLogEntry, NewGroupMessage, NewWelcome, NodeStore, StoreResult, StoredCommitLogEntry,
        StoredGroupMessage, StoredIdentityUpdate, StoredWelcome, for_database,
    },
};
use futures::StreamExt;
use support::*;
use tokio_util::sync::CancellationToken;

/// A store that counts the reads that cost the database.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn NodeStore>,
    message_pages: AtomicUsize,
    identity_logs: AtomicUsize,
}

#[async_trait]
impl NodeStore for Counting {
    async fn upsert_key_package(&self, installation_key: &[u8], inbox_id: &str, key_package: &[u8], not_after: i64, now_ms: i64) -> StoreResult<()> {
        self.inner.upsert_key_package(installation_key, inbox_id, key_package, not_after, now_ms).await
    }
    async fn key_packages(&self, installation_keys: &[Vec<u8>], max_bytes: usize) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.key_packages(installation_keys, max_bytes).await
    }
    async fn insert_group_messages(&self, messages: &[NewGroupMessage], created_ns: i64) -> StoreResult<Vec<Inserted<StoredGroupMessage>>> {
        self.inner.insert_group_messages(messages, created_ns).await
    }
    async fn group_messages(
        &self,
        group_id: &[u8],
        cursor: i64,
        direction: Direction,
        limit: u32,
        max_bytes: usize,
    ) -> StoreResult<Budgeted<StoredGroupMessage>> {
        self.message_pages.fetch_add(1, Ordering::SeqCst);
        self.inner.group_messages(group_id, cursor, direction, limit, max_bytes).await
    }
    async fn newest_group_messages(
        &self,
        group_ids: &[Vec<u8>],
        with_content: bool,
        max_bytes: usize,
    ) -> StoreResult<std::collections::HashMap<Vec<u8>, StoredGroupMessage>> {
        self.inner.newest_group_messages(group_ids, with_content, max_bytes).await
    }
    async fn group_heads(&self, group_ids: &[Vec<u8>]) -> StoreResult<Vec<i64>> {
        self.inner.group_heads(group_ids).await
    }
    async fn welcome_heads(&self, installation_keys: &[Vec<u8>]) -> StoreResult<Vec<i64>> {
        self.inner.welcome_heads(installation_keys).await
    }
    async fn insert_welcomes(&self, welcomes: &[NewWelcome], created_ns: i64) -> StoreResult<Vec<Inserted<StoredWelcome>>> {
        self.inner.insert_welcomes(welcomes, created_ns).await
    }
    async fn welcomes(
        &self,
        installation_key: &[u8],
        cursor: i64,
        direction: Direction,
        limit: u32,
        max_bytes: usize,
    ) -> StoreResult<Budgeted<StoredWelcome>> {
        self.inner.welcomes(installation_key, cursor, direction, limit, max_bytes).await
    }
    async fn identity_log(&self, inbox_id: &str) -> StoreResult<(Option<InboxPosition>, Vec<StoredIdentityUpdate>)> {
        self.identity_logs.fetch_add(1, Ordering::SeqCst);
        self.inner.identity_log(inbox_id).await
    }
    async fn append_identity_update(
        &self,
        inbox_id: &str,
        expected: Option<InboxPosition>,
        update_bytes: &[u8],
        linked_addresses: &[String],
        unlinked_addresses: &[String],
        server_timestamp_ns: i64,
    ) -> StoreResult<StoredIdentityUpdate> {
        self.inner.append_identity_update(inbox_id, expected, update_bytes, linked_addresses, unlinked_addresses, server_timestamp_ns).await
    }
    async fn identity_updates_after(&self, requests: &[(String, i64)], max_bytes: usize) -> StoreResult<Vec<Vec<StoredIdentityUpdate>>> {
        self.inner.identity_updates_after(requests, max_bytes).await
    }
    async fn inbox_ids(&self, addresses: &[String]) -> StoreResult<Vec<Option<String>>> {
        self.inner.inbox_ids(addresses).await
    }
    async fn insert_commit_log(&self, entries: &[NewCommitLogEntry], max_per_group: i64) -> StoreResult<Vec<StoredCommitLogEntry>> {
        self.inner.insert_commit_log(entries, max_per_group).await
    }
    async fn commit_log(&self, group_id: &[u8], cursor: i64, limit: u32, max_bytes: usize) -> StoreResult<Budgeted<StoredCommitLogEntry>> {
        self.inner.commit_log(group_id, cursor, limit, max_bytes).await
    }
}

/// The backend's name, a counting store on a freshly migrated database and a node on it.
async fn counted_node(test_db: &TestDatabase, limits: NodeLimits) -> (&'static str, Arc<Counting>, Arc<Node>) {
    let database = Database::connect(&test_db.args, "messaging").await.unwrap();
    database.migrate(&clawx_messaging::MIGRATIONS).await.unwrap();
    let store = Arc::new(Counting { inner: for_database(&database), message_pages: AtomicUsize::new(0), identity_logs: AtomicUsize::new(0) });
    let node = Arc::new(Node::new(store.clone(), PubSub::memory(), limits));
    (test_db.backend.name(), store, node)
}

clawx_common::backend_tests! {
    async fn a_subscription_start_reads_only_the_topics_that_have_something_to_replay(test_db) {
        let (name, store, node) = counted_node(&test_db, NodeLimits::default()).await;
        let busy = b"the-one-busy-grp".to_vec();
        let messages = group_messages(&busy, 3);
        let inputs = messages.iter().map(|data| clawx_proto::xmtp::mls::api::v1::GroupMessageInput {
            version: Some(clawx_proto::xmtp::mls::api::v1::group_message_input::Version::V1(
                clawx_proto::xmtp::mls::api::v1::group_message_input::V1 { data: data.clone(), sender_hmac: vec![1; 32], should_push: true },
            )),
        });
        node.send_group_messages(inputs.collect()).await.unwrap();

        // 1,000 quiet topics and the busy one, all from the start.
        let mut filters: Vec<(Vec<u8>, u64)> = (0..1_000u32).map(|index| (index.to_be_bytes().to_vec(), 0)).collect();
        filters.push((busy.clone(), 0));
        let before = store.message_pages.load(Ordering::SeqCst);
        let (sink, stream) = feed::queue();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(feed::run::<GroupTopic>(Arc::clone(&node), filters, sink, shutdown.clone()));
        let mut stream = Box::pin(stream);
        for _ in 0..3 {
            tokio::time::timeout(std::time::Duration::from_secs(10), stream.next()).await.expect("replayed in time").unwrap().unwrap();
        }
        assert_eq!(store.message_pages.load(Ordering::SeqCst) - before, 1, "{name}: one page read, for the busy topic only");
        shutdown.cancel();
        task.await.unwrap();
    }
}

clawx_common::backend_tests! {
    async fn the_inbox_cache_evicts_the_least_recently_used_inbox(test_db) {
        let limits = NodeLimits { inbox_cache_entries: 4, ..NodeLimits::default() };
        let (name, store, node) = counted_node(&test_db, limits).await;
        let wallet = Wallet::new();
        let (busy, update) = registration(&wallet, &Inst::new());
        node.publish_identity_update(update.clone()).await.unwrap();
        let replays_of_busy = store.identity_logs.load(Ordering::SeqCst);
        for _ in 0..20 {
            // A fresh inbox each time, then the busy one again (a retried publish: answered
            // from its cached state).
            let (_, fresh) = registration(&Wallet::new(), &Inst::new());
            node.publish_identity_update(fresh).await.unwrap();
            node.publish_identity_update(update.clone()).await.unwrap();
        }
        let reads = store.identity_logs.load(Ordering::SeqCst) - replays_of_busy;
        assert_eq!(reads, 20, "{name}: one read per fresh inbox, none for {busy}");
    }
}
