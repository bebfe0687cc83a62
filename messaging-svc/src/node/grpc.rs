//! gRPC adapters of the XMTP node: `xmtp.mls.api.v1.MlsApi` and `xmtp.identity.api.v1.IdentityApi`,
//! wire-compatible with XMTP's own nodes. They carry no Clawx auth (XMTP clients authenticate
//! by signatures inside the payloads); the gateway rate-limits them per client IP.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use clawx_proto::xmtp::{
    identity::{
        api::v1::{
            GetIdentityUpdatesRequest, GetIdentityUpdatesResponse, GetInboxIdsRequest, GetInboxIdsResponse,
            PublishIdentityUpdateRequest, PublishIdentityUpdateResponse, VerifySmartContractWalletSignaturesRequest,
            VerifySmartContractWalletSignaturesResponse, get_identity_updates_response, get_inbox_ids_response, identity_api_server::IdentityApi,
            verify_smart_contract_wallet_signatures_response::ValidationResponse,
        },
        associations::{IdentifierKind, IdentityUpdate, RecoverableEd25519Signature},
    },
    mls::{
        api::v1::{
            self as mls_api, BatchPublishCommitLogRequest, BatchQueryCommitLogRequest, BatchQueryCommitLogResponse, FetchKeyPackagesRequest,
            FetchKeyPackagesResponse, GetNewestGroupMessageRequest, GetNewestGroupMessageResponse, GroupMessage, QueryCommitLogResponse,
            QueryGroupMessagesRequest, QueryGroupMessagesResponse, QueryWelcomeMessagesRequest, QueryWelcomeMessagesResponse,
            RegisterInstallationRequest, RegisterInstallationResponse, RevokeInstallationRequest, SendGroupMessagesRequest,
            SendWelcomeMessagesRequest, SubscribeGroupMessagesRequest, SubscribeWelcomeMessagesRequest, UploadKeyPackageRequest, WelcomeMessage,
            fetch_key_packages_response, get_newest_group_message_response, mls_api_server::MlsApi,
        },
        message_contents::CommitLogEntry,
    },
};
use futures::Stream;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    Node, NodeError, Page,
    feed::{self, GroupTopic, WelcomeTopic},
    store::NewCommitLogEntry,
};

fn status(error: NodeError) -> Status {
    match error {
        NodeError::Invalid(message) => Status::invalid_argument(message),
        NodeError::Exhausted(message) => Status::resource_exhausted(message),
        NodeError::Internal => Status::internal("internal error"),
    }
}

type Reply<T> = Result<Response<T>, Status>;
type Feed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Subscriptions one messaging replica serves at once.
pub const MAX_SUBSCRIPTIONS: usize = 20_000;

/// Both XMTP node services over one [`Node`].
#[derive(Clone)]
pub struct XmtpNode {
    node: Arc<Node>,
    shutdown: CancellationToken,
    subscriptions: Arc<AtomicUsize>,
}

/// Frees a subscription slot when its stream task ends.
struct SubscriptionSlot(Arc<AtomicUsize>);

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl XmtpNode {
    pub fn new(node: Arc<Node>, shutdown: CancellationToken) -> XmtpNode {
        XmtpNode { node, shutdown, subscriptions: Arc::default() }
    }

    fn subscribe<T: feed::Topic>(&self, filters: Vec<(Vec<u8>, u64)>) -> Result<Feed<T::Item>, Status> {
        if filters.len() > feed::MAX_FILTERS {
            return Err(Status::invalid_argument(format!("at most {} filters per subscription", feed::MAX_FILTERS)));
        }
        if self.subscriptions.fetch_add(1, Ordering::SeqCst) >= MAX_SUBSCRIPTIONS {
            self.subscriptions.fetch_sub(1, Ordering::SeqCst);
            return Err(Status::resource_exhausted("this node serves its maximum number of subscriptions; retry later"));
        }
        let slot = SubscriptionSlot(Arc::clone(&self.subscriptions));
        let (sink, stream) = mpsc::channel(256);
        let node = Arc::clone(&self.node);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            feed::run::<T>(node, filters, sink, shutdown).await;
            drop(slot);
        });
        Ok(Box::pin(ReceiverStream::new(stream)))
    }
}

#[tonic::async_trait]
impl MlsApi for XmtpNode {
    async fn send_group_messages(&self, request: Request<SendGroupMessagesRequest>) -> Reply<()> {
        self.node.send_group_messages(request.into_inner().messages).await.map_err(status)?;
        Ok(Response::new(()))
    }

    async fn send_welcome_messages(&self, request: Request<SendWelcomeMessagesRequest>) -> Reply<()> {
        self.node.send_welcomes(request.into_inner().messages).await.map_err(status)?;
        Ok(Response::new(()))
    }

