//! Direct messages under the conditions of a real deployment: several replicas of every role
//! sharing PostgreSQL and Redis, and PostgreSQL going away while users are sending. PostgreSQL +
//! Redis only (skipped when they are not configured, failed when
//! `CLAWX_TEST_REQUIRE_BACKENDS=1`).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use clawx_common::testing::TestDatabase;
use clawx_proto::messaging::{self as pb, messaging_service_client::MessagingServiceClient};
use clawx_tests::{Auth, TestStack};
use serde_json::{Value, json};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};
use tonic::metadata::MetadataValue;

/// Generous bound on anything a test waits for: this is about correctness, never speed.
const PATIENCE: Duration = Duration::from_secs(60);

/// No rate limits: the tests send as fast as their clients can.
fn unlimited(config: &mut clawx_gateway::Config) {
    config.limits.per_account_per_minute = 0;
    config.limits.per_ip_per_minute = 0;
    config.limits.create_per_minute = 0;
    config.limits.xmtp_streams_per_ip = 0;
}

/// A DM by handle through the gateway at `base`; returns the message object.
async fn dm(http: &reqwest::Client, base: &str, key: &str, handle: &str, text: &str) -> Value {
    let response = http
        .post(format!("{base}/messages/dm"))
        .header("x-api-key", key)
        .json(&json!({"handle": handle, "message": text}))
        .send()
        .await
        .expect("gateway reachable");
    assert_eq!(response.status(), 200, "dm to {handle} through {base}");
    let body: Value = response.json().await.expect("JSON answer");
    body["message"].clone()
}

/// Reads `/messages/stream` as it arrives.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    async fn open(http: &reqwest::Client, base: &str, key: &str, last_event_id: i64) -> EventStream {
        let response = http
            .get(format!("{base}/messages/stream"))
            .header("x-api-key", key)
            .header("last-event-id", last_event_id.to_string())
            .send()
            .await
            .expect("gateway reachable");
        assert_eq!(response.status(), 200, "the event stream opens");
        EventStream { response, buffer: String::new() }
    }

    /// The next message event's message object (comments skipped).
    async fn message(&mut self) -> Value {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, "message".to_string(), String::new());
                for line in block.lines().filter(|line| !line.starts_with(':')) {
                    let (field, value) = line.split_once(':').map_or((line, ""), |(field, value)| (field, value.strip_prefix(' ').unwrap_or(value)));
                    match field {
                        "id" => id = Some(value.to_string()),
                        "event" => event = value.to_string(),
                        "data" => data.push_str(value),
                        _ => {}
                    }
                }
                if data.is_empty() {
                    continue;
                }
                assert_eq!(event, "message", "{data}");
                let message: Value = serde_json::from_str(&data).expect("JSON data");
                assert_eq!(id, Some(message["id"].to_string()), "the event id is the message id");
                return message;
            }
            let chunk = tokio::time::timeout(PATIENCE, self.response.chunk()).await.expect("an event in time").expect("stream readable");
            self.buffer.push_str(std::str::from_utf8(&chunk.expect("the stream stays open")).expect("UTF-8 events"));
        }
    }
}

/// A gRPC `StreamMessages` call through the gateway at `base`, after `after_id`.
async fn grpc_stream(base: &str, key: &str, after_id: i64) -> tonic::Streaming<pb::Message> {
    let channel = tonic::transport::Channel::from_shared(base.to_string()).expect("url").connect().await.expect("gateway reachable");
    let mut request = tonic::Request::new(pb::StreamMessagesRequest { after_id });
    request.metadata_mut().insert("x-api-key", MetadataValue::try_from(key).expect("ASCII key"));
    MessagingServiceClient::new(channel).stream_messages(request).await.expect("the gRPC stream opens").into_inner()
}

async fn next_grpc(stream: &mut tonic::Streaming<pb::Message>) -> pb::Message {
    tokio::time::timeout(PATIENCE, stream.message()).await.expect("a message in time").expect("stream readable").expect("the stream stays open")
}

