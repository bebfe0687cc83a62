//! Replays, against a running Clawx, the anonymous XMTP requests that once made the node
//! allocate hundreds of megabytes or store what it should not: repeated keys, unsigned
//! free-form bytes, oversized messages and welcomes, subscription fan-out, and unsigned commit
//! logs. Every answer must be a clean gRPC status (OK, INVALID_ARGUMENT or
//! RESOURCE_EXHAUSTED); the process exits non-zero otherwise. `scripts/abuse.sh` runs it
//! against `clawx dev` and checks the server's memory before and after.
//!
//!   xmtp-abuse http://127.0.0.1:8080

use std::time::Duration;

use clawx_proto::xmtp::{
    identity::{
        api::v1::{GetIdentityUpdatesRequest, PublishIdentityUpdateRequest, get_identity_updates_request, identity_api_client::IdentityApiClient},
        associations::{CreateInbox, IdentityAction, IdentityUpdate, RecoverableEd25519Signature, identity_action},
    },
    mls::api::v1::{
        BatchPublishCommitLogRequest, BatchQueryCommitLogRequest, GetNewestGroupMessageRequest, GroupMessageInput, PublishCommitLogRequest,
        QueryCommitLogRequest, QueryGroupMessagesRequest, SendGroupMessagesRequest, SendWelcomeMessagesRequest, SubscribeGroupMessagesRequest,
        WelcomeMessageInput, group_message_input, mls_api_client::MlsApiClient, subscribe_group_messages_request, welcome_message_input,
    },
};
use tonic::{Code, transport::Channel};

const MIB: usize = 1024 * 1024;

/// RFC 9420 variable-length vector length prefix.
fn varint(length: usize) -> Vec<u8> {
    match length {
        0..=63 => vec![length as u8],
        64..=16_383 => vec![0x40 | (length >> 8) as u8, length as u8],
        _ => {
            let value = 0x8000_0000u32 | length as u32;
            value.to_be_bytes().to_vec()
        }
    }
}

/// A syntactically valid MLS PrivateMessage (the node cannot decrypt, so framing is all it
/// checks) carrying `ciphertext_bytes` of random ciphertext.
fn private_message(group_id: &[u8], ciphertext_bytes: usize) -> Vec<u8> {
    let mut message = vec![0x00, 0x01, 0x00, 0x02];
    message.extend(varint(group_id.len()));
    message.extend_from_slice(group_id);
    message.extend(7u64.to_be_bytes());
    message.push(0x01);
    message.extend(varint(0));
    message.extend(varint(16));
    message.extend(rand_bytes(16));
    message.extend(varint(ciphertext_bytes));
    message.extend(rand_bytes(ciphertext_bytes));
    message
}

fn rand_bytes(count: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; count];
    let mut state = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    for byte in &mut bytes {
        // xorshift: unique content, so nothing is deduplicated away.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    bytes
}

fn group_input(data: Vec<u8>) -> GroupMessageInput {
    GroupMessageInput {
        version: Some(group_message_input::Version::V1(group_message_input::V1 { data, sender_hmac: vec![1; 32], should_push: false })),
    }
}

/// The server's resident memory in KiB, when `CLAWX_ABUSE_PID` names its process.
fn server_rss_kb() -> Option<u64> {
    let pid = std::env::var("CLAWX_ABUSE_PID").ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| line.strip_prefix("VmRSS:")).and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

fn server_rss() -> String {
    server_rss_kb().map(|kb| format!(" [server {} MB]", kb / 1024)).unwrap_or_default()
}

