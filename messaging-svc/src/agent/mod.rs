//! The XMTP agent engine: every Clawx account is an XMTP client run by this service. Each
//! account's server-held wallet owns an XMTP inbox with one installation here, whose keys and
//! MLS state live in the service's database ([`store`], [`state`]), so any replica can act for
//! any account.

pub mod state;
pub mod store;

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
}
