//! (c) PublishIdentityUpdate: a port of libxmtp v1.9.0's association state machine
//! (xmtp_id/src/associations/{serialization,unverified,verified_signature,association_log,state}.rs)
//! with Clawx's policy for signature kinds it cannot verify.
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use super::sig::{self, SigError};
use super::text::{self, ActionText, Subject};
use clawx_proto::xmtp::identity::associations as pb;
use clawx_proto::xmtp::identity::associations::{identity_action, member_identifier, signature};

// ---------------------------------------------------------------- identifiers

/// libxmtp `MemberIdentifier`. Equality/hash: Ethereum by exact string, Installation by bytes,
/// Passkey by key bytes only (relying_party ignored) — ident/passkey.rs.
#[derive(Debug, Clone)]
pub enum MemberId {
    Ethereum(String),
    Installation(Vec<u8>),
    Passkey { key: Vec<u8>, relying_party: Option<String> },
}

impl PartialEq for MemberId {
    fn eq(&self, o: &Self) -> bool {
        match (self, o) {
            (Self::Ethereum(a), Self::Ethereum(b)) => a == b,
            (Self::Installation(a), Self::Installation(b)) => a == b,
            (Self::Passkey { key: a, .. }, Self::Passkey { key: b, .. }) => a == b,
            _ => false,
        }
    }
}
impl Eq for MemberId {}
impl Hash for MemberId {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            Self::Ethereum(a) => (0u8, a).hash(h),
            Self::Installation(k) => (1u8, k).hash(h),
            Self::Passkey { key, .. } => (2u8, key).hash(h),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    Ethereum,
    Installation,
    Passkey,
}
impl std::fmt::Display for MemberKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemberKind::Ethereum => "ethereum",
            MemberKind::Installation => "installation",
            MemberKind::Passkey => "passkey",
        })
    }
}

impl MemberId {
    pub fn kind(&self) -> MemberKind {
        match self {
            Self::Ethereum(_) => MemberKind::Ethereum,
            Self::Installation(_) => MemberKind::Installation,
            Self::Passkey { .. } => MemberKind::Passkey,
        }
    }
    fn subject(&self) -> Subject<'_> {
        match self {
            Self::Ethereum(a) => Subject::Ethereum(a),
            Self::Installation(k) => Subject::Installation(k),
            Self::Passkey { key, .. } => Subject::Passkey(key),
        }
    }
    /// String libxmtp hashes for the inbox id (Display): address as-is / hex(key).
    fn display(&self) -> String {
        match self {
            Self::Ethereum(a) => a.clone(),
            Self::Installation(k) | Self::Passkey { key: k, .. } => hex::encode(k),
        }
    }
    /// libxmtp `Identifier::inbox_id(nonce)`: Ethereum must be 42 chars, 0x, hex.
    pub fn inbox_id(&self, nonce: u64) -> Result<String, AssocError> {
        match self {
            Self::Ethereum(a) if !sig::is_valid_eth_address_for_inbox(a) => Err(AssocError::InvalidAccountAddress),
            Self::Installation(_) => Err(AssocError::NotIdentifier),
            _ => Ok(sig::inbox_id_for(&self.display(), nonce)),
        }
    }
}

