//! Validation of what XMTP writers send, so a bad writer cannot corrupt the network: key
//! packages (parsed and verified with openmls), group messages (group id and commit flag read
//! from the MLS framing), and identity updates (libxmtp's association rules: EIP-191 wallet
//! signatures, Ed25519ph installation signatures, passkeys, inbox id derivation, replay).
//! Smart-contract-wallet (ERC-6492) and legacy delegated signatures are refused: this node
//! cannot verify them.

pub mod assoc;
pub mod commitlog;
pub mod keypackage;
pub mod mlsmsg;
pub mod sig;
pub mod text;
