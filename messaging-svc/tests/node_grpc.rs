//! The XMTP node over gRPC, as XMTP clients call it: validation rejections, paging,
//! subscriptions that replay then go live (also across two replicas), identity logs. Each test
//! runs on SQLite + memory (`name::sqlite`) and on PostgreSQL + Redis (`name::postgres`).

mod support;

use std::time::Duration;

use clawx_common::{
    Backends, InternalAuth, Secret,
    service::ServiceConfig,
    storage::Backend,
    testing::{TestDatabase, spawn_service},
};
use clawx_messaging::node::NodeLimits;
use clawx_proto::xmtp::{
    identity::{
        api::v1::{
            GetIdentityUpdatesRequest, GetInboxIdsRequest, PublishIdentityUpdateRequest, VerifySmartContractWalletSignatureRequestSignature,
            VerifySmartContractWalletSignaturesRequest, get_identity_updates_request, get_inbox_ids_request, identity_api_client::IdentityApiClient,
        },
        associations::{self as pb, signature::Signature as S},
    },
    mls::api::v1::{
        FetchKeyPackagesRequest, GetNewestGroupMessageRequest, GroupMessage, GroupMessageInput, KeyPackageUpload, PagingInfo,
        QueryGroupMessagesRequest, QueryWelcomeMessagesRequest, SendGroupMessagesRequest, SendWelcomeMessagesRequest, SortDirection,
        SubscribeGroupMessagesRequest, SubscribeWelcomeMessagesRequest, UploadKeyPackageRequest, WelcomeMessageInput, group_message,
        group_message_input, mls_api_client::MlsApiClient, subscribe_group_messages_request, subscribe_welcome_messages_request, welcome_message,
        welcome_message_input,
    },
};
use support::*;
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

struct Replica {
    address: std::net::SocketAddr,
    mls: MlsApiClient<Channel>,
    identity: IdentityApiClient<Channel>,
}

struct Harness {
    name: &'static str,
    replicas: Vec<Replica>,
    backends: Backends,
    shutdown: CancellationToken,
    _database: TestDatabase,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start_replica(database: &TestDatabase, backends: Backends, shutdown: &CancellationToken, limits: &NodeLimits) -> Replica {
    let config = clawx_messaging::Config {
        service: ServiceConfig {
            database: database.args.clone(),
            backends,
            auth: InternalAuth::new(&Secret::new("node-test-secret-node-test-secret")),
        },
        node: limits.clone(),
        // The XMTP node never calls the identity service; nothing listens there.
        identity_url: "http://127.0.0.1:9".into(),
        message_max_bytes: clawx_messaging::dm::DEFAULT_MAX_MESSAGE_BYTES,
        spam: Default::default(),
        push: Default::default(),
        agents: Default::default(),
    };
    let token = shutdown.clone();
    let service = spawn_service(|listener| clawx_messaging::run(config, listener, token)).await;
    let mls = MlsApiClient::new(service.channel.clone()).max_decoding_message_size(64 * 1024 * 1024);
    Replica { address: service.address, mls, identity: IdentityApiClient::new(service.channel) }
}

/// `replicas` messaging services on the same data in `database`: SQLite with memory backends, or
/// PostgreSQL with Redis (`None` when Redis is not configured, unless it is required).
async fn harness_on(database: TestDatabase, replicas: usize, limits: &NodeLimits) -> Option<Harness> {
    match database.backend {
        Backend::Sqlite => {
            let shutdown = CancellationToken::new();
            let backends = Backends::memory();
            let mut started = Vec::new();
            for _ in 0..replicas {
                started.push(start_replica(&database, backends.clone(), &shutdown, limits).await);
            }
            Some(Harness { name: "sqlite+memory", replicas: started, backends, shutdown, _database: database })
        }
        Backend::Postgres => {
            let Ok(url) = std::env::var("CLAWX_TEST_REDIS_URL") else {
                assert!(std::env::var("CLAWX_TEST_REQUIRE_BACKENDS").as_deref() != Ok("1"), "Redis is required");
                return None;
            };
            let shutdown = CancellationToken::new();
            let prefix = format!("clawx-node-test-{}", rand::random::<u64>());
            let mut started = Vec::new();
            let mut first_backends = None;
            for _ in 0..replicas {
                // Each replica has its own Redis connections, as separate processes would.
                let backends = Backends::redis(&url, &prefix, shutdown.clone()).unwrap();
                assert!(backends.pubsub.wait_connected(Duration::from_secs(5)).await);
                first_backends.get_or_insert_with(|| backends.clone());
                started.push(start_replica(&database, backends, &shutdown, limits).await);
            }
            let backends = first_backends.expect("at least one replica");
            Some(Harness { name: "postgres+redis", replicas: started, backends, shutdown, _database: database })
        }
    }
}

fn v1(message: &GroupMessage) -> &group_message::V1 {
    match message.version.as_ref().unwrap() {
        group_message::Version::V1(v1) => v1,
    }
}

fn input(data: Vec<u8>) -> GroupMessageInput {
    GroupMessageInput {
        version: Some(group_message_input::Version::V1(group_message_input::V1 { data, sender_hmac: vec![7; 32], should_push: true })),
    }
}

fn paging(direction: SortDirection, limit: u32, id_cursor: u64) -> Option<PagingInfo> {
    Some(PagingInfo { direction: direction as i32, limit, id_cursor })
}

fn expect_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, needle: &str, context: &str) {
    let status = result.expect_err(context);
    assert_eq!(status.code(), Code::InvalidArgument, "{context}: {status:?}");
    assert!(status.message().contains(needle), "{context}: {:?} lacks {needle:?}", status.message());
}

