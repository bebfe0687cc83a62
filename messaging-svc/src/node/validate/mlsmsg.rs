//! (b) SendGroupMessages: read group id / commit-ness from the RFC 9420 framing.
use openmls::prelude::{ContentType, MlsMessageIn, ProtocolMessage, WireFormat};
use tls_codec::Deserialize as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMessageInfo {
    pub group_id: Vec<u8>,
    pub epoch: u64,
    /// libxmtp/mls_validation_service: `content_type() == ContentType::Commit` (proposals are NOT commits).
    pub is_commit: bool,
    /// 1 = application, 2 = proposal, 3 = commit
    pub content_type: u8,
    /// true = PrivateMessage (what libxmtp always sends), false = PublicMessage
    pub is_private: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupMessageError {
    #[error("empty group message")]
    Empty,
    #[error("not a TLS-serialized MLSMessage: {0}")]
    Malformed(#[from] tls_codec::Error),
    #[error("MLSMessage is not a PublicMessage or PrivateMessage")]
    NotProtocolMessage,
    #[error("empty group id")]
    EmptyGroupId,
    #[error("openmls panicked while parsing")]
    Panic,
}

/// openmls-based (recommended): the same calls libxmtp's validation service makes
/// (`MlsMessageIn::tls_deserialize` + `try_into_protocol_message` + `group_id` / `content_type`).
pub fn parse_group_message(data: &[u8]) -> Result<GroupMessageInfo, GroupMessageError> {
    if data.is_empty() {
        return Err(GroupMessageError::Empty);
    }
    std::panic::catch_unwind(|| parse_inner(data)).unwrap_or(Err(GroupMessageError::Panic))
}

fn parse_inner(data: &[u8]) -> Result<GroupMessageInfo, GroupMessageError> {
    // _exact: rejects trailing bytes (libxmtp's validation service tolerates them; libxmtp never sends them).
    let msg = MlsMessageIn::tls_deserialize_exact(data)?;
    let pm: ProtocolMessage = msg.try_into_protocol_message().map_err(|_| GroupMessageError::NotProtocolMessage)?;
    let group_id = pm.group_id().as_slice().to_vec();
    if group_id.is_empty() {
        return Err(GroupMessageError::EmptyGroupId);
    }
    let content_type = pm.content_type();
    Ok(GroupMessageInfo {
        group_id,
        epoch: pm.epoch().as_u64(),
        is_commit: content_type == ContentType::Commit,
        content_type: match content_type {
            ContentType::Application => 1,
            ContentType::Proposal => 2,
            ContentType::Commit => 3,
        },
        is_private: pm.wire_format() == WireFormat::PrivateMessage,
    })
}
