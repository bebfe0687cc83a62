//! Commit-log entries, checked as libxmtp checks them when it reads a group's log
//! (`xmtp_mls` `commit_log.rs` and `commit_log_key.rs`): the entry is a
//! `PlaintextCommitLogEntry` for the group it is published to, with a commit sequence id, and
//! carries a plain Ed25519 signature of its serialized bytes with the public key beside it.
//! Which key a group's log accepts (the key of its first entry) is decided by the store.

use clawx_proto::xmtp::{identity::associations::RecoverableEd25519Signature, mls::message_contents::PlaintextCommitLogEntry};
use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message;

use crate::node::store::NewCommitLogEntry;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommitLogError {
    #[error("the signature does not decode")]
    SignatureMalformed,
    #[error("the signature's public key is not an Ed25519 key")]
    PublicKey,
    #[error("the signature does not verify")]
    Signature,
    #[error("the entry is not a commit log entry")]
    Entry,
    #[error("the entry names another group")]
    OtherGroup,
    #[error("the entry has no commit sequence id")]
    NoSequence,
}

/// The signer's public key of a valid entry.
pub fn verify_entry(entry: &NewCommitLogEntry, signature: &[u8]) -> Result<Vec<u8>, CommitLogError> {
    let signature = RecoverableEd25519Signature::decode(signature).map_err(|_| CommitLogError::SignatureMalformed)?;
    let public_key: [u8; 32] = signature.public_key.as_slice().try_into().map_err(|_| CommitLogError::PublicKey)?;
    let key = VerifyingKey::from_bytes(&public_key).map_err(|_| CommitLogError::PublicKey)?;
    let bytes: [u8; 64] = signature.bytes.as_slice().try_into().map_err(|_| CommitLogError::SignatureMalformed)?;
    key.verify_strict(&entry.entry, &Signature::from_bytes(&bytes)).map_err(|_| CommitLogError::Signature)?;
    let plaintext = PlaintextCommitLogEntry::decode(entry.entry.as_slice()).map_err(|_| CommitLogError::Entry)?;
    if plaintext.group_id != entry.group_id {
        return Err(CommitLogError::OtherGroup);
    }
    if plaintext.commit_sequence_id == 0 {
        return Err(CommitLogError::NoSequence);
    }
    Ok(public_key.to_vec())
}