clawx_common::backend_tests! {
    async fn key_packages_are_validated_and_the_latest_wins(test_db) {
        let Some(harness) = harness_on(test_db, 1, &NodeLimits::default()).await else { return };
        let name = harness.name;
        let mut mls = harness.replicas[0].mls.clone();
        let inbox = "ab".repeat(32);
        let signer = installation_signer();
        let installation_key = signer.public().to_vec();
        let upload = |key_package: Vec<u8>| UploadKeyPackageRequest {
            key_package: Some(KeyPackageUpload { key_package_tls_serialized: key_package }),
            is_inbox_id_credential: true,
        };

        let first = key_package_with(&signer, &inbox);
        mls.upload_key_package(upload(first.clone())).await.unwrap();
        // Lifetimes have one-second resolution: make the next package expire later.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let fetched = mls.fetch_key_packages(FetchKeyPackagesRequest { installation_keys: vec![installation_key.clone(), vec![9; 32]] }).await.unwrap().into_inner();
        assert_eq!(fetched.key_packages.len(), 2, "{name}: positional");
        assert_eq!(fetched.key_packages[0].key_package_tls_serialized, first, "{name}");
        assert!(fetched.key_packages[1].key_package_tls_serialized.is_empty(), "{name}: unknown key");

        let second = key_package_with(&signer, &inbox);
        mls.upload_key_package(upload(second.clone())).await.unwrap();
        let fetched = mls.fetch_key_packages(FetchKeyPackagesRequest { installation_keys: vec![installation_key.clone()] }).await.unwrap().into_inner();
        assert_eq!(fetched.key_packages[0].key_package_tls_serialized, second, "{name}: latest wins");
        // Replaying the older package (still valid, self-signed) cannot roll the installation back.
        expect_invalid(mls.upload_key_package(upload(first.clone())).await, "expires before", &format!("{name}: replayed package"));
        mls.upload_key_package(upload(second.clone())).await.unwrap();

        // Rejections store nothing.
        expect_invalid(mls.upload_key_package(upload(vec![])).await, "no key package", name);
        expect_invalid(mls.upload_key_package(UploadKeyPackageRequest { key_package: None, is_inbox_id_credential: true }).await, "no key package", name);
        expect_invalid(mls.upload_key_package(upload(vec![1, 2, 3])).await, "invalid key package", name);
        let mut tampered = second.clone();
        let last = tampered.len() - 3;
        tampered[last] ^= 1;
        expect_invalid(mls.upload_key_package(upload(tampered)).await, "invalid key package", name);
        let mut trailing = second.clone();
        trailing.push(0);
        expect_invalid(mls.upload_key_package(upload(trailing)).await, "invalid key package", name);
        expect_invalid(mls.upload_key_package(upload(key_package_with(&signer, &"cd".repeat(32)))).await, "another inbox", &format!("{name}: rebinding"));
        let (not_xmtp, _) = make_kp(CS, b"not an MlsCredential".to_vec(), None);
        expect_invalid(mls.upload_key_package(upload(not_xmtp)).await, "invalid key package", name);
        let fetched = mls.fetch_key_packages(FetchKeyPackagesRequest { installation_keys: vec![installation_key] }).await.unwrap().into_inner();
        assert_eq!(fetched.key_packages[0].key_package_tls_serialized, second, "{name}: unchanged by rejections");
    }
}

clawx_common::backend_tests! {
    async fn group_messages_are_framed_deduplicated_and_paged_like_an_xmtp_node(test_db) {
        let Some(harness) = harness_on(test_db, 1, &NodeLimits::default()).await else { return };
        let name = harness.name;
        let mut mls = harness.replicas[0].mls.clone();
        let group = b"group-one-16byte".to_vec();
        let other = b"group-two-16byte".to_vec();
        let messages = group_messages(&group, 5);
        mls.send_group_messages(SendGroupMessagesRequest { messages: messages.iter().cloned().map(input).collect() }).await.unwrap();
        mls.send_group_messages(SendGroupMessagesRequest { messages: vec![input(group_messages(&other, 1).remove(0))] }).await.unwrap();

        let query = |group_id: &[u8], paging_info| QueryGroupMessagesRequest { group_id: group_id.to_vec(), paging_info };
        let all = mls.query_group_messages(query(&group, paging(SortDirection::Ascending, 0, 0))).await.unwrap().into_inner();
        assert_eq!(all.messages.len(), 5, "{name}");
        let ids: Vec<u64> = all.messages.iter().map(|message| v1(message).id).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{name}: increasing ids {ids:?}");
        assert_eq!(all.paging_info.unwrap(), PagingInfo { direction: SortDirection::Ascending as i32, limit: 100, id_cursor: 0 }, "{name}: not full");
        for (index, message) in all.messages.iter().enumerate() {
            let message = v1(message);
            assert_eq!(message.group_id, group, "{name}: group id from the framing");
            assert_eq!(message.is_commit, index == 0, "{name}: commit flag from the framing");
            assert_eq!(message.data, messages[index]);
            assert_eq!((message.sender_hmac.clone(), message.should_push), (vec![7; 32], true));
            assert!(message.created_ns > 1_700_000_000_000_000_000, "{name}: server time in ns");
        }

        // Pages: a full page carries the cursor of the next one.
        let page = mls.query_group_messages(query(&group, paging(SortDirection::Ascending, 2, 0))).await.unwrap().into_inner();
        assert_eq!(page.messages.iter().map(|m| v1(m).id).collect::<Vec<_>>(), ids[..2]);
        assert_eq!(page.paging_info.as_ref().unwrap().id_cursor, ids[1], "{name}");
        let page = mls.query_group_messages(query(&group, paging(SortDirection::Ascending, 2, ids[1]))).await.unwrap().into_inner();
        assert_eq!(page.messages.iter().map(|m| v1(m).id).collect::<Vec<_>>(), ids[2..4]);
        let newest_first = mls.query_group_messages(query(&group, paging(SortDirection::Descending, 2, 0))).await.unwrap().into_inner();
        assert_eq!(newest_first.messages.iter().map(|m| v1(m).id).collect::<Vec<_>>(), vec![ids[4], ids[3]], "{name}");
        let older = mls.query_group_messages(query(&group, paging(SortDirection::Descending, 100, ids[3]))).await.unwrap().into_inner();
        assert_eq!(older.messages.iter().map(|m| v1(m).id).collect::<Vec<_>>(), vec![ids[2], ids[1], ids[0]], "{name}");
        let unspecified = mls.query_group_messages(query(&group, None)).await.unwrap().into_inner();
        assert_eq!(v1(&unspecified.messages[0]).id, ids[4], "{name}: no direction means newest first");

        // The newest message per group, without content unless asked.
        let newest = mls
            .get_newest_group_message(GetNewestGroupMessageRequest { group_ids: vec![group.clone(), b"nothing-here-yet".to_vec(), other.clone()], include_content: false })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(newest.responses.len(), 3, "{name}: positional");
        let first = v1(newest.responses[0].group_message.as_ref().unwrap());
        assert_eq!((first.id, first.data.is_empty()), (ids[4], true), "{name}");
        assert!(newest.responses[1].group_message.is_none());
        assert_eq!(v1(newest.responses[2].group_message.as_ref().unwrap()).group_id, other);

        // A resent message is stored once; a bad message in a batch stores nothing.
        mls.send_group_messages(SendGroupMessagesRequest { messages: vec![input(messages[4].clone())] }).await.unwrap();
        let more = group_messages(&group, 3);
        expect_invalid(mls.send_group_messages(SendGroupMessagesRequest { messages: vec![input(more[1].clone()), input(vec![0, 1, 0, 2, 9])] }).await, "invalid group message 1", name);
        expect_invalid(mls.send_group_messages(SendGroupMessagesRequest { messages: vec![input(more[1].clone()), input(vec![])] }).await, "invalid group message 1", name);
        expect_invalid(mls.send_group_messages(SendGroupMessagesRequest { messages: vec![GroupMessageInput { version: None }] }).await, "missing v1", name);
        expect_invalid(mls.send_group_messages(SendGroupMessagesRequest { messages: vec![] }).await, "no group messages", name);
        let mut trailing = messages[1].clone();
        trailing.push(0);
        expect_invalid(mls.send_group_messages(SendGroupMessagesRequest { messages: vec![input(trailing)] }).await, "invalid group message", name);
        let after = mls.query_group_messages(query(&group, paging(SortDirection::Ascending, 0, 0))).await.unwrap().into_inner();
        assert_eq!(after.messages.len(), 5, "{name}: nothing stored by rejected calls, no duplicate");
        expect_invalid(mls.query_group_messages(query(&[], None)).await, "group id", name);
    }
}

