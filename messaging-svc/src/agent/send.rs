//! Sending text into a group the installation is a member of.

use clawx_proto::xmtp::mls::message_contents::{ContentTypeId, EncodedContent, PlaintextEnvelope, plaintext_envelope};
use openmls::prelude::*;
use prost::Message as _;
use tls_codec::Serialize as _;

use super::{AgentError, Engine, mls, state::MlsSession};

/// The `PlaintextEnvelope` of an `xmtp.org/text` 1.0 message.
pub fn text_envelope(text: &str, idempotency_key: &str) -> Vec<u8> {
    let content = EncodedContent {
        r#type: Some(ContentTypeId { authority_id: "xmtp.org".into(), type_id: "text".into(), version_major: 1, version_minor: 0 }),
        parameters: [("encoding".to_string(), "UTF-8".to_string())].into_iter().collect(),
        fallback: None,
        compression: None,
        content: text.as_bytes().to_vec(),
    };
    let envelope = plaintext_envelope::V1 { content: content.encode_to_vec(), idempotency_key: idempotency_key.to_string() };
    PlaintextEnvelope { content: Some(plaintext_envelope::Content::V1(envelope)) }.encode_to_vec()
}

impl Engine {
    /// Sends `text` into a group the account's installation belongs to, with
    /// `idempotency_key` (the Clawx message id) so receivers can recognise it.
    #[tracing::instrument(name = "agent.send_text", skip_all, fields(account.id = account_id))]
    pub async fn send_text(&self, account_id: i64, group_id: &[u8], text: &str, idempotency_key: &str) -> Result<(), AgentError> {
        let installation = self.ensure_ready(account_id).await?;
        let key = self.signing_key(&installation).await?;
        let session = MlsSession::open(self.store.as_ref(), &self.keyring, account_id).await?;
        let provider = session.provider();
        let mut group = MlsGroup::load(provider.storage(), &GroupId::from_slice(group_id))
            .map_err(|error| AgentError::Mls(format!("load group: {error}")))?
            .ok_or_else(|| AgentError::Mls("the installation is not a member of that group".into()))?;
        let message = group
            .create_message(provider, &mls::signer(&key), &text_envelope(text, idempotency_key))
            .map_err(|error| AgentError::Mls(format!("encrypt: {error}")))?;
        let data = message.tls_serialize_detached().map_err(|error| AgentError::Mls(format!("encode: {error}")))?;
        // The advanced ratchet is stored before the message leaves: a key is never used twice,
        // even if this replica stops before the network answers (a retry sends anew).
        session.commit().await?;
        self.network.send_group_message(data, true).await
    }
}
