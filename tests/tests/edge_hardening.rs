//! What the gateway does with what a client controls: request ids, client addresses (IPv6
//! clients by their /64), the client IP it tells the XMTP node, and long-lived streams of every
//! kind under one per-IP cap.

use std::{
    convert::Infallible,
    future::{Ready, ready},
    task::{Context, Poll},
    time::Duration,
};

use clawx_common::{Backends, InternalAuth, Secret, grpc::CLIENT_IP_METADATA, testing::all_backends};
use clawx_proto::xmtp::mls::api::v1::{FetchKeyPackagesRequest, mls_api_client::MlsApiClient};
use clawx_tests::TestStack;
use tokio_util::sync::CancellationToken;
use tonic::{
    Code,
    codegen::http,
    metadata::{MetadataMap, MetadataValue},
    transport::Channel,
};

/// A stand-in for the messaging service: every `MlsApi` call is answered with an error whose
/// metadata repeats the client IP and request id the gateway forwarded (`<none>` when absent,
/// comma-joined when sent more than once).
#[derive(Clone)]
struct EchoMls;

impl tonic::server::NamedService for EchoMls {
    const NAME: &'static str = "xmtp.mls.api.v1.MlsApi";
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for EchoMls {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let seen = |name: &str| {
            let values: Vec<&str> = request.headers().get_all(name).iter().map(|value| value.to_str().unwrap_or("?")).collect();
            if values.is_empty() { "<none>".to_string() } else { values.join(",") }
        };
        let mut status = tonic::Status::failed_precondition("echo");
        status.metadata_mut().insert("echo-client-ip", MetadataValue::try_from(seen(CLIENT_IP_METADATA)).unwrap());
        status.metadata_mut().insert("echo-request-id", MetadataValue::try_from(seen("x-request-id")).unwrap());
        let credentials = format!("{}|{}", seen("x-api-key"), seen("authorization"));
        status.metadata_mut().insert("echo-credentials", MetadataValue::try_from(credentials).unwrap());
        ready(Ok(status.into_http()))
    }
}

/// A gateway in front of [`EchoMls`] (the other services are unreachable).
struct EchoedGateway {
    base_url: String,
    shutdown: CancellationToken,
}

impl EchoedGateway {
    async fn start(backends: Backends, adjust: impl FnOnce(&mut clawx_gateway::Config)) -> EchoedGateway {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let shutdown = CancellationToken::new();
        let echo_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_url = format!("http://{}", echo_listener.local_addr().unwrap());
        let router = tonic::transport::Server::builder().add_service(EchoMls);
        tokio::spawn(clawx_common::grpc::serve(router, echo_listener, shutdown.clone()));

        let nowhere = "http://127.0.0.1:9".to_string();
        let upstreams = clawx_gateway::UpstreamUrls { identity: nowhere.clone(), messaging: echo_url, groups: nowhere.clone(), verify: nowhere };
        let auth = InternalAuth::new(&Secret::new("test-secret-test-secret-test-secret"));
        let mut config = clawx_gateway::Config::new(upstreams, backends, auth);
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(clawx_gateway::run(config, listener, shutdown.clone()));
        EchoedGateway { base_url, shutdown }
    }

    async fn mls(&self) -> MlsApiClient<Channel> {
        MlsApiClient::new(Channel::from_shared(self.base_url.clone()).unwrap().connect().await.unwrap())
    }
}

impl Drop for EchoedGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Calls `FetchKeyPackages` with `metadata` and returns the refusal: the echo's, or the
/// gateway's own.
async fn fetch(client: &mut MlsApiClient<Channel>, metadata: &[(&'static str, &str)]) -> tonic::Status {
    let mut request = tonic::Request::new(FetchKeyPackagesRequest { installation_keys: vec![] });
    for (name, value) in metadata {
        request.metadata_mut().append(*name, MetadataValue::try_from(*value).unwrap());
    }
    client.fetch_key_packages(request).await.expect_err("the echo refuses every call")
}

fn text<'a>(metadata: &'a MetadataMap, name: &str) -> &'a str {
    metadata.get(name).map(|value| value.to_str().unwrap()).unwrap_or("<none>")
}