/// Checks that an answer is a clean status among `allowed`, and prints it.
fn expect<T>(what: &str, result: Result<T, tonic::Status>, allowed: &[Code], failures: &mut u32) -> Option<T> {
    let code = result.as_ref().map_or_else(|status| status.code(), |_| Code::Ok);
    let clean = allowed.contains(&code);
    let detail = result.as_ref().err().map(|status| status.message().to_string()).unwrap_or_default();
    println!("{} {what}: {code:?} {detail}{}", if clean { "ok  " } else { "FAIL" }, server_rss());
    if !clean {
        *failures += 1;
    }
    result.ok()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:8080".to_string());
    let channel = Channel::from_shared(url.clone())?.connect().await?;
    let mut mls = MlsApiClient::new(channel.clone()).max_decoding_message_size(64 * MIB).max_encoding_message_size(64 * MIB);
    let mut identity = IdentityApiClient::new(channel).max_decoding_message_size(64 * MIB).max_encoding_message_size(64 * MIB);
    let mut failures = 0;
    let refused = [Code::InvalidArgument, Code::ResourceExhausted];

    // Legitimate traffic first, so buffers and caches any server keeps are counted before the
    // attack: a message just under the 4 MiB cap, read back, and one 2,000-topic subscription.
    let group = b"clawx-abuse-group".to_vec();
    let stored = mls.send_group_messages(SendGroupMessagesRequest { messages: vec![group_input(private_message(&group, 4 * MIB - 4096))] }).await;
    expect("store a message just under the cap", stored, &[Code::Ok], &mut failures);
    let page = mls.query_group_messages(QueryGroupMessagesRequest { group_id: group.clone(), paging_info: None }).await;
    expect("read it back", page, &[Code::Ok], &mut failures);
    let filters: Vec<_> =
        (0..2_000u32).map(|topic| subscribe_group_messages_request::Filter { group_id: topic.to_be_bytes().to_vec(), id_cursor: 0 }).collect();
    let warm = mls.subscribe_group_messages(SubscribeGroupMessagesRequest { filters }).await;
    drop(expect("one subscription of 2,000 topics", warm, &[Code::Ok], &mut failures));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = server_rss_kb();
    println!("---- the attack starts{}", server_rss());

    // 1. Repeated keys: the group's newest message asked 120 times, with content.
    let newest = |group_ids, include_content| GetNewestGroupMessageRequest { group_ids, include_content };
    let reply = mls.get_newest_group_message(newest(vec![group.clone(); 120], true)).await;
    expect("newest message of one group asked 120 times, with content", reply, &refused, &mut failures);
    let reply = mls.get_newest_group_message(newest(vec![group.clone(); 5_000], true)).await;
    expect("newest message of one group asked 5,000 times", reply, &refused, &mut failures);
    let page = mls.query_group_messages(QueryGroupMessagesRequest { group_id: group.clone(), paging_info: None }).await;
    expect("a page of the group", page, &[Code::Ok], &mut failures);
    let query = |group_id: &[u8]| QueryCommitLogRequest { group_id: group_id.to_vec(), paging_info: None };
    let reply = mls.batch_query_commit_log(BatchQueryCommitLogRequest { requests: vec![query(&group); 60] }).await;
    expect("commit log of one group asked 60 times", reply, &refused, &mut failures);
    let reply = mls.batch_query_commit_log(BatchQueryCommitLogRequest { requests: vec![query(&group); 20] }).await;
    if let Some(reply) = expect("commit log of one group asked 20 times", reply, &[Code::Ok], &mut failures)
        && reply.get_ref().responses.len() != 1
    {
        println!("FAIL the repeated group was answered {} times", reply.get_ref().responses.len());
        failures += 1;
    }
    let ask = |sequence_id| get_identity_updates_request::Request { inbox_id: "ab".repeat(32), sequence_id };
    let reply = identity.get_identity_updates(GetIdentityUpdatesRequest { requests: (0..5_000).map(ask).collect() }).await;
    expect("identity log of one inbox asked 5,000 times", reply, &refused, &mut failures);

    // 2. Unsigned free-form bytes: a 2 MiB relying party.
    let update = IdentityUpdate {
        actions: vec![IdentityAction {
            kind: Some(identity_action::Kind::CreateInbox(CreateInbox {
                initial_identifier: "0x0000000000000000000000000000000000000001".to_string(),
                nonce: 1,
                initial_identifier_signature: None,
                initial_identifier_kind: 1,
                relying_party: Some("r".repeat(2 * MIB)),
            })),
        }],
        client_timestamp_ns: 1,
        inbox_id: "cd".repeat(32),
    };
    let reply = identity.publish_identity_update(PublishIdentityUpdateRequest { identity_update: Some(update) }).await;
    expect("identity update with a 2 MiB relying party", reply, &refused, &mut failures);

    // 3. Oversized messages and welcomes.
    let reply = mls.send_group_messages(SendGroupMessagesRequest { messages: vec![group_input(private_message(&group, 4 * MIB + 1))] }).await;
    expect("a group message over 4 MiB", reply, &refused, &mut failures);
    let welcome = WelcomeMessageInput {
        version: Some(welcome_message_input::Version::V1(welcome_message_input::V1 {
            installation_key: vec![3; 32],
            data: rand_bytes(4 * MIB),
            hpke_public_key: vec![4; 32],
            wrapper_algorithm: 2,
            welcome_metadata: Vec::new(),
        })),
    };
    let reply = mls.send_welcome_messages(SendWelcomeMessagesRequest { messages: vec![welcome] }).await;
    expect("a 4 MiB welcome", reply, &refused, &mut failures);
    let small: Vec<_> = (0..3).map(|_| group_input(private_message(&group, 1024))).collect();
    let reply = mls.send_group_messages(SendGroupMessagesRequest { messages: small }).await;
    expect("small group messages still go through", reply, &[Code::Ok], &mut failures);

    // 4. Subscription fan-out: 2,000-topic streams from one address until refused.
    let mut streams = Vec::new();
    let mut subscription_refused = false;
    for stream in 0..200u32 {
        let filters = (0..2_000u32)
            .map(|topic| subscribe_group_messages_request::Filter { group_id: [stream.to_be_bytes(), topic.to_be_bytes()].concat(), id_cursor: 0 })
            .collect();
        match mls.subscribe_group_messages(SubscribeGroupMessagesRequest { filters }).await {
            Ok(open) => streams.push(open.into_inner()),
            Err(status) => {
                expect(&format!("subscription {stream} of 2,000 topics"), Err::<(), _>(status), &refused, &mut failures);
                subscription_refused = true;
                break;
            }
        }
    }
    println!(
        "{} {} subscriptions of 2,000 topics admitted from one address{}",
        if subscription_refused { "ok  " } else { "FAIL" },
        streams.len(),
        server_rss()
    );
    if !subscription_refused {
        failures += 1;
    }
    drop(streams);

    // 5. Commit logs: 100 unsigned 64 KiB entries, then entries with forged signatures.
    let entry = |size: usize, signature: Option<RecoverableEd25519Signature>| PublishCommitLogRequest {
        group_id: group.clone(),
        serialized_commit_log_entry: rand_bytes(size),
        signature,
    };
    let reply = mls.batch_publish_commit_log(BatchPublishCommitLogRequest { requests: (0..100).map(|_| entry(64 * 1024, None)).collect() }).await;
    expect("100 unsigned 64 KiB commit-log entries", reply, &refused, &mut failures);
    let forged = Some(RecoverableEd25519Signature { bytes: vec![1; 64], public_key: vec![2; 32] });
    let reply = mls.batch_publish_commit_log(BatchPublishCommitLogRequest { requests: (0..10).map(|_| entry(1024, forged.clone())).collect() }).await;
    expect("10 commit-log entries with forged signatures", reply, &refused, &mut failures);

    tokio::time::sleep(Duration::from_millis(500)).await;
    if failures > 0 {
        anyhow::bail!("{failures} answers were not clean");
    }
    println!("every answer was a clean gRPC status");
    if let (Some(before), Some(after)) = (baseline, server_rss_kb()) {
        let limit: u64 = std::env::var("CLAWX_ABUSE_RSS_LIMIT_KB").ok().and_then(|value| value.parse().ok()).unwrap_or(50 * 1024);
        let growth = after.saturating_sub(before);
        println!(
            "server memory during the attack: {} MB -> {} MB (growth {} MB, limit {} MB)",
            before / 1024,
            after / 1024,
            growth / 1024,
            limit / 1024
        );
        anyhow::ensure!(growth < limit, "the attack grew the server's memory by {} MB", growth / 1024);
    }
    Ok(())
}