// ---------------------------------------------------------------- errors

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AssocError {
    // --- decoding (serialization.rs, ConversionError / DeserializationError)
    #[error("malformed identity update: {0}")]
    Malformed(&'static str),
    // --- Clawx policy (not libxmtp)
    #[error("unsupported signature kind {0}: this node cannot verify it")]
    Unsupported(&'static str),
    #[error("identity update has no actions")]
    NoActions,
    #[error("identity update has too many actions ({0})")]
    TooManyActions(usize),
    #[error("identity update has a text field longer than {0} bytes")]
    FieldTooLong(usize),
    #[error("inbox log is full")]
    LogFull,
    #[error("replay detected (re-encoded signature)")]
    ReplayCanonical,
    // --- signature verification (SignatureError)
    #[error("signature validation failed: {0}")]
    Signature(#[from] SigError),
    // --- association_log.rs AssociationError, same messages
    #[error("Multiple create operations detected")]
    MultipleCreate,
    #[error("XID not yet created")]
    NotCreated,
    #[error("Member of kind {0} not allowed to add {1}")]
    MemberNotAllowed(MemberKind, MemberKind),
    #[error("Missing existing member")]
    MissingExistingMember,
    #[error("Legacy key is only allowed to be associated using a legacy signature with nonce 0")]
    LegacySignatureReuse,
    #[error("The new member identifier does not match the signer")]
    NewMemberIdSignatureMismatch,
    #[error("Wrong inbox_id specified on association")]
    WrongInboxId,
    #[error("Signature not allowed for role {0} {1}")]
    SignatureNotAllowed(MemberKind, SigKind),
    #[error("Replay detected")]
    Replay,
    #[error("Invalid account address: Must be 42 hex characters, starting with '0x'.")]
    InvalidAccountAddress,
    #[error("Installation Keys are not a public identifier")]
    NotIdentifier,
    #[error("Error creating association tried to add self")]
    AddSelf,
    #[error("Wrong chain id. Initially added with {0} but now signing from {1}")]
    ChainIdMismatch(u64, u64),
}

// ---------------------------------------------------------------- verified signatures

/// libxmtp SignatureKind (Display: erc-191, erc-1271, installation-key, legacy-delegated, p256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigKind {
    Erc191,
    Erc1271,
    InstallationKey,
    LegacyDelegated,
    P256,
}
impl std::fmt::Display for SigKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigKind::Erc191 => "erc-191",
            SigKind::Erc1271 => "erc-1271",
            SigKind::InstallationKey => "installation-key",
            SigKind::LegacyDelegated => "legacy-delegated",
            SigKind::P256 => "p256",
        })
    }
}

#[derive(Debug, Clone)]
pub struct VerifiedSig {
    pub signer: MemberId,
    pub kind: SigKind,
    /// libxmtp raw_bytes: the key of `seen_signatures`.
    pub raw: Vec<u8>,
    /// Clawx addition: malleability-free replay key (ECDSA: r||low-s||parity).
    pub canonical: Vec<u8>,
    /// Only smart-contract wallets have one; always None here.
    pub chain_id: Option<u64>,
}

#[derive(Debug, Clone)]
pub enum VerifiedAction {
    CreateInbox { nonce: u64, account: MemberId, sig: VerifiedSig },
    Add { new_member: MemberId, existing: VerifiedSig, new: VerifiedSig },
    Revoke { member: MemberId, sig: VerifiedSig },
    ChangeRecovery { new_recovery: MemberId, sig: VerifiedSig },
}

#[derive(Debug, Clone)]
pub struct VerifiedUpdate {
    pub inbox_id: String,
    pub client_timestamp_ns: u64,
    pub actions: Vec<VerifiedAction>,
    pub signature_text: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// WebAuthn passkeys can be verified offline (P-256); libxmtp supports them.
    pub allow_passkeys: bool,
    /// Max actions per update (libxmtp has none; bounds CPU per request).
    pub max_actions: usize,
}
impl Default for Policy {
    fn default() -> Self {
        Policy { allow_passkeys: true, max_actions: 256 }
    }
}

fn member_from_proto(m: Option<&pb::MemberIdentifier>, what: &'static str) -> Result<MemberId, AssocError> {
    match m.and_then(|m| m.kind.as_ref()) {
        Some(member_identifier::Kind::EthereumAddress(a)) => Ok(MemberId::Ethereum(a.clone())),
        Some(member_identifier::Kind::InstallationPublicKey(k)) => Ok(MemberId::Installation(k.clone())),
        Some(member_identifier::Kind::Passkey(p)) => Ok(MemberId::Passkey { key: p.key.clone(), relying_party: p.relying_party.clone() }),
        None => Err(AssocError::Malformed(what)),
    }
}

