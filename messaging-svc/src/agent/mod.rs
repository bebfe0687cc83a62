//! The XMTP agent engine: every Clawx account is an XMTP client run by this service. Each
//! account's server-held wallet owns an XMTP inbox with one installation here, whose keys and
//! MLS state live in the service's database ([`store`], [`state`]), so any replica can act for
//! any account.

pub mod dm;
pub mod mls;
pub mod network;
mod publish;
pub mod receive;
pub mod send;
pub mod state;
pub mod store;

use std::sync::Arc;

use clawx_common::{ServiceError, crypto::Keyring};

pub use publish::{INBOX_NONCE, KEY_PACKAGE_REFRESH_MS};

use self::{network::XmtpNetwork, store::AgentStore};
use crate::dm::identity::Identity;

/// The engine of one replica: acts for any account, with state in the database.
#[derive(Clone, Debug)]
pub struct Engine {
    store: Arc<dyn AgentStore>,
    keyring: Keyring,
    identity: Identity,
    network: XmtpNetwork,
}

impl Engine {
    pub fn new(store: Arc<dyn AgentStore>, keyring: Keyring, identity: Identity, network: XmtpNetwork) -> Engine {
        Engine { store, keyring, identity, network }
    }

    pub fn network(&self) -> &XmtpNetwork {
        &self.network
    }
}

/// What can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the account has no XMTP installation yet")]
    NoInstallation,
    #[error("agent store: {0}")]
    Store(#[from] sqlx::Error),
    /// Stored secrets could not be decrypted (a master key missing from the keyring, or
    /// tampered data).
    #[error("keyring: {0}")]
    Keyring(String),
    #[error("the installation's MLS state is larger than its bound")]
    StateTooLarge,
    #[error("MLS: {0}")]
    Mls(String),
    #[error("the account does not exist")]
    NoAccount,
    #[error("identity service: {0}")]
    Identity(ServiceError),
    #[error("XMTP network: {0}")]
    Network(String),
    /// The peer's wallet has no XMTP inbox, or its inbox no installation that can be reached.
    #[error("the recipient is not on XMTP")]
    RecipientNotOnXmtp,
}