fn well_formed_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"._:-".contains(&byte))
}

#[tokio::test]
async fn request_ids_are_kept_only_when_well_formed() {
    let gateway = EchoedGateway::start(Backends::memory(), |_| {}).await;
    let http = reqwest::Client::new();
    let health = format!("{}/health", gateway.base_url);

    let longest = "a".repeat(128);
    for kept in ["abc-123", "req.7:B_9-x", longest.as_str()] {
        let response = http.get(&health).header("x-request-id", kept).send().await.unwrap();
        assert_eq!(response.headers()["x-request-id"], kept);
    }
    let too_long = "a".repeat(129);
    let huge = "x".repeat(8 * 1024);
    let forged = ["two words", "ok\" status=200 forged=yes", "a=b", too_long.as_str(), huge.as_str(), "caf\u{e9}", ""];
    let mut generated = Vec::new();
    for sent in forged {
        let value = reqwest::header::HeaderValue::from_bytes(sent.as_bytes()).unwrap();
        let response = http.get(&health).header("x-request-id", value).send().await.unwrap();
        let values: Vec<_> = response.headers().get_all("x-request-id").iter().map(|value| value.to_str().unwrap().to_string()).collect();
        assert_eq!(values.len(), 1, "{sent:?}: {values:?}");
        assert_ne!(values[0], sent, "{sent:?} replaced");
        assert!(well_formed_request_id(&values[0]), "{sent:?}: generated {:?}", values[0]);
        generated.push(values[0].clone());
    }
    generated.sort();
    generated.dedup();
    assert_eq!(generated.len(), forged.len(), "a fresh id each time");

    // Forwarded gRPC calls carry the id the gateway answers with, never the client's bad one.
    let mut mls = gateway.mls().await;
    let status = fetch(&mut mls, &[("x-request-id", "forged id=1")]).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let forwarded = text(status.metadata(), "echo-request-id");
    assert!(well_formed_request_id(forwarded), "{forwarded:?}");
    assert_eq!(forwarded, text(status.metadata(), "x-request-id"), "the upstream sees the id the client is told");
    let status = fetch(&mut mls, &[("x-request-id", "good-id.1")]).await;
    assert_eq!(text(status.metadata(), "echo-request-id"), "good-id.1");
}

#[tokio::test]
async fn xmtp_calls_carry_the_client_ip_the_gateway_computed() {
    let gateway = EchoedGateway::start(Backends::memory(), |config| config.trust_forwarded_for = true).await;
    let mut mls = gateway.mls().await;
    let status = fetch(&mut mls, &[(CLIENT_IP_METADATA, "6.6.6.6")]).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(text(status.metadata(), "echo-client-ip"), "127.0.0.1", "the TCP peer, not what the client claimed");
    let status =
        fetch(&mut mls, &[(CLIENT_IP_METADATA, "6.6.6.6"), (CLIENT_IP_METADATA, "7.7.7.7"), ("x-forwarded-for", "6.6.6.6, 2001:db8::7")]).await;
    assert_eq!(text(status.metadata(), "echo-client-ip"), "2001:db8::7", "the address itself, not its /64");
    // Clawx credentials sent along with an XMTP call stay at the edge.
    let status = fetch(&mut mls, &[("x-api-key", "clx_not_for_the_node"), ("authorization", "Bearer clx_not_for_the_node")]).await;
    assert_eq!(text(status.metadata(), "echo-credentials"), "<none>|<none>");
}