/// libxmtp `Identifier::from_proto`: kind UNSPECIFIED (or unknown) -> Ethereum (string as-is),
/// PASSKEY -> hex-decoded key.
fn identifier_from_proto(s: &str, kind: i32, rp: &Option<String>) -> Result<MemberId, AssocError> {
    match pb::IdentifierKind::try_from(kind).unwrap_or(pb::IdentifierKind::Unspecified) {
        pb::IdentifierKind::Unspecified | pb::IdentifierKind::Ethereum => Ok(MemberId::Ethereum(s.to_string())),
        pb::IdentifierKind::Passkey => Ok(MemberId::Passkey {
            key: hex::decode(s).map_err(|_| AssocError::Malformed("passkey identifier is not hex"))?,
            relying_party: rp.clone(),
        }),
    }
}

/// Checks done while converting the proto (libxmtp serialization.rs) + Clawx policy.
fn check_sig_shape(s: Option<&pb::Signature>, policy: &Policy) -> Result<(), AssocError> {
    match s.and_then(|s| s.signature.as_ref()) {
        None => Err(AssocError::Malformed("missing signature")),
        Some(signature::Signature::Erc6492(_)) => Err(AssocError::Unsupported("erc-6492 (smart contract wallet)")),
        Some(signature::Signature::DelegatedErc191(_)) => Err(AssocError::Unsupported("delegated-erc-191 (legacy v2 key)")),
        Some(signature::Signature::Passkey(_)) if !policy.allow_passkeys => Err(AssocError::Unsupported("passkey")),
        Some(signature::Signature::InstallationKey(k)) => {
            ed25519_dalek::VerifyingKey::try_from(k.public_key.as_slice()).map(|_| ()).map_err(|_| AssocError::Signature(SigError::Ed25519Key))
        }
        Some(_) => Ok(()),
    }
}

fn verify_sig(s: &pb::Signature, text: &str) -> Result<VerifiedSig, AssocError> {
    match s.signature.as_ref().expect("shape checked") {
        signature::Signature::Erc191(e) => {
            let r = sig::recover_eip191(text, &e.bytes)?;
            let mut canonical = r.normalized[..64].to_vec();
            let v = r.normalized[64];
            canonical.push(if v <= 1 { v } else { (v + 1) % 2 }); // parity: 0/1, 27/28, 35+ (EIP-155) -> 0/1
            Ok(VerifiedSig { signer: MemberId::Ethereum(r.address), kind: SigKind::Erc191, raw: r.normalized, canonical, chain_id: None })
        }
        signature::Signature::InstallationKey(k) => {
            sig::verify_installation_signature(text, &k.bytes, &k.public_key)?;
            Ok(VerifiedSig {
                signer: MemberId::Installation(k.public_key.clone()),
                kind: SigKind::InstallationKey,
                raw: k.bytes.clone(),
                canonical: k.bytes.clone(),
                chain_id: None,
            })
        }
        signature::Signature::Passkey(p) => {
            let (origin, raw) = sig::verify_passkey(text, &p.public_key, &p.signature, &p.authenticator_data, &p.client_data_json)?;
            let low = p256::ecdsa::Signature::from_slice(&raw).ok().and_then(|s| s.normalize_s()).map(|s| s.to_vec());
            Ok(VerifiedSig {
                signer: MemberId::Passkey { key: p.public_key.clone(), relying_party: Some(origin) },
                kind: SigKind::P256,
                canonical: low.unwrap_or_else(|| raw.clone()),
                raw,
                chain_id: None,
            })
        }
        signature::Signature::Erc6492(_) | signature::Signature::DelegatedErc191(_) => unreachable!("rejected by policy"),
    }
}

/// Longest free-form text the node stores from an identity update: relying parties and
/// identifier strings. They are not covered by any signature, so they are bounded here.
pub const MAX_FREE_FORM_BYTES: usize = 256;