fn welcome_v1(installation_key: &[u8], data: &[u8], hpke: &[u8], algorithm: i32) -> WelcomeMessageInput {
    WelcomeMessageInput {
        version: Some(welcome_message_input::Version::V1(welcome_message_input::V1 {
            installation_key: installation_key.to_vec(),
            data: data.to_vec(),
            hpke_public_key: hpke.to_vec(),
            wrapper_algorithm: algorithm,
            welcome_metadata: b"metadata".to_vec(),
        })),
    }
}

clawx_common::backend_tests! {
    async fn welcomes_are_checked_stored_and_paged(test_db) {
        let Some(harness) = harness_on(test_db, 1, &NodeLimits::default()).await else { return };
        let name = harness.name;
        let mut mls = harness.replicas[0].mls.clone();
        let key = vec![3u8; 32];
        let pointer = WelcomeMessageInput {
            version: Some(welcome_message_input::Version::WelcomePointer(welcome_message_input::WelcomePointer {
                installation_key: key.clone(),
                welcome_pointer: b"pointer".to_vec(),
                hpke_public_key: vec![5; 1216],
                wrapper_algorithm: 2,
            })),
        };
        mls.send_welcome_messages(SendWelcomeMessagesRequest { messages: vec![welcome_v1(&key, b"welcome-1", &[4; 1216], 2), pointer.clone()] }).await.unwrap();
        // Symmetric-key welcomes (targets of pointers) carry no HPKE key.
        mls.send_welcome_messages(SendWelcomeMessagesRequest { messages: vec![welcome_v1(&key, b"welcome-2", &[], 3)] }).await.unwrap();

        for (bad, needle) in [
            (welcome_v1(&key, b"", &[4; 32], 2), "data is empty"),
            (welcome_v1(&key, b"x", &[], 2), "hpke_public_key is empty"),
            (welcome_v1(&[], b"x", &[4; 32], 2), "installation key"),
            (WelcomeMessageInput { version: None }, "missing version"),
        ] {
            expect_invalid(mls.send_welcome_messages(SendWelcomeMessagesRequest { messages: vec![welcome_v1(&key, b"fine", &[4; 32], 2), bad] }).await, needle, name);
        }
        let mut wrong_wrapper = pointer.clone();
        if let Some(welcome_message_input::Version::WelcomePointer(p)) = wrong_wrapper.version.as_mut() {
            p.wrapper_algorithm = 1;
        }
        expect_invalid(mls.send_welcome_messages(SendWelcomeMessagesRequest { messages: vec![wrong_wrapper] }).await, "X-Wing", name);

        let page = mls
            .query_welcome_messages(QueryWelcomeMessagesRequest { installation_key: key.clone(), paging_info: paging(SortDirection::Ascending, 0, 0) })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.messages.len(), 3, "{name}: the rejected batches stored nothing");
        match page.messages[0].version.as_ref().unwrap() {
            welcome_message::Version::V1(v1) => {
                assert_eq!((v1.data.as_slice(), v1.wrapper_algorithm, v1.welcome_metadata.as_slice()), (&b"welcome-1"[..], 2, &b"metadata"[..]), "{name}");
                assert_eq!(v1.hpke_public_key.len(), 1216);
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(matches!(page.messages[1].version, Some(welcome_message::Version::WelcomePointer(_))), "{name}");
        let empty = mls.query_welcome_messages(QueryWelcomeMessagesRequest { installation_key: vec![8; 32], paging_info: None }).await.unwrap().into_inner();
        assert!(empty.messages.is_empty());
    }
}

clawx_common::backend_tests! {
    async fn subscriptions_replay_then_go_live_without_gaps_or_duplicates(test_db) {
        let Some(harness) = harness_on(test_db, 2, &NodeLimits::default()).await else { return };
        let name = harness.name;
        let mut writer = harness.replicas[1].mls.clone();
        let mut reader = harness.replicas[0].mls.clone();
        let group = b"subscribed-group".to_vec();
        let messages = group_messages(&group, 40);
        writer.send_group_messages(SendGroupMessagesRequest { messages: messages[..3].iter().cloned().map(input).collect() }).await.unwrap();
        let stored = writer
            .query_group_messages(QueryGroupMessagesRequest { group_id: group.clone(), paging_info: paging(SortDirection::Ascending, 0, 0) })
            .await
            .unwrap()
            .into_inner()
            .messages;
        let first_id = v1(&stored[0]).id;

        // Subscribe on one replica from after the first message; write on the other, concurrently.
        let filter = subscribe_group_messages_request::Filter { group_id: group.clone(), id_cursor: first_id };
        let mut stream = reader.subscribe_group_messages(SubscribeGroupMessagesRequest { filters: vec![filter] }).await.unwrap().into_inner();
        let writes = tokio::spawn({
            let mut writer = writer.clone();
            let messages = messages.clone();
            async move {
                for message in &messages[3..] {
                    writer.send_group_messages(SendGroupMessagesRequest { messages: vec![input(message.clone())] }).await.unwrap();
                }
            }
        });
        let mut received = Vec::new();
        while received.len() < 39 {
            let message = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("delivered in time").unwrap().unwrap();
            received.push(v1(&message).clone());
        }
        writes.await.unwrap();
        let ids: Vec<u64> = received.iter().map(|message| message.id).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{name}: ordered, no duplicates: {ids:?}");
        assert_eq!(received.iter().map(|message| message.data.clone()).collect::<Vec<_>>(), messages[1..].to_vec(), "{name}: nothing missed");
        assert!(tokio::time::timeout(Duration::from_millis(300), stream.message()).await.is_err(), "{name}: nothing extra");
        drop(stream);

        // An empty filter list stays open; welcomes stream the same way.
        let mut idle = reader.subscribe_group_messages(SubscribeGroupMessagesRequest { filters: vec![] }).await.unwrap().into_inner();
        assert!(tokio::time::timeout(Duration::from_millis(300), idle.message()).await.is_err(), "{name}: open, silent");
        let key = vec![6u8; 32];
        writer.send_welcome_messages(SendWelcomeMessagesRequest { messages: vec![welcome_v1(&key, b"w1", &[1; 32], 2)] }).await.unwrap();
        let filter = subscribe_welcome_messages_request::Filter { installation_key: key.clone(), id_cursor: 0 };
        let mut welcomes = reader.subscribe_welcome_messages(SubscribeWelcomeMessagesRequest { filters: vec![filter] }).await.unwrap().into_inner();
        writer.send_welcome_messages(SendWelcomeMessagesRequest { messages: vec![welcome_v1(&key, b"w2", &[1; 32], 2)] }).await.unwrap();
        for expected in [&b"w1"[..], b"w2"] {
            let welcome = tokio::time::timeout(Duration::from_secs(10), welcomes.message()).await.expect("in time").unwrap().unwrap();
            let Some(welcome_message::Version::V1(v1)) = welcome.version else { panic!("{name}") };
            assert_eq!(v1.data, expected, "{name}: replayed, then live");
        }
        // The stream keeps serving after its client went away and came back.
        drop(welcomes);
        drop(idle);
        writer.send_group_messages(SendGroupMessagesRequest { messages: vec![input(group_messages(&group, 1).remove(0))] }).await.unwrap();
    }
}

clawx_common::backend_tests! {
    async fn a_subscription_frees_what_it_held_when_its_client_leaves(test_db) {
        let Some(harness) = harness_on(test_db, 1, &NodeLimits::default()).await else { return };
        let name = harness.name;
        let mut mls = harness.replicas[0].mls.clone();
        let baseline = harness.backends.pubsub.channel_count();
        let filters: Vec<_> = (0..50u8)
            .map(|index| subscribe_group_messages_request::Filter { group_id: vec![index; 16], id_cursor: 0 })
            .collect();
        let stream = mls.subscribe_group_messages(SubscribeGroupMessagesRequest { filters }).await.unwrap().into_inner();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while harness.backends.pubsub.channel_count() < baseline + 50 {
            assert!(tokio::time::Instant::now() < deadline, "{name}: subscribed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(stream);
        while harness.backends.pubsub.channel_count() > baseline {
            assert!(tokio::time::Instant::now() < deadline, "{name}: channels freed after the client left");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let too_many: Vec<_> = (0..2001u32)
            .map(|index| subscribe_group_messages_request::Filter { group_id: index.to_be_bytes().to_vec(), id_cursor: 0 })
            .collect();
        expect_invalid(mls.subscribe_group_messages(SubscribeGroupMessagesRequest { filters: too_many }).await, "at most", name);
    }
}

/// A commit-log entry of `group` as libxmtp publishes it: a `PlaintextCommitLogEntry` signed
/// with plain Ed25519 by the group's commit-log key.
fn commit_log_entry(key: &ed25519_dalek::SigningKey, group: &[u8], sequence: u64) -> clawx_proto::xmtp::mls::api::v1::PublishCommitLogRequest {
    use ed25519_dalek::Signer as _;
    use prost::Message as _;
    let plaintext = clawx_proto::xmtp::mls::message_contents::PlaintextCommitLogEntry {
        group_id: group.to_vec(),
        commit_sequence_id: sequence,
        last_epoch_authenticator: vec![9; 32],
        commit_result: 1,
        applied_epoch_number: sequence,
        applied_epoch_authenticator: vec![8; 32],
    }
    .encode_to_vec();
    let signature =
        pb::RecoverableEd25519Signature { bytes: key.sign(&plaintext).to_bytes().to_vec(), public_key: key.verifying_key().to_bytes().to_vec() };
    clawx_proto::xmtp::mls::api::v1::PublishCommitLogRequest {
        group_id: group.to_vec(),
        serialized_commit_log_entry: plaintext,
        signature: Some(signature),
    }
}

clawx_common::backend_tests! {
    async fn commit_log_entries_must_be_signed_by_the_group_key_and_read_back_in_order(test_db) {
        use clawx_proto::xmtp::mls::api::v1::{BatchPublishCommitLogRequest, BatchQueryCommitLogRequest, QueryCommitLogRequest};
        let Some(harness) = harness_on(test_db, 1, &NodeLimits::default()).await else { return };
        let name = harness.name;
        let mut mls = harness.replicas[0].mls.clone();
        let group_key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let stranger = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let publish = |requests| BatchPublishCommitLogRequest { requests };

        let mut unsigned = commit_log_entry(&group_key, b"g", 1);
        unsigned.signature = None;
        expect_invalid(mls.batch_publish_commit_log(publish(vec![unsigned])).await, "not signed", name);
        let mut forged = commit_log_entry(&group_key, b"g", 1);
        forged.serialized_commit_log_entry[0] ^= 1;
        expect_invalid(mls.batch_publish_commit_log(publish(vec![forged])).await, "does not verify", name);
        let mut elsewhere = commit_log_entry(&group_key, b"other", 1);
        elsewhere.group_id = b"g".to_vec();
        expect_invalid(mls.batch_publish_commit_log(publish(vec![elsewhere])).await, "another group", name);
        let mut garbage = commit_log_entry(&group_key, b"g", 1);
        garbage.serialized_commit_log_entry = vec![0xff; 64];
        let signature = {
            use ed25519_dalek::Signer as _;
            group_key.sign(&garbage.serialized_commit_log_entry).to_bytes().to_vec()
        };
        garbage.signature.as_mut().unwrap().bytes = signature;
        expect_invalid(mls.batch_publish_commit_log(publish(vec![garbage])).await, "not a commit log entry", name);
        let eleven: Vec<_> = (1..=11).map(|sequence| commit_log_entry(&group_key, b"g", sequence)).collect();
        expect_invalid(mls.batch_publish_commit_log(publish(eleven)).await, "at most 10", name);

        // The group's first signer owns its log; a stranger's entries are skipped, not stored.
        mls.batch_publish_commit_log(publish(vec![commit_log_entry(&group_key, b"g", 1), commit_log_entry(&stranger, b"g", 2), commit_log_entry(&group_key, b"g", 3)]))
            .await
            .unwrap();
        mls.batch_publish_commit_log(publish(vec![commit_log_entry(&stranger, b"h", 1)])).await.unwrap();

        // A group asked for twice is answered once, from the smaller cursor.
        let query = |group: &[u8], cursor| QueryCommitLogRequest { group_id: group.to_vec(), paging_info: paging(SortDirection::Ascending, 0, cursor) };
        let reply = mls
            .batch_query_commit_log(BatchQueryCommitLogRequest { requests: vec![query(b"g", 0), query(b"h", 0), query(b"g", 1 << 40)] })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.responses.len(), 2, "{name}: one answer per group");
        assert_eq!(reply.responses[0].group_id, b"g", "{name}");
        let entries = &reply.responses[0].commit_log_entries;
        let sequences: Vec<u64> = entries
            .iter()
            .map(|entry| {
                use prost::Message as _;
                clawx_proto::xmtp::mls::message_contents::PlaintextCommitLogEntry::decode(entry.serialized_commit_log_entry.as_slice()).unwrap().commit_sequence_id
            })
            .collect();
        assert_eq!(sequences, vec![1, 3], "{name}: only the group key's entries, in order");
        assert!(entries[0].sequence_id < entries[1].sequence_id, "{name}");
        assert_eq!(entries[0].signature.as_ref().unwrap().public_key, group_key.verifying_key().to_bytes().to_vec(), "{name}");
        assert_eq!(reply.responses[1].commit_log_entries.len(), 1, "{name}: another group, its own first signer");
        let many: Vec<_> = (0..21u8).map(|index| query(&[index], 0)).collect();
        expect_invalid(mls.batch_query_commit_log(BatchQueryCommitLogRequest { requests: many }).await, "at most 20", name);
    }
}

fn publish(update: pb::IdentityUpdate) -> PublishIdentityUpdateRequest {
    PublishIdentityUpdateRequest { identity_update: Some(update) }
}

async fn log_len(identity: &mut IdentityApiClient<Channel>, inbox: &str) -> usize {
    let request = GetIdentityUpdatesRequest { requests: vec![get_identity_updates_request::Request { inbox_id: inbox.to_string(), sequence_id: 0 }] };
    identity.get_identity_updates(request).await.unwrap().into_inner().responses[0].updates.len()
}

async fn inbox_of(identity: &mut IdentityApiClient<Channel>, address: &str) -> Option<String> {
    let request = GetInboxIdsRequest { requests: vec![get_inbox_ids_request::Request { identifier: address.to_string(), identifier_kind: 1 }] };
    identity.get_inbox_ids(request).await.unwrap().into_inner().responses[0].inbox_id.clone()
}

clawx_common::backend_tests! {
    async fn identity_updates_are_verified_before_they_are_stored(test_db) {
        let Some(harness) = harness_on(test_db, 1, &NodeLimits::default()).await else { return };
        let name = harness.name;
        let mut identity = harness.replicas[0].identity.clone();
        let wallet = Wallet::new();
        let installation = Inst::new();
        let (inbox, registration) = registration(&wallet, &installation);

        // Nothing exists before the first update; an update that is not a creation is refused.
        let stranger = Inst::new();
        let orphan = build(&inbox, ts(), vec![A::Add(stranger.id(), Signer::W(&wallet), Signer::I(&stranger))]);
        expect_invalid(identity.publish_identity_update(publish(orphan)).await, "not yet created", name);
        let empty = pb::IdentityUpdate { actions: vec![], client_timestamp_ns: ts(), inbox_id: inbox.clone() };
        expect_invalid(identity.publish_identity_update(publish(empty.clone())).await, "not yet created", name);
        let mut forged = registration.clone();
        if let Some(pb::identity_action::Kind::Add(add)) = forged.actions[1].kind.as_mut()
            && let Some(S::InstallationKey(signature)) = add.new_member_signature.as_mut().and_then(|signature| signature.signature.as_mut())
        {
            signature.bytes[0] ^= 1;
        }
        expect_invalid(identity.publish_identity_update(publish(forged)).await, "ed25519", name);
        let mut wrong_inbox = registration.clone();
        wrong_inbox.inbox_id = "ef".repeat(32);
        expect_invalid(identity.publish_identity_update(publish(wrong_inbox)).await, "", name);
        let scw = pb::Signature {
            signature: Some(S::Erc6492(pb::SmartContractWalletSignature { account_id: format!("eip155:1:{}", wallet.address()), block_number: 1, signature: vec![1] })),
        };
        let contract = build(&inbox, ts(), vec![A::Create(wallet.address(), 1, Signer::Raw(scw))]);
        expect_invalid(identity.publish_identity_update(publish(contract)).await, "unsupported", name);
        expect_invalid(identity.publish_identity_update(PublishIdentityUpdateRequest { identity_update: None }).await, "required", name);
        assert_eq!(log_len(&mut identity, &inbox).await, 0, "{name}: nothing stored");

        // The registration creates the inbox and maps the wallet to it (any case).
        identity.publish_identity_update(publish(registration.clone())).await.unwrap();
        assert_eq!(log_len(&mut identity, &inbox).await, 1, "{name}");
        assert_eq!(inbox_of(&mut identity, &wallet.address().to_uppercase().replace("0X", "0x")).await.as_deref(), Some(inbox.as_str()), "{name}");
        // A retried publish is answered OK and stored once; an empty update is a no-op.
        identity.publish_identity_update(publish(registration.clone())).await.unwrap();
        identity.publish_identity_update(publish(empty)).await.unwrap();
        assert_eq!(log_len(&mut identity, &inbox).await, 1, "{name}: idempotent");
        expect_invalid(identity.publish_identity_update(publish(build(&inbox, ts(), vec![A::Create(wallet.address(), 1, Signer::W(&wallet))]))).await, "Multiple create", name);

        // Link a second wallet (signed by the installation), then revoke it (by the recovery wallet).
        let second = Wallet::new();
        let link = build(&inbox, ts(), vec![A::Add(second.id(), Signer::I(&installation), Signer::W(&second))]);
        identity.publish_identity_update(publish(link.clone())).await.unwrap();
        assert_eq!(inbox_of(&mut identity, &second.address()).await.as_deref(), Some(inbox.as_str()), "{name}: linked");
        let not_recovery = build(&inbox, ts(), vec![A::Revoke(second.id(), Signer::W(&second))]);
        expect_invalid(identity.publish_identity_update(publish(not_recovery)).await, "Missing existing member", name);
        let revoke = build(&inbox, ts(), vec![A::Revoke(second.id(), Signer::W(&wallet))]);
        identity.publish_identity_update(publish(revoke)).await.unwrap();
        assert_eq!(inbox_of(&mut identity, &second.address()).await, None, "{name}: unlinked");
        // Replaying the old link (same signatures) is refused.
        let mut replayed = link.clone();
        replayed.client_timestamp_ns += 1;
        expect_invalid(identity.publish_identity_update(publish(replayed)).await, "", name);
        assert_eq!(log_len(&mut identity, &inbox).await, 3, "{name}");

        // Updates after a sequence id, and unknown inboxes.
        let request = GetIdentityUpdatesRequest {
            requests: vec![
                get_identity_updates_request::Request { inbox_id: inbox.clone(), sequence_id: 0 },
                get_identity_updates_request::Request { inbox_id: "00".repeat(32), sequence_id: 0 },
            ],
        };
        let responses = identity.get_identity_updates(request).await.unwrap().into_inner().responses;
        assert_eq!(responses[1].updates.len(), 0, "{name}");
        let sequence_ids: Vec<u64> = responses[0].updates.iter().map(|update| update.sequence_id).collect();
        assert!(sequence_ids.windows(2).all(|pair| pair[0] < pair[1]), "{name}");
        assert_eq!(responses[0].updates[0].update.as_ref().unwrap(), &registration, "{name}: served as validated");
        let after_first = GetIdentityUpdatesRequest { requests: vec![get_identity_updates_request::Request { inbox_id: inbox.clone(), sequence_id: sequence_ids[0] }] };
        assert_eq!(identity.get_identity_updates(after_first).await.unwrap().into_inner().responses[0].updates.len(), 2, "{name}");

        let verify = VerifySmartContractWalletSignaturesRequest {
            signatures: vec![VerifySmartContractWalletSignatureRequestSignature::default(), VerifySmartContractWalletSignatureRequestSignature::default()],
        };
        let responses = identity.verify_smart_contract_wallet_signatures(verify).await.unwrap().into_inner().responses;
        assert_eq!(responses.len(), 2, "{name}: one answer per signature");
        assert!(responses.iter().all(|response| !response.is_valid && response.error.is_some()));
    }
}

clawx_common::backend_tests! {
    async fn an_inbox_log_is_capped(test_db) {
        let Some(harness) = harness_on(test_db, 1, &NodeLimits::default()).await else { return };
        let name = harness.name;
        let mut identity = harness.replicas[0].identity.clone();
        let wallet = Wallet::new();
        let installation = Inst::new();
        let (inbox, registration) = registration(&wallet, &installation);
        identity.publish_identity_update(publish(registration)).await.unwrap();
        for _ in 1..256 {
            let next = Inst::new();
            identity.publish_identity_update(publish(build(&inbox, ts(), vec![A::Add(next.id(), Signer::W(&wallet), Signer::I(&next))]))).await.unwrap();
        }
        let one_more = Inst::new();
        let status = identity
            .publish_identity_update(publish(build(&inbox, ts(), vec![A::Add(one_more.id(), Signer::W(&wallet), Signer::I(&one_more))])))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{name}: {status:?}");
        assert_eq!(log_len(&mut identity, &inbox).await, 256, "{name}");
    }
}

clawx_common::backend_tests! {
    async fn real_libxmtp_writes_are_accepted_in_order(test_db) {
        let fixtures = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/xmtp"));
        let sorted = |dir: &str| {
            let mut files: Vec<(u64, Vec<u8>)> = std::fs::read_dir(fixtures.join(dir))
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .map(|path| {
                    let name = path.file_name().unwrap().to_string_lossy().to_string();
                    (name.split('_').nth(1).unwrap().parse().unwrap(), std::fs::read(&path).unwrap())
                })
                .collect();
            files.sort_by_key(|(sequence, _)| *sequence);
            files
        };
        let clients: serde_json::Value = serde_json::from_slice(&std::fs::read(fixtures.join("capture_clients.json")).unwrap()).unwrap();
        let Some(harness) = harness_on(test_db, 1, &NodeLimits::default()).await else { return };
        let name = harness.name;
        let mut identity = harness.replicas[0].identity.clone();
        let mut mls = harness.replicas[0].mls.clone();
        for (sequence, bytes) in sorted("identity_updates") {
            let request = <PublishIdentityUpdateRequest as prost::Message>::decode(bytes.as_slice()).unwrap();
            identity.publish_identity_update(request).await.unwrap_or_else(|status| panic!("{name}: update {sequence}: {status:?}"));
        }
        let alice = clients["alice"]["inboxId"].as_str().unwrap();
        assert_eq!(log_len(&mut identity, alice).await, 6, "{name}");
        let address = clients["alice"]["address"].as_str().unwrap();
        assert_eq!(inbox_of(&mut identity, address).await.as_deref(), Some(alice), "{name}");
        for (sequence, bytes) in sorted("group_messages") {
            mls.send_group_messages(SendGroupMessagesRequest { messages: vec![input(bytes)] }).await.unwrap_or_else(|status| panic!("{name}: message {sequence}: {status:?}"));
        }
        let dm = hex::decode(clients["dmGroupId"].as_str().unwrap()).unwrap();
        let stored = mls.query_group_messages(QueryGroupMessagesRequest { group_id: dm, paging_info: paging(SortDirection::Ascending, 0, 0) }).await.unwrap().into_inner();
        assert!(stored.messages.len() >= 3, "{name}: the DM's messages");
        assert!(stored.messages.iter().any(|message| v1(message).is_commit) && stored.messages.iter().any(|message| !v1(message).is_commit));
    }
}

// ------------------------------------------------------------------ abuse bounds

fn expect_exhausted<T: std::fmt::Debug>(result: Result<T, tonic::Status>, needle: &str, context: &str) {
    let status = result.expect_err(context);
    assert_eq!(status.code(), Code::ResourceExhausted, "{context}: {status:?}");
    assert!(status.message().contains(needle), "{context}: {:?} lacks {needle:?}", status.message());
}

clawx_common::backend_tests! {
    async fn repeated_keys_are_read_once_and_replies_stay_within_their_byte_budget(test_db) {
        let limits = NodeLimits { max_reply_bytes: 1024 * 1024, ..NodeLimits::default() };
        let Some(harness) = harness_on(test_db, 1, &limits).await else { return };
        let name = harness.name;
        let mut mls = harness.replicas[0].mls.clone();
        let mut identity = harness.replicas[0].identity.clone();
        let group = b"budgeted-group-1".to_vec();
        for _ in 0..3 {
            mls.send_group_messages(SendGroupMessagesRequest { messages: vec![input(big_group_message(&group, 400 * 1024))] }).await.unwrap();
        }

        // A page stops before the reply would pass the budget, and says where to go on.
        let query = |cursor| QueryGroupMessagesRequest { group_id: group.clone(), paging_info: paging(SortDirection::Ascending, 0, cursor) };
        let first = mls.query_group_messages(query(0)).await.unwrap().into_inner();
        assert_eq!(first.messages.len(), 2, "{name}: cut by bytes");
        let cursor = first.paging_info.unwrap().id_cursor;
        assert_eq!(cursor, v1(&first.messages[1]).id, "{name}: the next page's cursor");
        let rest = mls.query_group_messages(query(cursor)).await.unwrap().into_inner();
        assert_eq!((rest.messages.len(), rest.paging_info.unwrap().id_cursor), (1, 0), "{name}: the last page");

        // The same group asked for again and again: read once, but the answer must still fit.
        let newest = |group_ids: Vec<Vec<u8>>, include_content| GetNewestGroupMessageRequest { group_ids, include_content };
        expect_exhausted(mls.get_newest_group_message(newest(vec![group.clone(); 3], true)).await, "would exceed", name);
        let heads = mls.get_newest_group_message(newest(vec![group.clone(); 1000], false)).await.unwrap().into_inner();
        assert_eq!(heads.responses.len(), 1000, "{name}: positional, without content");
        expect_invalid(mls.get_newest_group_message(newest(vec![group.clone(); 1001], false)).await, "at most 1000", name);

        // Identity logs: an inbox asked for five times is answered once; key packages stay positional.
        let wallet = Wallet::new();
        let installation = Inst::new();
        let (inbox, update) = registration(&wallet, &installation);
        identity.publish_identity_update(publish(update)).await.unwrap();
        let ask = |inbox: &str, sequence_id| get_identity_updates_request::Request { inbox_id: inbox.to_string(), sequence_id };
        let requests = vec![ask(&inbox, 5), ask(&inbox, 0), ask(&inbox, 7), ask(&inbox, 0), ask(&inbox, 0)];
        let logs = identity.get_identity_updates(GetIdentityUpdatesRequest { requests }).await.unwrap().into_inner();
        assert_eq!(logs.responses.len(), 1, "{name}: one answer per inbox");
        assert_eq!(logs.responses[0].updates.len(), 1, "{name}: from the smallest cursor");
        let too_many: Vec<_> = (0..101).map(|index| ask(&format!("{index:064x}"), 0)).collect();
        expect_invalid(identity.get_identity_updates(GetIdentityUpdatesRequest { requests: too_many }).await, "at most 100", name);
        let (key_package, installation_key) = key_package_for(&inbox);
        mls.upload_key_package(UploadKeyPackageRequest { key_package: Some(KeyPackageUpload { key_package_tls_serialized: key_package.clone() }), is_inbox_id_credential: false })
            .await
            .unwrap();
        let fetched = mls.fetch_key_packages(FetchKeyPackagesRequest { installation_keys: vec![installation_key.clone(); 3] }).await.unwrap().into_inner();
        assert!(fetched.key_packages.iter().all(|found| found.key_package_tls_serialized == key_package) && fetched.key_packages.len() == 3, "{name}");
        let identifiers: Vec<_> = (0..1001).map(|_| get_inbox_ids_request::Request { identifier: wallet.address(), identifier_kind: 1 }).collect();
        expect_invalid(identity.get_inbox_ids(GetInboxIdsRequest { requests: identifiers }).await, "at most 1000", name);
    }
}

clawx_common::backend_tests! {
    async fn oversized_messages_and_welcomes_are_refused(test_db) {
        let limits = NodeLimits { max_message_bytes: 64 * 1024, max_welcome_bytes: 64 * 1024, ..NodeLimits::default() };
        let Some(harness) = harness_on(test_db, 1, &limits).await else { return };
        let name = harness.name;
        let mut mls = harness.replicas[0].mls.clone();
        let group = b"oversized-group1".to_vec();
        mls.send_group_messages(SendGroupMessagesRequest { messages: vec![input(big_group_message(&group, 60 * 1024))] }).await.unwrap();
        let big = big_group_message(&group, 100 * 1024);
        expect_invalid(mls.send_group_messages(SendGroupMessagesRequest { messages: vec![input(big)] }).await, "larger than 65536 bytes", name);
        let key = vec![5u8; 32];
        mls.send_welcome_messages(SendWelcomeMessagesRequest { messages: vec![welcome_v1(&key, &[1; 60 * 1024], &[1; 32], 2)] }).await.unwrap();
        let welcome = welcome_v1(&key, &[1; 100 * 1024], &[1; 32], 2);
        expect_invalid(mls.send_welcome_messages(SendWelcomeMessagesRequest { messages: vec![welcome] }).await, "larger than 65536 bytes", name);
        let welcomes: Vec<_> = (0..101u8).map(|index| welcome_v1(&key, &[index], &[1; 32], 2)).collect();
        expect_invalid(mls.send_welcome_messages(SendWelcomeMessagesRequest { messages: welcomes }).await, "at most 100", name);
    }
}

clawx_common::backend_tests! {
    async fn identity_updates_are_bounded_in_size_free_text_and_signatures(test_db) {
        let Some(harness) = harness_on(test_db, 1, &NodeLimits::default()).await else { return };
        let name = harness.name;
        let mut identity = harness.replicas[0].identity.clone();
        let wallet = Wallet::new();
        let installation = Inst::new();
        let (inbox, update) = registration(&wallet, &installation);

        // relying_party is covered by no signature: bounded, and a huge one bounds the update.
        let with_relying_party = |bytes: usize| {
            let mut update = update.clone();
            let Some(pb::identity_action::Kind::CreateInbox(create)) = update.actions[0].kind.as_mut() else { panic!() };
            create.relying_party = Some("r".repeat(bytes));
            update
        };
        expect_invalid(identity.publish_identity_update(publish(with_relying_party(300))).await, "longer than 256 bytes", name);
        expect_invalid(identity.publish_identity_update(publish(with_relying_party(20 * 1024))).await, "at most 16384 bytes", name);
        assert_eq!(log_len(&mut identity, &inbox).await, 0, "{name}: nothing stored");
        identity.publish_identity_update(publish(update)).await.unwrap();

        // Every signature in an inbox's log is verified again when it is replayed: capped.
        let mut refused = None;
        for round in 0..10 {
            let added: Vec<Inst> = (0..60).map(|_| Inst::new()).collect();
            let actions = added.iter().map(|new| A::Add(new.id(), Signer::W(&wallet), Signer::I(new))).collect();
            match identity.publish_identity_update(publish(build(&inbox, ts(), actions))).await {
                Ok(_) => {}
                Err(status) => {
                    refused = Some((round, status));
                    break;
                }
            }
        }
        let (round, status) = refused.expect("the log fills up");
        assert_eq!((round, status.code()), (8, Code::ResourceExhausted), "{name}: {status:?}");
        assert!(status.message().contains("1024 signatures"), "{name}: {status:?}");
        assert_eq!(log_len(&mut identity, &inbox).await, 9, "{name}");
    }
}

/// A subscription request as the gateway forwards it for `client`.
fn from_client<T>(message: T, client: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("clawx-client-ip", client.parse().unwrap());
    request
}

clawx_common::backend_tests! {
    async fn subscriptions_are_admitted_per_client_address_and_fairly(test_db) {
        let limits = NodeLimits { max_subscriptions: 2_000, topics_per_client: 3_000, ..NodeLimits::default() };
        let Some(harness) = harness_on(test_db, 1, &limits).await else { return };
        let name = harness.name;
        let address = harness.replicas[0].address;
        let connect = || async move { MlsApiClient::new(Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap()) };
        let topics = |count: u32, salt: u8| -> Vec<subscribe_group_messages_request::Filter> {
            (0..count).map(|index| subscribe_group_messages_request::Filter { group_id: [&[salt][..], &index.to_be_bytes()].concat(), id_cursor: 0 }).collect()
        };
        let subscribe = |mut client: MlsApiClient<Channel>, filters, ip: String| async move {
            client.subscribe_group_messages(from_client(SubscribeGroupMessagesRequest { filters }, &ip)).await.map(|response| response.into_inner())
        };

        // Topics per client address, over all its streams; IPv6 addresses count by their /64.
        let mut held = Vec::new();
        held.push(subscribe(connect().await, topics(2_000, 1), "198.51.100.1".into()).await.unwrap());
        expect_exhausted(subscribe(connect().await, topics(2_000, 2), "198.51.100.1".into()).await, "at most 3000 topics", name);
        held.push(subscribe(connect().await, topics(2_000, 3), "198.51.100.2".into()).await.unwrap());
        held.push(subscribe(connect().await, topics(2_000, 4), "2001:db8:0:1::1".into()).await.unwrap());
        expect_exhausted(subscribe(connect().await, topics(2_000, 5), "2001:db8:0:1::ffff".into()).await, "at most 3000 topics", name);
        held.clear();

        // A hundred busy addresses, each opening streams until refused, leave room for the next.
        let mut open = Vec::new();
        let mut refusals = 0;
        for client in 0..100u32 {
            let channel = connect().await;
            let ip = format!("203.0.113.{}", client % 250 + 1);
            let ip = if client >= 250 { format!("2001:db8:{client:x}::1") } else { ip };
            for stream in 0..40u32 {
                match subscribe(channel.clone(), topics(1, (stream % 200) as u8 + 10), ip.clone()).await {
                    Ok(stream) => open.push(stream),
                    Err(status) => {
                        assert_eq!(status.code(), Code::ResourceExhausted, "{name}: {status:?}");
                        refusals += 1;
                        break;
                    }
                }
            }
        }
        assert!(refusals > 0 && open.len() < 2_000, "{name}: the replica filled up ({} open)", open.len());
        let newcomer = subscribe(connect().await, topics(1, 9), "192.0.2.200".into()).await;
        assert!(newcomer.is_ok(), "{name}: a new address still gets in: {newcomer:?}");
    }
}

clawx_common::backend_tests! {
    async fn group_messages_on_a_registered_topic_queue_a_push_notification(test_db) {
        let database = clawx_common::Database::connect(&test_db.args, "messaging").await.unwrap();
        let Some(harness) = harness_on(test_db, 1, &NodeLimits::default()).await else { return };
        let name = harness.name;
        let mut mls = harness.replicas[0].mls.clone();
        let group = b"group-push-16byt".to_vec();
        let quiet = b"group-none-16byt".to_vec();
        let topic = clawx_messaging::push::store::xmtp_topic('g', &group);
        let push = clawx_messaging::push::store::for_database(&database);
        let registration = clawx_messaging::push::store::TopicRegistration { topic_key: topic.clone(), topic: topic.clone(), peer: None };
        let limits = clawx_messaging::push::store::RegistrationLimits { max_targets: 10, max_topics: 10, max_targets_per_xmtp_topic: 20 };
        // A documentation address: the worker refuses to call it, so the job stays, marked failed.
        let target = match push.register(7, "webhook", "https://192.0.2.1/hook", &[registration], limits, 1).await.unwrap() {
            clawx_messaging::push::store::Registered::Done { target_id, .. } => target_id,
            other => panic!("{other:?}"),
        };
        mls.send_group_messages(SendGroupMessagesRequest { messages: group_messages(&group, 2).into_iter().map(input).collect() }).await.unwrap();
        mls.send_group_messages(SendGroupMessagesRequest { messages: vec![input(group_messages(&quiet, 1).remove(0))] }).await.unwrap();
        let stored = mls
            .query_group_messages(QueryGroupMessagesRequest { group_id: group.clone(), paging_info: paging(SortDirection::Ascending, 0, 0) })
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<i64> = stored.messages.iter().map(|message| v1(message).id as i64).collect();
        assert_eq!(ids.len(), 2, "{name}");
        let jobs = push.jobs_of(target).await.unwrap();
        assert_eq!(jobs.iter().map(|job| (job.kind.as_str(), job.ref_id, job.topic.as_str())).collect::<Vec<_>>(),
            ids.iter().map(|id| ("xmtp_group", *id, topic.as_str())).collect::<Vec<_>>(), "{name}: one job per envelope of the registered group only");
        database.close().await;
    }
}