    async fn register_installation(&self, _request: Request<RegisterInstallationRequest>) -> Reply<RegisterInstallationResponse> {
        Err(Status::unimplemented("RegisterInstallation is not served: register with identity updates and UploadKeyPackage"))
    }

    async fn upload_key_package(&self, request: Request<UploadKeyPackageRequest>) -> Reply<()> {
        let key_package = request.into_inner().key_package.map(|upload| upload.key_package_tls_serialized).unwrap_or_default();
        self.node.upload_key_package(key_package).await.map_err(status)?;
        Ok(Response::new(()))
    }

    async fn fetch_key_packages(&self, request: Request<FetchKeyPackagesRequest>) -> Reply<FetchKeyPackagesResponse> {
        let key_packages = self.node.fetch_key_packages(&request.into_inner().installation_keys).await.map_err(status)?;
        Ok(Response::new(FetchKeyPackagesResponse {
            key_packages: key_packages
                .into_iter()
                .map(|key_package_tls_serialized| fetch_key_packages_response::KeyPackage { key_package_tls_serialized })
                .collect(),
        }))
    }

    async fn revoke_installation(&self, _request: Request<RevokeInstallationRequest>) -> Reply<()> {
        Err(Status::unimplemented("RevokeInstallation is not served: revoke with an identity update"))
    }

    async fn get_identity_updates(&self, _request: Request<mls_api::GetIdentityUpdatesRequest>) -> Reply<mls_api::GetIdentityUpdatesResponse> {
        Err(Status::unimplemented("use xmtp.identity.api.v1.IdentityApi/GetIdentityUpdates"))
    }

    async fn query_group_messages(&self, request: Request<QueryGroupMessagesRequest>) -> Reply<QueryGroupMessagesResponse> {
        let request = request.into_inner();
        let page = Page::from_proto(request.paging_info.as_ref());
        let (messages, paging_info) = self.node.query_group_messages(&request.group_id, page).await.map_err(status)?;
        Ok(Response::new(QueryGroupMessagesResponse { messages, paging_info: Some(paging_info) }))
    }

    async fn query_welcome_messages(&self, request: Request<QueryWelcomeMessagesRequest>) -> Reply<QueryWelcomeMessagesResponse> {
        let request = request.into_inner();
        let page = Page::from_proto(request.paging_info.as_ref());
        let (messages, paging_info) = self.node.query_welcomes(&request.installation_key, page).await.map_err(status)?;
        Ok(Response::new(QueryWelcomeMessagesResponse { messages, paging_info: Some(paging_info) }))
    }

    type SubscribeGroupMessagesStream = Feed<GroupMessage>;

    async fn subscribe_group_messages(&self, request: Request<SubscribeGroupMessagesRequest>) -> Reply<Self::SubscribeGroupMessagesStream> {
        let filters = request.into_inner().filters.into_iter().map(|filter| (filter.group_id, filter.id_cursor)).collect();
        Ok(Response::new(self.subscribe::<GroupTopic>(filters)?))
    }

    type SubscribeWelcomeMessagesStream = Feed<WelcomeMessage>;

    async fn subscribe_welcome_messages(&self, request: Request<SubscribeWelcomeMessagesRequest>) -> Reply<Self::SubscribeWelcomeMessagesStream> {
        let filters = request.into_inner().filters.into_iter().map(|filter| (filter.installation_key, filter.id_cursor)).collect();
        Ok(Response::new(self.subscribe::<WelcomeTopic>(filters)?))
    }

    async fn batch_publish_commit_log(&self, request: Request<BatchPublishCommitLogRequest>) -> Reply<()> {
        let entries = request
            .into_inner()
            .requests
            .into_iter()
            .map(|entry| NewCommitLogEntry {
                group_id: entry.group_id,
                entry: entry.serialized_commit_log_entry,
                signature: entry.signature.map(|signature| signature.encode_to_vec()),
            })
            .collect();
        self.node.publish_commit_log(entries).await.map_err(status)?;
        Ok(Response::new(()))
    }