/// Refuses free-form fields longer than [`MAX_FREE_FORM_BYTES`] anywhere in an update.
pub fn check_free_form_fields(u: &pb::IdentityUpdate) -> Result<(), AssocError> {
    fn bounded(text: &str) -> Result<(), AssocError> {
        if text.len() > MAX_FREE_FORM_BYTES {
            return Err(AssocError::FieldTooLong(MAX_FREE_FORM_BYTES));
        }
        Ok(())
    }
    fn bounded_member(member: Option<&pb::MemberIdentifier>) -> Result<(), AssocError> {
        match member.and_then(|member| member.kind.as_ref()) {
            Some(member_identifier::Kind::EthereumAddress(address)) => bounded(address),
            Some(member_identifier::Kind::InstallationPublicKey(key)) if key.len() > MAX_FREE_FORM_BYTES => {
                Err(AssocError::FieldTooLong(MAX_FREE_FORM_BYTES))
            }
            Some(member_identifier::Kind::Passkey(passkey)) => {
                if passkey.key.len() > MAX_FREE_FORM_BYTES {
                    return Err(AssocError::FieldTooLong(MAX_FREE_FORM_BYTES));
                }
                passkey.relying_party.as_deref().map_or(Ok(()), bounded)
            }
            _ => Ok(()),
        }
    }
    for action in &u.actions {
        match action.kind.as_ref() {
            Some(identity_action::Kind::CreateInbox(create)) => {
                bounded(&create.initial_identifier)?;
                create.relying_party.as_deref().map_or(Ok(()), bounded)?;
            }
            Some(identity_action::Kind::Add(add)) => {
                bounded_member(add.new_member_identifier.as_ref())?;
                add.relying_party.as_deref().map_or(Ok(()), bounded)?;
            }
            Some(identity_action::Kind::Revoke(revoke)) => bounded_member(revoke.member_to_revoke.as_ref())?,
            Some(identity_action::Kind::ChangeRecoveryAddress(change)) => {
                bounded(&change.new_recovery_identifier)?;
                change.relying_party.as_deref().map_or(Ok(()), bounded)?;
            }
            None => {}
        }
    }
    Ok(())
}

/// Signatures an update asks the node to verify: what replaying it costs.
pub fn signature_count(u: &pb::IdentityUpdate) -> usize {
    u.actions
        .iter()
        .map(|action| match action.kind.as_ref() {
            Some(identity_action::Kind::Add(_)) => 2,
            Some(_) => 1,
            None => 0,
        })
        .sum()
}

