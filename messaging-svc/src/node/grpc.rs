//! gRPC adapters of the XMTP node: `xmtp.mls.api.v1.MlsApi` and `xmtp.identity.api.v1.IdentityApi`,
//! wire-compatible with XMTP's own nodes. They carry no Clawx auth (XMTP clients authenticate
//! by signatures inside the payloads); the gateway rate-limits them per client IP.

use std::{
    collections::{HashMap, HashSet},
    pin::Pin,
    sync::{Arc, Mutex},
};

use clawx_proto::xmtp::{
    identity::{
        api::v1::{
            GetIdentityUpdatesRequest, GetIdentityUpdatesResponse, GetInboxIdsRequest, GetInboxIdsResponse, PublishIdentityUpdateRequest,
            PublishIdentityUpdateResponse, VerifySmartContractWalletSignaturesRequest, VerifySmartContractWalletSignaturesResponse,
            get_identity_updates_response, get_inbox_ids_response, identity_api_server::IdentityApi,
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
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    Node, NodeLimits, Page,
    feed::{self, GroupTopic, WelcomeTopic},
    store::NewCommitLogEntry,
};

type Reply<T> = Result<Response<T>, Status>;
type Feed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The metadata the gateway sets to the client address of an XMTP call it forwards
/// (replacing any the client sent); callers that reach the node directly are keyed by their
/// peer address.
pub const CLIENT_IP_METADATA: &str = clawx_common::grpc::CLIENT_IP_METADATA;

/// Fair admission. A client that already holds subscriptions gets at most
/// 1/[`FAIR_SHARE_DIVISOR`] of what the replica has free, and never the last
/// 1/[`RESERVE_DIVISOR`] of the replica's subscriptions and topics: that reserve is for
/// clients holding none, one subscription each. So a hundred busy addresses cannot take every
/// slot: whoever comes next still gets in.
const FAIR_SHARE_DIVISOR: usize = 8;
const RESERVE_DIVISOR: usize = 16;

/// What a client holds.
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    streams: usize,
    topics: usize,
}

/// Admission of subscriptions: replica-wide caps on subscriptions and watched topics, a
/// per-client topic budget, and a fair share of what is free.
#[derive(Debug)]
pub struct Admission {
    limits: NodeLimits,
    state: Mutex<(Held, HashMap<String, Held>)>,
}

/// A subscription's claim; released when dropped.
pub struct Ticket {
    admission: Arc<Admission>,
    client: String,
    topics: usize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.admission.state.lock().expect("admission lock");
        let (total, clients) = &mut *state;
        total.streams -= 1;
        total.topics -= self.topics;
        if let Some(held) = clients.get_mut(&self.client) {
            held.streams -= 1;
            held.topics -= self.topics;
            if held.streams == 0 {
                clients.remove(&self.client);
            }
        }
    }
}

impl Admission {
    pub fn new(limits: NodeLimits) -> Arc<Admission> {
        Arc::new(Admission { limits, state: Mutex::default() })
    }

    /// Admits a subscription of `topics` distinct topics for `client`, or says why not.
    pub fn admit(self: &Arc<Self>, client: &str, topics: usize) -> Result<Ticket, Status> {
        let limits = &self.limits;
        let mut state = self.state.lock().expect("admission lock");
        let (total, clients) = &mut *state;
        if total.streams >= limits.max_subscriptions || total.topics + topics > limits.max_topics {
            return Err(Status::resource_exhausted("this node serves its maximum number of subscriptions; retry later"));
        }
        let held = clients.get(client).copied().unwrap_or_default();
        if held.topics + topics > limits.topics_per_client {
            return Err(Status::resource_exhausted(format!(
                "subscriptions from this address may watch at most {} topics at once; close some first",
                limits.topics_per_client
            )));
        }
        if held.streams > 0 {
            let free_streams = limits.max_subscriptions - total.streams;
            let free_topics = limits.max_topics - total.topics;
            let within_share = held.streams < (free_streams / FAIR_SHARE_DIVISOR).max(1)
                && held.topics + topics <= (free_topics / FAIR_SHARE_DIVISOR).max(feed::MAX_FILTERS);
            let leaves_reserve =
                free_streams > (limits.max_subscriptions / RESERVE_DIVISOR).max(1) && free_topics >= topics + limits.max_topics / RESERVE_DIVISOR;
            if !within_share || !leaves_reserve {
                return Err(Status::resource_exhausted("this address holds its share of this node's subscriptions; close some or retry later"));
            }
        }
        total.streams += 1;
        total.topics += topics;
        let entry = clients.entry(client.to_string()).or_default();
        entry.streams += 1;
        entry.topics += topics;
        Ok(Ticket { admission: Arc::clone(self), client: client.to_string(), topics })
    }
}

