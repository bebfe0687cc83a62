//! gRPC adapter of the messaging service: unwraps requests, calls the direct-message domain,
//! converts its errors to `Status` once.

use std::{pin::Pin, sync::Arc};

use clawx_common::{ServiceContext, ServiceError, auth::principal_of};
use clawx_proto::{
    common::{GetStatusRequest, ServiceStatus},
    messaging::{self as pb, list_conversation_request, messaging_service_server::MessagingService, send_direct_message_request},
};
use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    agent::delivery::Delivery,
    dm::{DirectMessages, Peer, store::Consent},
    push::Push,
};

pub struct MessagingGrpc {
    context: ServiceContext,
    messages: Arc<DirectMessages>,
    push: Arc<Push>,
    /// The XMTP side of messages, when the agent engine runs.
    delivery: Option<Arc<Delivery>>,
    shutdown: CancellationToken,
}

impl MessagingGrpc {
    pub fn new(
        context: ServiceContext,
        messages: Arc<DirectMessages>,
        push: Arc<Push>,
        delivery: Option<Arc<Delivery>>,
        shutdown: CancellationToken,
    ) -> Self {
        MessagingGrpc { context, messages, push, delivery, shutdown }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn account_of<T>(request: &Request<T>) -> Result<i64, Status> {
    principal_of(request).require_account().map_err(ServiceError::into_status)
}

fn consent(value: i32) -> Result<Option<Consent>, Status> {
    match pb::Consent::try_from(value) {
        Ok(pb::Consent::Unspecified) => Ok(None),
        Ok(pb::Consent::Unknown) => Ok(Some(Consent::Unknown)),
        Ok(pb::Consent::Allowed) => Ok(Some(Consent::Allowed)),
        Ok(pb::Consent::Denied) => Ok(Some(Consent::Denied)),
        Err(_) => Err(ServiceError::invalid("consent", "consent must be unknown, allowed or denied").into_status()),
    }
}

#[tonic::async_trait]
impl MessagingService for MessagingGrpc {
    async fn get_status(&self, _request: Request<GetStatusRequest>) -> Reply<ServiceStatus> {
        Ok(Response::new(self.context.status().await))
    }

    async fn send_direct_message(&self, request: Request<pb::SendDirectMessageRequest>) -> Reply<pb::SendDirectMessageResponse> {
        let account_id = account_of(&request)?;
        let message = request.into_inner();
        let to = message.to.map(|to| match to {
            send_direct_message_request::To::Handle(handle) => Peer::Handle(handle),
            send_direct_message_request::To::WalletAddress(address) => Peer::WalletAddress(address),
        });
        let sent = self.messages.send(account_id, to, message.content, message.idempotency_key).await.map_err(ServiceError::into_status)?;
        // An account that existed before the engine becomes an XMTP client on first use.
        if let Some(delivery) = &self.delivery {
            delivery.first_use(account_id);
        }
        Ok(Response::new(pb::SendDirectMessageResponse { message: Some(sent) }))
    }

    async fn list_inbox(&self, request: Request<pb::ListInboxRequest>) -> Reply<pb::ListInboxResponse> {
        let account_id = account_of(&request)?;
        let message = request.into_inner();
        let conversations =
            self.messages.inbox(account_id, consent(message.consent)?, message.limit, message.offset).await.map_err(ServiceError::into_status)?;
        Ok(Response::new(pb::ListInboxResponse { conversations }))
    }

    async fn list_conversation(&self, request: Request<pb::ListConversationRequest>) -> Reply<pb::ListConversationResponse> {
        let account_id = account_of(&request)?;
        let message = request.into_inner();
        let peer = message.peer.map(|peer| match peer {
            list_conversation_request::Peer::Handle(handle) => Peer::Handle(handle),
            list_conversation_request::Peer::WalletAddress(address) => Peer::WalletAddress(address),
        });
        let messages = self
            .messages
            .conversation(account_id, peer, message.limit, message.offset, message.before_id, message.after_id)
            .await
            .map_err(ServiceError::into_status)?;
        Ok(Response::new(pb::ListConversationResponse { messages }))
    }

    type StreamMessagesStream = Pin<Box<dyn Stream<Item = Result<pb::Message, Status>> + Send>>;

    async fn stream_messages(&self, request: Request<pb::StreamMessagesRequest>) -> Reply<Self::StreamMessagesStream> {
        let account_id = account_of(&request)?;
        let after_id = request.into_inner().after_id;
        if let Some(delivery) = &self.delivery {
            delivery.first_use(account_id);
        }
        let stream = self.messages.stream(account_id, after_id, self.shutdown.clone()).await.map_err(ServiceError::into_status)?;
        Ok(Response::new(stream))
    }

    async fn set_consent(&self, request: Request<pb::SetConsentRequest>) -> Reply<pb::SetConsentResponse> {
        let account_id = account_of(&request)?;
        let response = self.messages.set_consent(account_id, request.into_inner()).await.map_err(ServiceError::into_status)?;
        Ok(Response::new(response))
    }

    async fn check_spam(&self, request: Request<pb::CheckSpamRequest>) -> Reply<pb::CheckSpamResponse> {
        let response = self.messages.check_spam(&request.into_inner().address).await.map_err(ServiceError::into_status)?;
        Ok(Response::new(response))
    }

    async fn purge_account(&self, request: Request<pb::PurgeAccountRequest>) -> Reply<pb::PurgeAccountResponse> {
        crate::purge::authorize(&principal_of(&request)).map_err(ServiceError::into_status)?;
        let account_id = request.into_inner().account_id;
        let messages_deleted = crate::purge::purge_account(&self.context.database, account_id).await.map_err(ServiceError::into_status)?;
        Ok(Response::new(pb::PurgeAccountResponse { messages_deleted }))
    }

    async fn publish_group_message(&self, request: Request<pb::PublishGroupMessageRequest>) -> Reply<pb::PublishGroupMessageResponse> {
        crate::groups::authorize(&principal_of(&request)).map_err(ServiceError::into_status)?;
        let message = request.into_inner();
        let published = crate::groups::publish(&self.context.backends.pubsub, &message.member_ids, &message.message.unwrap_or_default())
            .await
            .map_err(ServiceError::into_status)?;
        Ok(Response::new(pb::PublishGroupMessageResponse { published }))
    }

    async fn register_push(&self, request: Request<pb::RegisterPushRequest>) -> Reply<pb::RegisterPushResponse> {
        let account_id = account_of(&request)?;
        let response = self.push.register(account_id, request.into_inner()).await.map_err(ServiceError::into_status)?;
        Ok(Response::new(response))
    }

    async fn sync_xmtp(&self, request: Request<pb::SyncXmtpRequest>) -> Reply<pb::SyncXmtpResponse> {
        let account_id = account_of(&request)?;
        let delivery = self.delivery.as_ref().ok_or_else(|| {
            ServiceError::new(clawx_common::ErrorCode::Unavailable, "XMTP is not enabled on this server (no CLAWX_MASTER_KEY for messaging)")
                .into_status()
        })?;
        let synced = delivery.sync(account_id).await.map_err(ServiceError::into_status)?;
        Ok(Response::new(pb::SyncXmtpResponse { synced: synced as u64 }))
    }
}
