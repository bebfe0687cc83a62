//! The XMTP network the engine talks to: Clawx's own node by default (this service's listener,
//! over gRPC), or another XMTP v3 node named by `CLAWX_XMTP_API_URL` (TLS when `https`).

use std::time::Duration;

use clawx_proto::xmtp::{
    identity::{
        api::v1::{
            GetIdentityUpdatesRequest, GetInboxIdsRequest, PublishIdentityUpdateRequest, get_identity_updates_request, get_inbox_ids_request,
            identity_api_client::IdentityApiClient,
        },
        associations::{IdentifierKind, IdentityUpdate},
    },
    mls::api::v1::{
        FetchKeyPackagesRequest, GroupMessage, GroupMessageInput, KeyPackageUpload, PagingInfo, QueryGroupMessagesRequest,
        QueryWelcomeMessagesRequest, SendGroupMessagesRequest, SendWelcomeMessagesRequest, SortDirection, UploadKeyPackageRequest, WelcomeMessage,
        WelcomeMessageInput, group_message_input, mls_api_client::MlsApiClient,
    },
};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::AgentError;

/// Largest XMTP message the engine sends or accepts.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Bound of one call to the network.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// A client of an XMTP v3 node.
#[derive(Clone, Debug)]
pub struct XmtpNetwork {
    mls: MlsApiClient<Channel>,
    identity: IdentityApiClient<Channel>,
}

/// What the network knows of an inbox: each identity update, with its sequence id.
#[derive(Clone, Debug, Default)]
pub struct InboxHistory {
    pub updates: Vec<(u64, IdentityUpdate)>,
}

impl InboxHistory {
    /// The newest sequence id (0 when the inbox does not exist).
    pub fn latest_sequence_id(&self) -> u64 {
        self.updates.iter().map(|(sequence_id, _)| *sequence_id).max().unwrap_or(0)
    }
}

fn network_error(what: &'static str) -> impl FnOnce(tonic::Status) -> AgentError {
    move |status| AgentError::Network(format!("{what}: {:?}: {}", status.code(), status.message()))
}