/// Whom a call counts against: the client address the gateway forwarded (IPv6 by its /64,
/// as the gateway keys its limits), else the caller's peer address.
fn client_key<T>(request: &Request<T>) -> String {
    let forwarded = request.metadata().get(CLIENT_IP_METADATA).and_then(|value| value.to_str().ok()).map(str::to_string);
    let address = forwarded.or_else(|| request.remote_addr().map(|peer| peer.ip().to_string())).unwrap_or_else(|| "unknown".to_string());
    clawx_common::grpc::ip_limit_key(&address).into_owned()
}

/// Both XMTP node services over one [`Node`].
#[derive(Clone)]
pub struct XmtpNode {
    node: Arc<Node>,
    shutdown: CancellationToken,
    admission: Arc<Admission>,
}

impl XmtpNode {
    pub fn new(node: Arc<Node>, shutdown: CancellationToken) -> XmtpNode {
        let admission = Admission::new(node.limits().clone());
        XmtpNode { node, shutdown, admission }
    }

    fn subscribe<T: feed::Topic<Context = super::Node>>(&self, client: &str, filters: Vec<(Vec<u8>, u64)>) -> Result<Feed<T::Item>, Status> {
        if filters.len() > feed::MAX_FILTERS {
            return Err(Status::invalid_argument(format!("at most {} filters per subscription", feed::MAX_FILTERS)));
        }
        if let Some((index, _)) = filters.iter().enumerate().find(|(_, (key, _))| key.is_empty() || key.len() > super::MAX_TOPIC_BYTES) {
            return Err(Status::invalid_argument(format!("filter {index}: a topic must be 1 to {} bytes", super::MAX_TOPIC_BYTES)));
        }
        let topics = filters.iter().map(|(key, _)| key.as_slice()).collect::<HashSet<_>>().len();
        let ticket = self.admission.admit(client, topics)?;
        let (sink, stream) = feed::queue::<T::Item>();
        let node = Arc::clone(&self.node);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            feed::run::<T>(node, filters, sink, shutdown).await;
            drop(ticket);
        });
        Ok(Box::pin(stream))
    }
}

#[tonic::async_trait]
impl MlsApi for XmtpNode {
    #[tracing::instrument(name = "xmtp.send_group_messages", skip_all, fields(xmtp.messages = request.get_ref().messages.len()))]
    async fn send_group_messages(&self, request: Request<SendGroupMessagesRequest>) -> Reply<()> {
        self.node.send_group_messages(request.into_inner().messages).await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(name = "xmtp.send_welcome_messages", skip_all, fields(xmtp.welcomes = request.get_ref().messages.len()))]
    async fn send_welcome_messages(&self, request: Request<SendWelcomeMessagesRequest>) -> Reply<()> {
        self.node.send_welcomes(request.into_inner().messages).await?;
        Ok(Response::new(()))
    }

    async fn register_installation(&self, _request: Request<RegisterInstallationRequest>) -> Reply<RegisterInstallationResponse> {
        Err(Status::unimplemented("RegisterInstallation is not served: register with identity updates and UploadKeyPackage"))
    }