#[tokio::test]
async fn subscribers_on_one_replica_receive_what_another_replica_stores_once_and_in_order() {
    let Some((first, second)) = TestStack::external_replicas(unlimited).await else { return };
    assert_ne!(first.service_address("messaging"), second.service_address("messaging"), "two messaging instances");
    let http = reqwest::Client::new();
    // Each replica knows one of the two accounts first.
    let bob = first.registered("bob").await;
    let alice = second.registered("alice").await;

    // Both subscribers of bob on the first replica, from a known point: what is stored after it
    // reaches them whether it is replayed or arrives live.
    let start = dm(&http, &second.base_url, &alice, "bob", "before bob listened").await;
    let start_id = start["id"].as_i64().expect("id");
    let mut events = EventStream::open(&http, &first.base_url, &bob, start_id).await;
    let mut grpc = grpc_stream(&first.base_url, &bob, start_id).await;

    let mut sent = Vec::new();
    for number in 1..=3 {
        sent.push(dm(&http, &second.base_url, &alice, "bob", &format!("through the second replica, {number}")).await);
    }
    // Bob's own reply through his replica comes next: nothing arrives twice before it.
    sent.push(dm(&http, &first.base_url, &bob, "alice", "bob answers on the first replica").await);
    for expected in &sent {
        assert_eq!(&events.message().await, expected, "event stream: each message once, in order, as sent");
        let message = next_grpc(&mut grpc).await;
        assert_eq!(
            (Some(message.id), Some(message.content.as_str()), Some(message.topic.as_str())),
            (expected["id"].as_i64(), expected["content"].as_str(), expected["topic"].as_str()),
            "gRPC stream: each message once, in order"
        );
    }

    // Live subscribers opened on the second replica see what the first one stores, too.
    let mut alice_events = EventStream::open(&http, &second.base_url, &alice, sent[3]["id"].as_i64().expect("id")).await;
    let back = dm(&http, &first.base_url, &bob, "alice", "and once more").await;
    assert_eq!(alice_events.message().await, back);
    assert_eq!(events.message().await, back);
    assert_eq!(next_grpc(&mut grpc).await.id, back["id"].as_i64().expect("id"));

    drop((events, grpc, alice_events));
    first.stop().await;
    second.stop().await;
}

/// A TCP proxy in front of PostgreSQL that the test can cut: every open connection is closed
/// and new ones are accepted and dropped at once, until it is restored.
struct Proxy {
    address: SocketAddr,
    cut: watch::Sender<bool>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (cut, state) = watch::channel(false);
        let accepting = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { continue };
                if *state.borrow() {
                    drop(client);
                    continue;
                }
                let mut state = state.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = state.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy { address, cut, accepting }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        // Open connections end with the stack that holds them.
    }
}

/// What one send answered.
#[derive(Debug)]
enum Outcome {
    Stored(i64),
    Unavailable,
    Unexpected(String),
}

/// One client's record: (content, outcome) of every send, in order.
type Record = Vec<(String, Outcome)>;