#[tokio::test]
async fn ipv6_clients_are_limited_by_their_64() {
    let shutdown = CancellationToken::new();
    for (backend, backends) in all_backends(&shutdown) {
        let gateway = EchoedGateway::start(backends, |config| {
            config.trust_forwarded_for = true;
            config.limits.xmtp_per_minute = 2;
        })
        .await;
        let mut mls = gateway.mls().await;
        let from = |address: &'static str| [("x-forwarded-for", address)];
        assert_eq!(fetch(&mut mls, &from("2001:db8:0:1::1")).await.code(), Code::FailedPrecondition, "{backend}");
        assert_eq!(fetch(&mut mls, &from("2001:db8:0:1:ffff:ffff:ffff:fffe")).await.code(), Code::FailedPrecondition, "{backend}");
        let refused = fetch(&mut mls, &from("2001:db8:0:1:abcd::9")).await;
        assert_eq!(refused.code(), Code::ResourceExhausted, "{backend}: same /64, new address: {refused:?}");
        assert_eq!(fetch(&mut mls, &from("2001:db8:0:2::1")).await.code(), Code::FailedPrecondition, "{backend}: the next /64 has its own budget");
        // IPv4 clients, also written as IPv4-mapped IPv6, count per address.
        assert_eq!(fetch(&mut mls, &from("192.0.2.1")).await.code(), Code::FailedPrecondition, "{backend}");
        assert_eq!(fetch(&mut mls, &from("::ffff:192.0.2.1")).await.code(), Code::FailedPrecondition, "{backend}");
        assert_eq!(fetch(&mut mls, &from("192.0.2.1")).await.code(), Code::ResourceExhausted, "{backend}: one client, two spellings");
        assert_eq!(fetch(&mut mls, &from("192.0.2.2")).await.code(), Code::FailedPrecondition, "{backend}");
    }
    shutdown.cancel();
}

#[tokio::test]
async fn health_watch_reflection_and_xmtp_streams_share_the_per_ip_cap() {
    use clawx_proto::xmtp::mls::api::v1::{SubscribeWelcomeMessagesRequest, subscribe_welcome_messages_request::Filter};
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::{v1, v1alpha};

    let stack = TestStack::embedded_with(|config| config.limits.xmtp_streams_per_ip = 2).await;
    let channel = stack.channel().await;
    let mut health = HealthClient::new(channel.clone());
    let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let mut reflection_alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let mut mls = MlsApiClient::new(channel.clone());
    let watch = || HealthCheckRequest { service: String::new() };
    let list = || v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let list_alpha = || v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    // Request streams that stay open, as a client exploring the API keeps them.
    let open_ended = |request| futures::StreamExt::chain(futures::stream::iter([request]), futures::stream::pending());
    let subscribe = || SubscribeWelcomeMessagesRequest { filters: vec![Filter { installation_key: vec![1; 32], id_cursor: 0 }] };

    let mut first_watch = health.watch(watch()).await.unwrap().into_inner();
    assert!(first_watch.message().await.unwrap().is_some(), "the watch reports the current status");
    let (reflection_requests, requests) = futures::channel::mpsc::unbounded();
    reflection_requests.unbounded_send(list()).unwrap();
    let mut open_reflection = reflection.server_reflection_info(requests).await.unwrap().into_inner();
    assert!(open_reflection.message().await.unwrap().is_some(), "reflection answers");

    // The cap (2) is reached: no third stream of any kind.
    let refused = health.watch(watch()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(refused.metadata().get("clawx-error-code").unwrap(), "RATE_LIMITED");
    let refused = reflection_alpha.server_reflection_info(open_ended(list_alpha())).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let refused = mls.subscribe_welcome_messages(subscribe()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    // One-off calls are not streams and still work.
    health.check(watch()).await.unwrap();

    // Closing the reflection stream frees its slot for another kind of stream.
    drop(reflection_requests);
    drop(open_reflection);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let subscription = loop {
        match mls.subscribe_welcome_messages(subscribe()).await {
            Ok(stream) => break stream.into_inner(),
            Err(status) if tokio::time::Instant::now() < deadline && status.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("the slot was not freed: {status:?}"),
        }
    };
    assert_eq!(health.watch(watch()).await.unwrap_err().code(), Code::ResourceExhausted);
    drop(first_watch);
    drop(subscription);
    stack.stop().await;
}