    #[tracing::instrument(name = "xmtp.upload_key_package", skip_all)]
    async fn upload_key_package(&self, request: Request<UploadKeyPackageRequest>) -> Reply<()> {
        let key_package = request.into_inner().key_package.map(|upload| upload.key_package_tls_serialized).unwrap_or_default();
        self.node.upload_key_package(key_package).await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(name = "xmtp.fetch_key_packages", skip_all, fields(xmtp.keys = request.get_ref().installation_keys.len()))]
    async fn fetch_key_packages(&self, request: Request<FetchKeyPackagesRequest>) -> Reply<FetchKeyPackagesResponse> {
        let key_packages = self.node.fetch_key_packages(&request.into_inner().installation_keys).await?;
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

    #[tracing::instrument(name = "xmtp.query_group_messages", skip_all, fields(xmtp.group = %hex::encode(&request.get_ref().group_id)))]
    async fn query_group_messages(&self, request: Request<QueryGroupMessagesRequest>) -> Reply<QueryGroupMessagesResponse> {
        let request = request.into_inner();
        let page = Page::from_proto(request.paging_info.as_ref());
        let (messages, paging_info) = self.node.query_group_messages(&request.group_id, page).await?;
        Ok(Response::new(QueryGroupMessagesResponse { messages, paging_info: Some(paging_info) }))
    }

    #[tracing::instrument(name = "xmtp.query_welcome_messages", skip_all)]
    async fn query_welcome_messages(&self, request: Request<QueryWelcomeMessagesRequest>) -> Reply<QueryWelcomeMessagesResponse> {
        let request = request.into_inner();
        let page = Page::from_proto(request.paging_info.as_ref());
        let (messages, paging_info) = self.node.query_welcomes(&request.installation_key, page).await?;
        Ok(Response::new(QueryWelcomeMessagesResponse { messages, paging_info: Some(paging_info) }))
    }

    type SubscribeGroupMessagesStream = Feed<GroupMessage>;

    #[tracing::instrument(name = "xmtp.subscribe_group_messages", skip_all, fields(xmtp.filters = request.get_ref().filters.len()))]
    async fn subscribe_group_messages(&self, request: Request<SubscribeGroupMessagesRequest>) -> Reply<Self::SubscribeGroupMessagesStream> {
        let client = client_key(&request);
        let filters = request.into_inner().filters.into_iter().map(|filter| (filter.group_id, filter.id_cursor)).collect();
        Ok(Response::new(self.subscribe::<GroupTopic>(&client, filters)?))
    }

    type SubscribeWelcomeMessagesStream = Feed<WelcomeMessage>;

    #[tracing::instrument(name = "xmtp.subscribe_welcome_messages", skip_all, fields(xmtp.filters = request.get_ref().filters.len()))]
    async fn subscribe_welcome_messages(&self, request: Request<SubscribeWelcomeMessagesRequest>) -> Reply<Self::SubscribeWelcomeMessagesStream> {
        let client = client_key(&request);
        let filters = request.into_inner().filters.into_iter().map(|filter| (filter.installation_key, filter.id_cursor)).collect();
        Ok(Response::new(self.subscribe::<WelcomeTopic>(&client, filters)?))
    }

    #[tracing::instrument(name = "xmtp.batch_publish_commit_log", skip_all, fields(xmtp.entries = request.get_ref().requests.len()))]
    async fn batch_publish_commit_log(&self, request: Request<BatchPublishCommitLogRequest>) -> Reply<()> {
        let entries = request
            .into_inner()
            .requests
            .into_iter()
            .map(|entry| NewCommitLogEntry {
                group_id: entry.group_id,
                entry: entry.serialized_commit_log_entry,
                signature: entry.signature.map(|signature| signature.encode_to_vec()),
                signer: Vec::new(),
            })
            .collect();
        self.node.publish_commit_log(entries).await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(name = "xmtp.batch_query_commit_log", skip_all, fields(xmtp.groups = request.get_ref().requests.len()))]
    async fn batch_query_commit_log(&self, request: Request<BatchQueryCommitLogRequest>) -> Reply<BatchQueryCommitLogResponse> {
        let queries = request.into_inner().requests.into_iter().map(|query| (query.group_id, Page::from_proto(query.paging_info.as_ref()))).collect();
        let answers = self.node.query_commit_logs(queries).await?;
        let mut responses = Vec::with_capacity(answers.len());
        for (group_id, entries, paging_info) in answers {
            responses.push(QueryCommitLogResponse {
                group_id,
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

    #[tracing::instrument(name = "xmtp.get_newest_group_message", skip_all, fields(xmtp.groups = request.get_ref().group_ids.len()))]
    async fn get_newest_group_message(&self, request: Request<GetNewestGroupMessageRequest>) -> Reply<GetNewestGroupMessageResponse> {
        let request = request.into_inner();
        let newest = self.node.newest_group_messages(&request.group_ids, request.include_content).await?;
        Ok(Response::new(GetNewestGroupMessageResponse {
            responses: newest.into_iter().map(|group_message| get_newest_group_message_response::Response { group_message }).collect(),
        }))
    }
}

#[tonic::async_trait]
impl IdentityApi for XmtpNode {
    #[tracing::instrument(name = "xmtp.publish_identity_update", skip_all)]
    async fn publish_identity_update(&self, request: Request<PublishIdentityUpdateRequest>) -> Reply<PublishIdentityUpdateResponse> {
        let update: IdentityUpdate = request.into_inner().identity_update.ok_or_else(|| Status::invalid_argument("IdentityUpdate is required"))?;
        self.node.publish_identity_update(update).await?;
        Ok(Response::new(PublishIdentityUpdateResponse {}))
    }

    #[tracing::instrument(name = "xmtp.get_identity_updates", skip_all, fields(xmtp.inboxes = request.get_ref().requests.len()))]
    async fn get_identity_updates(&self, request: Request<GetIdentityUpdatesRequest>) -> Reply<GetIdentityUpdatesResponse> {
        let requests: Vec<(String, u64)> = request.into_inner().requests.into_iter().map(|query| (query.inbox_id, query.sequence_id)).collect();
        let logs = self.node.identity_updates(&requests).await?;
        let mut responses = Vec::with_capacity(logs.len());
        for (inbox_id, log) in logs {
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

    #[tracing::instrument(name = "xmtp.get_inbox_ids", skip_all, fields(xmtp.identifiers = request.get_ref().requests.len()))]
    async fn get_inbox_ids(&self, request: Request<GetInboxIdsRequest>) -> Reply<GetInboxIdsResponse> {
        let requests = request.into_inner().requests;
        // Only Ethereum identifiers are indexed; other kinds resolve to no inbox.
        let is_ethereum = |kind: i32| matches!(IdentifierKind::try_from(kind), Ok(IdentifierKind::Ethereum | IdentifierKind::Unspecified) | Err(_));
        let addresses: Vec<String> =
            requests.iter().filter(|query| is_ethereum(query.identifier_kind)).map(|query| query.identifier.clone()).collect();
        let mut inbox_ids = self.node.inbox_ids(&addresses).await?.into_iter();
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