    async fn batch_query_commit_log(&self, request: Request<BatchQueryCommitLogRequest>) -> Reply<BatchQueryCommitLogResponse> {
        let requests = request.into_inner().requests;
        if requests.len() > super::MAX_KEYS_PER_CALL {
            return Err(Status::invalid_argument(format!("at most {} groups per call", super::MAX_KEYS_PER_CALL)));
        }
        let mut responses = Vec::with_capacity(requests.len());
        for query in requests {
            let page = Page::from_proto(query.paging_info.as_ref());
            let (entries, paging_info) = self.node.query_commit_log(&query.group_id, page).await.map_err(status)?;
            responses.push(QueryCommitLogResponse {
                group_id: query.group_id,
                commit_log_entries: entries
                    .into_iter()
                    .map(|entry| CommitLogEntry {
                        sequence_id: entry.id as u64,
                        serialized_commit_log_entry: entry.entry,
                        signature: entry.signature.and_then(|bytes| RecoverableEd25519Signature::decode(bytes.as_slice()).ok()),
                    })
                    .collect(),
                paging_info: Some(paging_info),
            });
        }
        Ok(Response::new(BatchQueryCommitLogResponse { responses }))
    }

    async fn get_newest_group_message(&self, request: Request<GetNewestGroupMessageRequest>) -> Reply<GetNewestGroupMessageResponse> {
        let request = request.into_inner();
        let newest = self.node.newest_group_messages(&request.group_ids, request.include_content).await.map_err(status)?;
        Ok(Response::new(GetNewestGroupMessageResponse {
            responses: newest.into_iter().map(|group_message| get_newest_group_message_response::Response { group_message }).collect(),
        }))
    }
}

#[tonic::async_trait]
impl IdentityApi for XmtpNode {
    async fn publish_identity_update(&self, request: Request<PublishIdentityUpdateRequest>) -> Reply<PublishIdentityUpdateResponse> {
        let update: IdentityUpdate = request.into_inner().identity_update.ok_or_else(|| Status::invalid_argument("IdentityUpdate is required"))?;
        self.node.publish_identity_update(update).await.map_err(status)?;
        Ok(Response::new(PublishIdentityUpdateResponse {}))
    }

    async fn get_identity_updates(&self, request: Request<GetIdentityUpdatesRequest>) -> Reply<GetIdentityUpdatesResponse> {
        let requests: Vec<(String, u64)> = request.into_inner().requests.into_iter().map(|query| (query.inbox_id, query.sequence_id)).collect();
        let logs = self.node.identity_updates(&requests).await.map_err(status)?;
        let mut responses = Vec::with_capacity(requests.len());
        for ((inbox_id, _), log) in requests.into_iter().zip(logs) {
            let mut updates = Vec::with_capacity(log.len());
            for entry in log {
                let update = IdentityUpdate::decode(entry.update_bytes.as_slice()).map_err(|error| {
                    tracing::error!(%error, sequence_id = entry.sequence_id, "stored identity update does not decode");
                    Status::internal("internal error")
                })?;
                updates.push(get_identity_updates_response::IdentityUpdateLog {
                    sequence_id: entry.sequence_id as u64,
                    server_timestamp_ns: entry.server_timestamp_ns as u64,
                    update: Some(update),
                });
            }
            responses.push(get_identity_updates_response::Response { inbox_id, updates });
        }
        Ok(Response::new(GetIdentityUpdatesResponse { responses }))
    }

    async fn get_inbox_ids(&self, request: Request<GetInboxIdsRequest>) -> Reply<GetInboxIdsResponse> {
        let requests = request.into_inner().requests;
        // Only Ethereum identifiers are indexed; other kinds resolve to no inbox.
        let is_ethereum = |kind: i32| matches!(IdentifierKind::try_from(kind), Ok(IdentifierKind::Ethereum | IdentifierKind::Unspecified) | Err(_));
        let addresses: Vec<String> = requests.iter().filter(|query| is_ethereum(query.identifier_kind)).map(|query| query.identifier.clone()).collect();
        let mut inbox_ids = self.node.inbox_ids(&addresses).await.map_err(status)?.into_iter();
        let responses = requests
            .into_iter()
            .map(|query| {
                let inbox_id = if is_ethereum(query.identifier_kind) { inbox_ids.next().flatten() } else { None };
                get_inbox_ids_response::Response { identifier: query.identifier, inbox_id, identifier_kind: query.identifier_kind }
            })
            .collect();
        Ok(Response::new(GetInboxIdsResponse { responses }))
    }

    async fn verify_smart_contract_wallet_signatures(
        &self,
        request: Request<VerifySmartContractWalletSignaturesRequest>,
    ) -> Reply<VerifySmartContractWalletSignaturesResponse> {
        // Exactly one answer per signature: clients expect the list to match their request.
        let responses = request
            .into_inner()
            .signatures
            .into_iter()
            .map(|_| ValidationResponse {
                is_valid: false,
                block_number: None,
                error: Some("smart contract wallet signatures are not supported by this node".to_string()),
            })
            .collect();
        Ok(Response::new(VerifySmartContractWalletSignaturesResponse { responses }))
    }
}