/// Decode + verify every signature against the update's one signature text
/// (libxmtp `UnverifiedIdentityUpdate::to_verified`). No state needed.
pub fn verify_update(u: &pb::IdentityUpdate, policy: &Policy) -> Result<VerifiedUpdate, AssocError> {
    if !super::keypackage::is_inbox_id(&u.inbox_id) {
        return Err(AssocError::Malformed("inbox_id is not 64 lowercase hex")); // Clawx pre-check
    }
    if u.actions.is_empty() {
        return Err(AssocError::NoActions); // Clawx: libxmtp accepts a no-op update on an existing inbox
    }
    if u.actions.len() > policy.max_actions {
        return Err(AssocError::TooManyActions(u.actions.len()));
    }
    // 1. proto -> unsigned actions (+ shape of every signature)
    enum Unsigned<'a> {
        Create { nonce: u64, account: MemberId, sig: &'a pb::Signature },
        Add { new_member: MemberId, existing: &'a pb::Signature, new: &'a pb::Signature },
        Revoke { member: MemberId, sig: &'a pb::Signature },
        Change { new_recovery: MemberId, sig: &'a pb::Signature },
    }
    let mut unsigned = Vec::with_capacity(u.actions.len());
    for a in &u.actions {
        let x = match a.kind.as_ref().ok_or(AssocError::Malformed("missing action"))? {
            identity_action::Kind::CreateInbox(c) => {
                check_sig_shape(c.initial_identifier_signature.as_ref(), policy)?;
                Unsigned::Create {
                    nonce: c.nonce,
                    account: identifier_from_proto(&c.initial_identifier, c.initial_identifier_kind, &c.relying_party)?,
                    sig: c.initial_identifier_signature.as_ref().unwrap(),
                }
            }
            identity_action::Kind::Add(add) => {
                check_sig_shape(add.new_member_signature.as_ref(), policy)?;
                check_sig_shape(add.existing_member_signature.as_ref(), policy)?;
                Unsigned::Add {
                    new_member: member_from_proto(add.new_member_identifier.as_ref(), "missing member_identifier")?,
                    existing: add.existing_member_signature.as_ref().unwrap(),
                    new: add.new_member_signature.as_ref().unwrap(),
                }
            }
            identity_action::Kind::Revoke(r) => {
                check_sig_shape(r.recovery_identifier_signature.as_ref(), policy)?;
                Unsigned::Revoke {
                    member: member_from_proto(r.member_to_revoke.as_ref(), "missing member_to_revoke")?,
                    sig: r.recovery_identifier_signature.as_ref().unwrap(),
                }
            }
            identity_action::Kind::ChangeRecoveryAddress(c) => {
                check_sig_shape(c.existing_recovery_identifier_signature.as_ref(), policy)?;
                Unsigned::Change {
                    new_recovery: identifier_from_proto(&c.new_recovery_identifier, c.new_recovery_identifier_kind, &c.relying_party)?,
                    sig: c.existing_recovery_identifier_signature.as_ref().unwrap(),
                }
            }
        };
        unsigned.push(x);
    }
    // 2. the one signature text
    let lines: Vec<ActionText<'_>> = unsigned
        .iter()
        .map(|x| match x {
            Unsigned::Create { account, .. } => ActionText::CreateInbox(account.subject()),
            Unsigned::Add { new_member, .. } => ActionText::Add(new_member.subject()),
            Unsigned::Revoke { member, .. } => ActionText::Revoke(member.subject()),
            Unsigned::Change { new_recovery, .. } => ActionText::ChangeRecovery(new_recovery.subject()),
        })
        .collect();
    let signature_text = text::signature_text(&u.inbox_id, u.client_timestamp_ns, &lines);
    // 3. verify (order inside an Add: new member first, then existing — as libxmtp)
    let mut actions = Vec::with_capacity(unsigned.len());
    for x in &unsigned {
        actions.push(match x {
            Unsigned::Create { nonce, account, sig } => {
                VerifiedAction::CreateInbox { nonce: *nonce, account: account.clone(), sig: verify_sig(sig, &signature_text)? }
            }
            Unsigned::Add { new_member, existing, new } => {
                let new = verify_sig(new, &signature_text)?;
                let existing = verify_sig(existing, &signature_text)?;
                VerifiedAction::Add { new_member: new_member.clone(), existing, new }
            }
            Unsigned::Revoke { member, sig } => VerifiedAction::Revoke { member: member.clone(), sig: verify_sig(sig, &signature_text)? },
            Unsigned::Change { new_recovery, sig } => {
                VerifiedAction::ChangeRecovery { new_recovery: new_recovery.clone(), sig: verify_sig(sig, &signature_text)? }
            }
        });
    }
    Ok(VerifiedUpdate { inbox_id: u.inbox_id.clone(), client_timestamp_ns: u.client_timestamp_ns, actions, signature_text })
}

// ---------------------------------------------------------------- state

#[derive(Debug, Clone)]
pub struct Member {
    pub id: MemberId,
    pub added_by: Option<MemberId>,
    pub client_timestamp_ns: Option<u64>,
    pub added_on_chain_id: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct AssociationState {
    pub inbox_id: String,
    pub members: HashMap<MemberId, Member>,
    /// Ethereum or Passkey, never an installation.
    pub recovery: MemberId,
    pub seen_signatures: HashSet<Vec<u8>>,
    /// Clawx-only: canonical replay keys.
    pub seen_canonical: HashSet<Vec<u8>>,
}

impl AssociationState {
    pub fn installation_keys(&self) -> Vec<Vec<u8>> {
        self.members.keys().filter_map(|m| if let MemberId::Installation(k) = m { Some(k.clone()) } else { None }).collect()
    }
    pub fn eth_addresses(&self) -> Vec<String> {
        self.members.keys().filter_map(|m| if let MemberId::Ethereum(a) = m { Some(a.clone()) } else { None }).collect()
    }
}

fn allowed_signature_for_kind(role: MemberKind, k: SigKind) -> Result<(), AssocError> {
    let ok = match role {
        MemberKind::Ethereum => matches!(k, SigKind::Erc191 | SigKind::Erc1271 | SigKind::LegacyDelegated),
        MemberKind::Installation => k == SigKind::InstallationKey,
        MemberKind::Passkey => k == SigKind::P256,
    };
    if ok { Ok(()) } else { Err(AssocError::SignatureNotAllowed(role, k)) }
}

fn replay_check(state: &AssociationState, sigs: &[&VerifiedSig]) -> Result<(), AssocError> {
    for s in sigs {
        if state.seen_signatures.contains(&s.raw) {
            return Err(AssocError::Replay);
        }
        if state.seen_canonical.contains(&s.canonical) {
            return Err(AssocError::ReplayCanonical);
        }
    }
    Ok(())
}

fn verify_chain_id_matches(m: &Member, s: &VerifiedSig) -> Result<(), AssocError> {
    // Only ever differs for smart-contract wallets (unsupported here), kept for parity.
    if m.added_on_chain_id != s.chain_id {
        Err(AssocError::ChainIdMismatch(m.added_on_chain_id.unwrap_or(0), s.chain_id.unwrap_or(0)))
    } else {
        Ok(())
    }
}

/// Revocations and recovery changes: a fresh signature by the recovery identifier, never a
/// legacy one (libxmtp's checks, in its order).
fn check_recovery_signature(state: &AssociationState, sig: &VerifiedSig) -> Result<(), AssocError> {
    replay_check(state, &[sig])?;
    if let Some(member) = state.members.get(&sig.signer) {
        verify_chain_id_matches(member, sig)?;
    }
    if sig.kind == SigKind::LegacyDelegated {
        return Err(AssocError::SignatureNotAllowed(MemberKind::Ethereum, SigKind::LegacyDelegated));
    }
    if sig.signer != state.recovery {
        return Err(AssocError::MissingExistingMember);
    }
    Ok(())
}

fn apply_action(state: Option<AssociationState>, a: &VerifiedAction, ts: u64) -> Result<AssociationState, AssocError> {
    match a {
        VerifiedAction::CreateInbox { nonce, account, sig } => {
            if state.is_some() {
                return Err(AssocError::MultipleCreate);
            }
            if sig.signer != *account {
                return Err(AssocError::MissingExistingMember);
            }
            allowed_signature_for_kind(account.kind(), sig.kind)?;
            if sig.kind == SigKind::LegacyDelegated && *nonce != 0 {
                return Err(AssocError::LegacySignatureReuse);
            }
            let inbox_id = account.inbox_id(*nonce)?;
            let member = Member { id: account.clone(), added_by: None, client_timestamp_ns: None, added_on_chain_id: sig.chain_id };
            Ok(AssociationState {
                inbox_id,
                members: HashMap::from([(account.clone(), member)]),
                recovery: account.clone(),
                seen_signatures: HashSet::new(),
                seen_canonical: HashSet::new(),
            })
        }
        VerifiedAction::Add { new_member, existing, new } => {
            let mut st = state.ok_or(AssocError::NotCreated)?;
            replay_check(&st, &[existing, new])?;
            if new.signer != *new_member {
                return Err(AssocError::NewMemberIdSignatureMismatch);
            }
            if new.signer == existing.signer {
                return Err(AssocError::AddSelf);
            }
            // legacy rule (only reachable with LegacyDelegated, which the policy rejects earlier)
            if existing.signer.kind() != MemberKind::Installation
                && (new.kind == SigKind::LegacyDelegated || existing.kind == SigKind::LegacyDelegated)
                && st.inbox_id != existing.signer.inbox_id(0)?
            {
                return Err(AssocError::LegacySignatureReuse);
            }
            allowed_signature_for_kind(new_member.kind(), new.kind)?;
            let existing_member = st.members.get(&existing.signer);
            if let Some(m) = existing_member {
                verify_chain_id_matches(m, existing)?;
            }
            let existing_entity_id = match existing_member {
                Some(m) => m.id.clone(),
                None => {
                    // not a member: only the recovery identifier may add (with a real signature)
                    if existing.signer != st.recovery {
                        return Err(AssocError::MissingExistingMember);
                    }
                    if existing.kind == SigKind::LegacyDelegated {
                        return Err(AssocError::LegacySignatureReuse);
                    }
                    st.recovery.clone()
                }
            };
            allowed_signature_for_kind(existing_entity_id.kind(), existing.kind)?;
            // the only forbidden pair: installation adds installation
            if existing.signer.kind() == MemberKind::Installation && new_member.kind() == MemberKind::Installation {
                return Err(AssocError::MemberNotAllowed(MemberKind::Installation, MemberKind::Installation));
            }
            let m =
                Member { id: new.signer.clone(), added_by: Some(existing_entity_id), client_timestamp_ns: Some(ts), added_on_chain_id: new.chain_id };
            st.members.insert(m.id.clone(), m); // re-adding an existing member overwrites it
            Ok(st)
        }
        VerifiedAction::Revoke { member, sig } => {
            let mut st = state.ok_or(AssocError::NotCreated)?;
            check_recovery_signature(&st, sig)?;
            let children: Vec<MemberId> = st
                .members
                .values()
                .filter(|m| m.added_by.as_ref() == Some(member) && m.id.kind() == MemberKind::Installation)
                .map(|m| m.id.clone())
                .collect();
            st.members.remove(member); // revoking a non-member is a no-op, not an error
            for c in children {
                st.members.remove(&c);
            }
            Ok(st)
        }
        VerifiedAction::ChangeRecovery { new_recovery, sig } => {
            let mut st = state.ok_or(AssocError::NotCreated)?;
            check_recovery_signature(&st, sig)?;
            st.recovery = new_recovery.clone();
            Ok(st)
        }
    }
}

fn sigs_of(a: &VerifiedAction) -> Vec<&VerifiedSig> {
    match a {
        VerifiedAction::CreateInbox { sig, .. } | VerifiedAction::Revoke { sig, .. } | VerifiedAction::ChangeRecovery { sig, .. } => vec![sig],
        VerifiedAction::Add { existing, new, .. } => vec![existing, new],
    }
}

/// libxmtp `IdentityUpdate::update_state`: actions in order against the running state; the
/// signatures of this update join `seen_signatures` only after all actions succeeded (so the
/// same wallet signature may appear in CreateInbox and AddAssociation of one update).
pub fn apply_update(state: Option<AssociationState>, u: &VerifiedUpdate) -> Result<AssociationState, AssocError> {
    let mut st = state;
    for a in &u.actions {
        st = Some(apply_action(st, a, u.client_timestamp_ns)?);
    }
    let mut st = st.ok_or(AssocError::NotCreated)?;
    if st.inbox_id != u.inbox_id {
        return Err(AssocError::WrongInboxId);
    }
    for a in &u.actions {
        for s in sigs_of(a) {
            st.seen_signatures.insert(s.raw.clone());
            st.seen_canonical.insert(s.canonical.clone());
        }
    }
    Ok(st)
}

/// Members added / removed between two states (node-go updates address_log from this).
pub fn diff(old: Option<&AssociationState>, new: &AssociationState) -> (Vec<MemberId>, Vec<MemberId>) {
    let added = new.members.keys().filter(|k| old.is_none_or(|o| !o.members.contains_key(*k))).cloned().collect();
    let removed = old.map(|o| o.members.keys().filter(|k| !new.members.contains_key(*k)).cloned().collect()).unwrap_or_default();
    (added, removed)
}