async fn send_once(http: &reqwest::Client, base: &str, key: &str, content: &str) -> Outcome {
    let request = http.post(format!("{base}/messages/dm")).header("x-api-key", key).json(&json!({"handle": "sink", "message": content}));
    let response = match tokio::time::timeout(PATIENCE, request.send()).await {
        Err(_) => return Outcome::Unexpected(format!("no answer within {PATIENCE:?}")),
        Ok(Err(error)) => return Outcome::Unexpected(format!("transport error: {error}")),
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    let body: Value = match tokio::time::timeout(PATIENCE, response.json()).await {
        Ok(Ok(body)) => body,
        other => return Outcome::Unexpected(format!("{status} with an unreadable body: {other:?}")),
    };
    match (status, body["code"].as_str()) {
        (200, _) if body["message"]["content"] == content => {
            body["message"]["id"].as_i64().map_or_else(|| Outcome::Unexpected(format!("200 without an id: {body}")), Outcome::Stored)
        }
        (503, Some("UNAVAILABLE")) => Outcome::Unavailable,
        _ => Outcome::Unexpected(format!("{status} {body}")),
    }
}

/// Waits until `condition` holds; fails with `what` after [`PATIENCE`].
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "{what} within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every message of the conversation `key` has with `handle`, oldest pages last.
async fn history(stack: &TestStack, key: &str, handle: &str) -> Vec<Value> {
    let mut messages: Vec<Value> = Vec::new();
    loop {
        let before = messages.last().map_or(String::new(), |last| format!("&before={}", last["id"]));
        let reply = stack.get(&format!("/messages/{handle}?limit=200{before}"), &Auth::Key(key.to_string())).await;
        let page = reply.expect_ok("history")["messages"].as_array().expect("messages").clone();
        if page.is_empty() {
            return messages;
        }
        messages.extend(page);
    }
}

#[tokio::test]
async fn no_acknowledged_message_is_lost_when_postgres_is_cut_off_mid_run() {
    const CLIENTS: usize = 8;
    let Some(url) = TestDatabase::postgres().and_then(|database| database.args.database_url.clone()) else { return };
    let mut through_proxy = reqwest::Url::parse(&url).expect("CLAWX_TEST_DATABASE_URL is a URL");
    let upstream = format!("{}:{}", through_proxy.host_str().expect("a host"), through_proxy.port().unwrap_or(5432));
    let proxy = Proxy::start(upstream).await;
    through_proxy.set_host(Some("127.0.0.1")).expect("host");
    through_proxy.set_port(Some(proxy.address.port())).expect("port");
    let Some(stack) = TestStack::external_through(through_proxy.to_string(), unlimited).await else { return };
    let stack = Arc::new(stack);

    let sink = stack.registered("sink").await;
    let mut keys = Vec::new();
    for client in 0..CLIENTS {
        keys.push(stack.registered(&format!("sender{client}")).await);
    }

    // Each client sends until told to stop, counting what is acknowledged and what is refused.
    let stop = Arc::new(AtomicBool::new(false));
    let stored = Arc::new(AtomicUsize::new(0));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let records: Arc<Mutex<HashMap<usize, Record>>> = Arc::default();
    let mut clients = Vec::new();
    for (client, key) in keys.iter().cloned().enumerate() {
        let (stack, stop, stored, unavailable, records) =
            (Arc::clone(&stack), Arc::clone(&stop), Arc::clone(&stored), Arc::clone(&unavailable), Arc::clone(&records));
        clients.push(tokio::spawn(async move {
            let mut record = Record::new();
            let mut number = 0;
            while !stop.load(Ordering::SeqCst) {
                number += 1;
                let content = format!("client {client} message {number}");
                let outcome = send_once(&stack.http, &stack.base_url, &key, &content).await;
                match outcome {
                    Outcome::Stored(_) => stored.fetch_add(1, Ordering::SeqCst),
                    Outcome::Unavailable => {
                        // As a client would, wait a little before the next try.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        unavailable.fetch_add(1, Ordering::SeqCst)
                    }
                    Outcome::Unexpected(_) => 0,
                };
                record.push((content, outcome));
            }
            records.lock().expect("records").insert(client, record);
        }));
    }
    // Running: every send is stored.
    wait_until("sends are stored before the cut", || stored.load(Ordering::SeqCst) >= 200).await;
    assert_eq!(unavailable.load(Ordering::SeqCst), 0, "nothing refused while PostgreSQL is there");

    // PostgreSQL cut off for about two seconds (longer if no send has failed yet).
    proxy.set_cut(true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    wait_until("a send fails while PostgreSQL is cut off", || unavailable.load(Ordering::SeqCst) > 0).await;
    proxy.set_cut(false);
    let stored_at_restore = stored.load(Ordering::SeqCst);

    // Back: sends are stored again.
    wait_until("sends are stored again once PostgreSQL is back", || stored.load(Ordering::SeqCst) >= stored_at_restore + 200).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        tokio::time::timeout(PATIENCE, client).await.expect("clients stop").expect("client task");
    }

    let records = std::mem::take(&mut *records.lock().expect("records"));
    let unexpected: Vec<String> = records
        .values()
        .flatten()
        .filter_map(|(content, outcome)| match outcome {
            Outcome::Unexpected(what) => Some(format!("{content}: {what}")),
            _ => None,
        })
        .collect();
    assert!(unexpected.is_empty(), "every send is stored or refused with 503 UNAVAILABLE: {unexpected:?}");

    // Every acknowledged message is in its conversation exactly once, under the id it was given.
    for (client, record) in &records {
        let history = history(&stack, &keys[*client], "sink").await;
        let mut found: HashMap<&str, Vec<i64>> = HashMap::new();
        for message in &history {
            found.entry(message["content"].as_str().expect("content")).or_default().push(message["id"].as_i64().expect("id"));
        }
        let attempted: HashMap<&str, &Outcome> = record.iter().map(|(content, outcome)| (content.as_str(), outcome)).collect();
        for (content, ids) in &found {
            assert_eq!(ids.len(), 1, "client {client}: {content:?} is stored once: {ids:?}");
            assert!(attempted.contains_key(content), "client {client}: {content:?} was sent");
        }
        for (content, outcome) in record {
            if let Outcome::Stored(id) = outcome {
                assert_eq!(found.get(content.as_str()), Some(&vec![*id]), "client {client}: acknowledged {content:?} is kept");
            }
        }
    }
    let total: usize = records.values().map(Vec::len).sum();
    eprintln!(
        "{total} sends: {} stored, {} refused with 503 while PostgreSQL was cut off",
        stored.load(Ordering::SeqCst),
        unavailable.load(Ordering::SeqCst)
    );
    // The sink's view agrees.
    let inbox = stack.get("/messages/inbox", &Auth::Key(sink.clone())).await;
    assert_eq!(inbox.expect_ok("sink inbox")["conversations"].as_array().map(Vec::len), Some(CLIENTS), "one conversation per client");

    Arc::into_inner(stack).expect("the clients are done").stop().await;
    drop(proxy);
}
