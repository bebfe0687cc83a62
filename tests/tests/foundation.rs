//! The suite's skeleton, end to end: one port for REST, gRPC and grpc-web; health, status and
//! reflection; pass-through to services that accept only the gateway's internal token.

use clawx_proto::{common::GetStatusRequest, groups::groups_service_client::GroupsServiceClient};
use clawx_tests::TestStack;
use serde_json::Value;

#[tokio::test]
async fn health_status_and_errors_over_rest() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let response = stack.http.get(stack.url("/health")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{name}");
        assert!(response.headers().contains_key("x-request-id"), "{name}: request id");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["ok"], true, "{name}");
        assert!(body["uptime"].as_f64().unwrap() >= 0.0, "{name}: uptime is a float");

        let body: Value = stack.http.get(stack.url("/status")).send().await.unwrap().json().await.unwrap();
        assert_eq!(body["status"]["http"], true, "{name}");
        assert_eq!(body["status"]["db"], true, "{name}");
        assert_eq!(body["status"]["redis"], name == "postgres+redis", "{name}: redis is checked for real");

        // A client's request id is echoed.
        let response = stack.http.get(stack.url("/health")).header("x-request-id", "abc-123").send().await.unwrap();
        assert_eq!(response.headers()["x-request-id"], "abc-123", "{name}");

        let response = stack.http.get(stack.url("/no/such/route")).send().await.unwrap();
        assert_eq!(response.status(), 404, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "NOT_FOUND", "{name}");
        assert!(body["error"].is_string(), "{name}");

        let response = stack.http.delete(stack.url("/health")).send().await.unwrap();
        assert_eq!(response.status(), 405, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"ok": false, "error": "method not allowed on this path", "code": "METHOD_NOT_ALLOWED"}), "{name}");
        stack.stop().await;
    }
}

#[tokio::test]
async fn grpc_health_reflection_and_pass_through_share_the_port() {
    for stack in TestStack::all().await {
        let name = stack.name;
        let channel = stack.channel().await;

        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        for service in ["", "clawx.identity.v1.IdentityService", "xmtp.mls.api.v1.MlsApi"] {
            let reply = health.check(tonic_health::pb::HealthCheckRequest { service: service.to_string() }).await.unwrap().into_inner();
            assert_eq!(reply.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{name}: {service}");
        }

        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
            server_reflection_response::MessageResponse,
        };
        let mut reflection = ServerReflectionClient::new(channel.clone());
        let request = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
        let mut replies = reflection.server_reflection_info(futures::stream::iter([request])).await.unwrap().into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else { panic!("{name}: list reply") };
        let services: Vec<String> = list.service.into_iter().map(|service| service.name).collect();
        for expected in clawx_proto::PUBLIC_SERVICES.iter().chain(clawx_proto::XMTP_SERVICES).chain(&["grpc.health.v1.Health"]) {
            assert!(services.iter().any(|service| service == expected), "{name}: {expected} listed in {services:?}");
        }

        // Forwarded to the groups service, which answers from its own database.
        let mut groups = GroupsServiceClient::new(channel.clone());
        let status = groups.get_status(GetStatusRequest {}).await.unwrap().into_inner();
        assert_eq!(status.service, "groups", "{name}");
        assert!(status.database_ok, "{name}");
        assert_eq!(status.database_backend, if name == "sqlite+memory" { "sqlite" } else { "postgres" }, "{name}");

        // Services never trust a caller that skipped the gateway.
        let direct = tonic::transport::Channel::from_shared(stack.service_address("groups")).unwrap().connect().await.unwrap();
        let error = GroupsServiceClient::new(direct.clone()).get_status(GetStatusRequest {}).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::Unauthenticated, "{name}");
        assert_eq!(error.metadata().get("clawx-error-code").unwrap(), "UNAUTHORIZED", "{name}");
        // ...nor a token minted with another key, nor one for another service.
        let forged = clawx_common::InternalAuth::new(&clawx_common::Secret::new("forged-forged-forged-forged-forged"));
        let mut request = tonic::Request::new(GetStatusRequest {});
        forged.authorize(&mut request, "groups", &clawx_common::Principal::service());
        let error = GroupsServiceClient::new(direct.clone()).get_status(request).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::Unauthenticated, "{name}: forged token");
        let mut request = tonic::Request::new(GetStatusRequest {});
        stack.auth.authorize(&mut request, "identity", &clawx_common::Principal::service());
        let error = GroupsServiceClient::new(direct.clone()).get_status(request).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::Unauthenticated, "{name}: wrong audience");
        let mut request = tonic::Request::new(GetStatusRequest {});
        stack.auth.authorize(&mut request, "groups", &clawx_common::Principal::service());
        assert!(GroupsServiceClient::new(direct).get_status(request).await.is_ok(), "{name}: right token");

        // Unknown services are unimplemented, not proxied anywhere.
        let mut unknown = tonic::client::Grpc::new(channel.clone());
        unknown.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/clawx.nothing.v1.Nothing/Call");
        let error = unknown
            .unary::<GetStatusRequest, GetStatusRequest, _>(tonic::Request::new(GetStatusRequest {}), path, tonic_prost::ProstCodec::default())
            .await
            .unwrap_err();
        assert_eq!(error.code(), tonic::Code::Unimplemented, "{name}");
        stack.stop().await;
    }
}

#[tokio::test]
async fn grpc_web_reaches_services_through_the_gateway() {
    for stack in TestStack::all().await {
        let name = stack.name;
        // A raw grpc-web call: a 5-byte frame header and an empty GetStatusRequest.
        let response = stack
            .http
            .post(stack.url("/clawx.verify.v1.VerifyService/GetStatus"))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .header("origin", "http://example.test")
            .body(vec![0u8, 0, 0, 0, 0])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(response.headers()["content-type"], "application/grpc-web+proto", "{name}");
        assert_eq!(response.headers()["access-control-allow-origin"], "*", "{name}: CORS for browsers");
        let body = response.bytes().await.unwrap();
        // A data frame (flag 0) with the status message, then a trailers frame (flag 0x80).
        assert_eq!(body[0], 0, "{name}");
        let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let message = &body[5..5 + length];
        assert!(message.windows(6).any(|window| window == b"verify"), "{name}: status names the service");
        let trailers = &body[5 + length..];
        assert_eq!(trailers[0], 0x80, "{name}");
        assert!(String::from_utf8_lossy(&trailers[5..]).contains("grpc-status:0"), "{name}");
        stack.stop().await;
    }
}