impl XmtpNetwork {
    /// A client of the node at `url`; it connects on first use.
    pub fn connect_lazy(url: &str) -> Result<XmtpNetwork, AgentError> {
        let invalid = |error: &dyn std::fmt::Display| AgentError::Network(format!("XMTP API URL {url}: {error}"));
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|error| invalid(&error))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true);
        if url.starts_with("https://") {
            endpoint = endpoint.tls_config(ClientTlsConfig::new().with_native_roots()).map_err(|error| invalid(&error))?;
        }
        let channel = endpoint.connect_lazy();
        Ok(XmtpNetwork {
            mls: MlsApiClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES),
            identity: IdentityApiClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES).max_encoding_message_size(MAX_MESSAGE_BYTES),
        })
    }

    /// The inbox of an Ethereum address (lowercase `0x` hex), if it has one.
    pub async fn inbox_id_of(&self, address: &str) -> Result<Option<String>, AgentError> {
        let request = GetInboxIdsRequest {
            requests: vec![get_inbox_ids_request::Request { identifier: address.to_string(), identifier_kind: IdentifierKind::Ethereum as i32 }],
        };
        let answer = self.identity.clone().get_inbox_ids(request).await.map_err(network_error("GetInboxIds"))?.into_inner();
        Ok(answer.responses.into_iter().find(|response| response.identifier.eq_ignore_ascii_case(address)).and_then(|response| response.inbox_id))
    }

    /// Every identity update of an inbox.
    pub async fn inbox_history(&self, inbox_id: &str) -> Result<InboxHistory, AgentError> {
        let request =
            GetIdentityUpdatesRequest { requests: vec![get_identity_updates_request::Request { inbox_id: inbox_id.to_string(), sequence_id: 0 }] };
        let answer = self.identity.clone().get_identity_updates(request).await.map_err(network_error("GetIdentityUpdates"))?.into_inner();
        let mut history = InboxHistory::default();
        for response in answer.responses.into_iter().filter(|response| response.inbox_id == inbox_id) {
            for update in response.updates {
                if let Some(identity_update) = update.update {
                    history.updates.push((update.sequence_id, identity_update));
                }
            }
        }
        history.updates.sort_by_key(|(sequence_id, _)| *sequence_id);
        Ok(history)
    }

    pub async fn publish_identity_update(&self, update: IdentityUpdate) -> Result<(), AgentError> {
        let request = PublishIdentityUpdateRequest { identity_update: Some(update) };
        self.identity.clone().publish_identity_update(request).await.map_err(network_error("PublishIdentityUpdate"))?;
        Ok(())
    }

    pub async fn upload_key_package(&self, key_package: Vec<u8>) -> Result<(), AgentError> {
        let request =
            UploadKeyPackageRequest { key_package: Some(KeyPackageUpload { key_package_tls_serialized: key_package }), is_inbox_id_credential: true };
        self.mls.clone().upload_key_package(request).await.map_err(network_error("UploadKeyPackage"))?;
        Ok(())
    }

    /// Welcomes for an installation after `id_cursor`, oldest first.
    pub async fn welcomes(&self, installation_key: &[u8], id_cursor: u64, limit: u32) -> Result<Vec<WelcomeMessage>, AgentError> {
        let request = QueryWelcomeMessagesRequest {
            installation_key: installation_key.to_vec(),
            paging_info: Some(PagingInfo { direction: SortDirection::Ascending as i32, limit, id_cursor }),
        };
        Ok(self.mls.clone().query_welcome_messages(request).await.map_err(network_error("QueryWelcomeMessages"))?.into_inner().messages)
    }

    /// A group's messages after `id_cursor`, oldest first.
    pub async fn group_messages(&self, group_id: &[u8], id_cursor: u64, limit: u32) -> Result<Vec<GroupMessage>, AgentError> {
        let request = QueryGroupMessagesRequest {
            group_id: group_id.to_vec(),
            paging_info: Some(PagingInfo { direction: SortDirection::Ascending as i32, limit, id_cursor }),
        };
        Ok(self.mls.clone().query_group_messages(request).await.map_err(network_error("QueryGroupMessages"))?.into_inner().messages)
    }

    /// Publishes one MLS message (TLS-serialized) to its group.
    pub async fn send_group_message(&self, data: Vec<u8>, should_push: bool) -> Result<(), AgentError> {
        // Receivers do not check the HMAC; it only lets push servers filter a sender's own
        // messages, which Clawx's installations do not subscribe to.
        let message = group_message_input::V1 { data, sender_hmac: vec![0; 32], should_push };
        let request = SendGroupMessagesRequest { messages: vec![GroupMessageInput { version: Some(group_message_input::Version::V1(message)) }] };
        self.mls.clone().send_group_messages(request).await.map_err(network_error("SendGroupMessages"))?;
        Ok(())
    }

    /// The newest key package of each installation, in order (`None` where none is known).
    pub async fn key_packages(&self, installation_keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, AgentError> {
        let request = FetchKeyPackagesRequest { installation_keys: installation_keys.to_vec() };
        let answer = self.mls.clone().fetch_key_packages(request).await.map_err(network_error("FetchKeyPackages"))?.into_inner();
        Ok(answer
            .key_packages
            .into_iter()
            .map(|key_package| Some(key_package.key_package_tls_serialized).filter(|bytes| !bytes.is_empty()))
            .collect())
    }

    pub async fn send_welcomes(&self, welcomes: Vec<WelcomeMessageInput>) -> Result<(), AgentError> {
        self.mls
            .clone()
            .send_welcome_messages(SendWelcomeMessagesRequest { messages: welcomes })
            .await
            .map_err(network_error("SendWelcomeMessages"))?;
        Ok(())
    }
}
