//! The XMTP agent engine: every Clawx account is an XMTP client run by this service. Each
//! account's server-held wallet owns an XMTP inbox with one installation here, whose keys and
//! MLS state live in the service's database ([`store`], [`state`]), so any replica can act for
//! any account.

pub mod delivery;
pub mod dm;
pub mod mls;
pub mod network;
mod publish;
pub mod receive;
pub mod send;
pub mod state;
pub mod store;
pub mod wrapper;

use std::{sync::Arc, time::Duration};

use clawx_common::{ServiceError, crypto::Keyring};

pub use publish::{INBOX_NONCE, KEY_PACKAGE_REFRESH_MS, publish_external_inbox};

use self::{network::XmtpNetwork, store::AgentStore};
use crate::dm::identity::Identity;

/// How the engine runs (`CLAWX_XMTP_*`).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Encrypts installation keys and MLS state at rest. `None` turns the engine off: accounts
    /// are not XMTP clients and messages stay `stored`.
    pub keyring: Option<Keyring>,
    /// Another XMTP v3 node to talk to (`CLAWX_XMTP_API_URL`); `None`: this service's own node.
    pub api_url: Option<String>,
    /// How often every installation is pulled from the network (also the latency of receiving
    /// from another node, which sends this service no notices).
    pub sync_interval: Duration,
    /// Delivery attempts of one message before it is `failed`.
    pub max_attempts: u32,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig { keyring: None, api_url: None, sync_interval: Duration::from_secs(30), max_attempts: 6 }
    }
}

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
