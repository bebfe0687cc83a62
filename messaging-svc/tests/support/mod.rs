//! Test helpers shared by the node's test binaries: wallet, installation and key-package
//! builders that produce what real XMTP clients send.
#![allow(dead_code)]

use ed25519_dalek::SigningKey as EdKey;
use k256::ecdsa::SigningKey as EcKey;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use sha2::{Digest, Sha512};
use tls_codec::Serialize as _;

use clawx_messaging::node::validate::{
    assoc::{self, AssocError, AssociationState, Policy},
    text::{self, ActionText, Subject},
};
use clawx_proto::xmtp::identity::associations::{self as pb, identity_action::Kind, member_identifier, signature::Signature as S};

// ------------------------------------------------------------------ signers

pub struct Wallet(pub EcKey);
impl Wallet {
    pub fn new() -> Self {
        Wallet(EcKey::random(&mut rand::rngs::OsRng))
    }
    pub fn address(&self) -> String {
        let pt = self.0.verifying_key().to_encoded_point(false);
        let h = alloy_primitives::keccak256(&pt.as_bytes()[1..]);
        format!("0x{}", hex::encode(&h[12..]))
    }
    pub fn sign(&self, text: &str) -> pb::Signature {
        let digest = alloy_primitives::eip191_hash_message(text.as_bytes());
        let (sig, recid) = self.0.sign_prehash_recoverable(digest.as_slice()).unwrap();
        let mut b = sig.to_bytes().to_vec();
        b.push(27 + recid.to_byte());
        pb::Signature { signature: Some(S::Erc191(pb::RecoverableEcdsaSignature { bytes: b })) }
    }
    pub fn id(&self) -> pb::MemberIdentifier {
        pb::MemberIdentifier { kind: Some(member_identifier::Kind::EthereumAddress(self.address())) }
    }
}

pub struct Inst(pub EdKey);
impl Inst {
    pub fn new() -> Self {
        Inst(EdKey::generate(&mut rand::rngs::OsRng))
    }
    pub fn key(&self) -> Vec<u8> {
        self.0.verifying_key().to_bytes().to_vec()
    }
    pub fn sign(&self, text: &str) -> pb::Signature {
        let sig = self.0.sign_prehashed(Sha512::new().chain_update(text.as_bytes()), Some(b"IDENTITY UPDATE SIGNATURE")).unwrap();
        pb::Signature {
            signature: Some(S::InstallationKey(pb::RecoverableEd25519Signature { bytes: sig.to_bytes().to_vec(), public_key: self.key() })),
        }
    }
    pub fn id(&self) -> pb::MemberIdentifier {
        pb::MemberIdentifier { kind: Some(member_identifier::Kind::InstallationPublicKey(self.key())) }
    }
}

pub enum Signer<'a> {
    W(&'a Wallet),
    I(&'a Inst),
    Raw(pb::Signature),
}
impl Signer<'_> {
    pub fn sign(&self, t: &str) -> pb::Signature {
        match self {
            Signer::W(w) => w.sign(t),
            Signer::I(i) => i.sign(t),
            Signer::Raw(s) => s.clone(),
        }
    }
}

/// One action to build; signatures are produced over the final text.
pub enum A<'a> {
    Create(String, u64, Signer<'a>),
    Add(pb::MemberIdentifier, Signer<'a> /*existing*/, Signer<'a> /*new*/),
    Revoke(pb::MemberIdentifier, Signer<'a>),
    Change(String, Signer<'a>),
}

pub fn subject(m: &pb::MemberIdentifier) -> Subject<'_> {
    match m.kind.as_ref().unwrap() {
        member_identifier::Kind::EthereumAddress(a) => Subject::Ethereum(a),
        member_identifier::Kind::InstallationPublicKey(k) => Subject::Installation(k),
        member_identifier::Kind::Passkey(p) => Subject::Passkey(&p.key),
    }
}

pub fn build(inbox: &str, ts: u64, actions: Vec<A<'_>>) -> pb::IdentityUpdate {
    let lines: Vec<ActionText<'_>> = actions
        .iter()
        .map(|a| match a {
            A::Create(id, _, _) => ActionText::CreateInbox(Subject::Ethereum(id)),
            A::Add(m, _, _) => ActionText::Add(subject(m)),
            A::Revoke(m, _) => ActionText::Revoke(subject(m)),
            A::Change(id, _) => ActionText::ChangeRecovery(Subject::Ethereum(id)),
        })
        .collect();
    let t = text::signature_text(inbox, ts, &lines);
    let acts = actions
        .iter()
        .map(|a| pb::IdentityAction {
            kind: Some(match a {
                A::Create(id, nonce, s) => Kind::CreateInbox(pb::CreateInbox {
                    initial_identifier: id.clone(),
                    nonce: *nonce,
                    initial_identifier_signature: Some(s.sign(&t)),
                    initial_identifier_kind: 1,
                    relying_party: None,
                }),
                A::Add(m, e, n) => Kind::Add(pb::AddAssociation {
                    new_member_identifier: Some(m.clone()),
                    existing_member_signature: Some(e.sign(&t)),
                    new_member_signature: Some(n.sign(&t)),
                    relying_party: None,
                }),
                A::Revoke(m, s) => {
                    Kind::Revoke(pb::RevokeAssociation { member_to_revoke: Some(m.clone()), recovery_identifier_signature: Some(s.sign(&t)) })
                }
                A::Change(id, s) => Kind::ChangeRecoveryAddress(pb::ChangeRecoveryAddress {
                    new_recovery_identifier: id.clone(),
                    existing_recovery_identifier_signature: Some(s.sign(&t)),
                    new_recovery_identifier_kind: 1,
                    relying_party: None,
                }),
            }),
        })
        .collect();
    pb::IdentityUpdate { actions: acts, client_timestamp_ns: ts, inbox_id: inbox.to_string() }
}

pub fn apply(st: Option<AssociationState>, u: &pb::IdentityUpdate) -> Result<AssociationState, AssocError> {
    assoc::apply_update(st, &assoc::verify_update(u, &Policy::default())?)
}

pub static TS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1_700_000_000_000_000_000);
pub fn ts() -> u64 {
    TS.fetch_add(1_000_000_007, std::sync::atomic::Ordering::Relaxed)
}

pub const CS: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;

pub fn make_kp(cs: Ciphersuite, identity: Vec<u8>, app_id: Option<&[u8]>) -> (Vec<u8>, Vec<u8>) {
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(cs.signature_algorithm()).unwrap();
    let credential: Credential = BasicCredential::new(identity).into();
    // KP extensions (LastResort) must be listed in the leaf capabilities, or validate() fails
    // with UnsupportedExtension.
    let caps = Capabilities::new(None, Some(&[cs]), Some(&[ExtensionType::LastResort, ExtensionType::ApplicationId]), None, None);
    let mut b = KeyPackage::builder().leaf_node_capabilities(caps);
    if let Some(a) = app_id {
        b = b.leaf_node_extensions(Extensions::single(Extension::ApplicationId(ApplicationIdExtension::new(a))).unwrap());
    }
    let bundle = b
        .key_package_extensions(Extensions::single(Extension::LastResort(LastResortExtension::default())).unwrap())
        .build(cs, &provider, &signer, CredentialWithKey { credential, signature_key: signer.public().to_vec().into() })
        .unwrap();
    (bundle.key_package().tls_serialize_detached().unwrap(), signer.public().to_vec())
}

/// A fresh, valid key package for `inbox_id` (as libxmtp builds them) and its installation key.
pub fn key_package_for(inbox_id: &str) -> (Vec<u8>, Vec<u8>) {
    use prost::Message as _;
    let credential = clawx_proto::xmtp::identity::MlsCredential { inbox_id: inbox_id.to_string() }.encode_to_vec();
    make_kp(CS, credential, Some(inbox_id.as_bytes()))
}

/// A group with a real MLS state: `count` messages (a commit, then application messages), all
/// PrivateMessages framed as libxmtp sends them.
pub fn group_messages(group_id: &[u8], count: usize) -> Vec<Vec<u8>> {
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(CS.signature_algorithm()).unwrap();
    let credential: Credential = BasicCredential::new(b"member".to_vec()).into();
    let with_key = CredentialWithKey { credential, signature_key: signer.public().to_vec().into() };
    let config = MlsGroupCreateConfig::builder().ciphersuite(CS).wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY).build();
    let mut group = MlsGroup::new_with_group_id(&provider, &signer, &config, GroupId::from_slice(group_id), with_key).unwrap();
    let (commit, _, _) = group.self_update(&provider, &signer, LeafNodeParameters::default()).unwrap().into_contents();
    group.merge_pending_commit(&provider).unwrap();
    let mut messages = vec![commit.tls_serialize_detached().unwrap()];
    for index in 1..count {
        let message = group.create_message(&provider, &signer, format!("message {index}").as_bytes()).unwrap();
        messages.push(message.tls_serialize_detached().unwrap());
    }
    messages
}

/// One application message of `size` bytes of content in a fresh group, framed as libxmtp
/// sends it.
pub fn big_group_message(group_id: &[u8], size: usize) -> Vec<u8> {
    let provider = OpenMlsRustCrypto::default();
    let signer = SignatureKeyPair::new(CS.signature_algorithm()).unwrap();
    let credential: Credential = BasicCredential::new(b"member".to_vec()).into();
    let with_key = CredentialWithKey { credential, signature_key: signer.public().to_vec().into() };
    let config = MlsGroupCreateConfig::builder().ciphersuite(CS).wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY).build();
    let mut group = MlsGroup::new_with_group_id(&provider, &signer, &config, GroupId::from_slice(group_id), with_key).unwrap();
    let message = group.create_message(&provider, &signer, &vec![b'x'; size]).unwrap();
    message.tls_serialize_detached().unwrap()
}

/// An installation's MLS signature key (its installation key).
pub fn installation_signer() -> SignatureKeyPair {
    SignatureKeyPair::new(CS.signature_algorithm()).unwrap()
}

/// A valid key package of `signer`'s installation for `inbox_id`.
pub fn key_package_with(signer: &SignatureKeyPair, inbox_id: &str) -> Vec<u8> {
    use prost::Message as _;
    let provider = OpenMlsRustCrypto::default();
    let identity = clawx_proto::xmtp::identity::MlsCredential { inbox_id: inbox_id.to_string() }.encode_to_vec();
    let credential: Credential = BasicCredential::new(identity).into();
    let capabilities = Capabilities::new(None, Some(&[CS]), Some(&[ExtensionType::LastResort, ExtensionType::ApplicationId]), None, None);
    let bundle = KeyPackage::builder()
        .leaf_node_capabilities(capabilities)
        .leaf_node_extensions(Extensions::single(Extension::ApplicationId(ApplicationIdExtension::new(inbox_id.as_bytes()))).unwrap())
        .key_package_extensions(Extensions::single(Extension::LastResort(LastResortExtension::default())).unwrap())
        .build(CS, &provider, signer, CredentialWithKey { credential, signature_key: signer.public().to_vec().into() })
        .unwrap();
    bundle.key_package().tls_serialize_detached().unwrap()
}

/// A new inbox (nonce 1) with a wallet and an installation, as node-sdk registers one.
pub fn registration(wallet: &Wallet, installation: &Inst) -> (String, pb::IdentityUpdate) {
    let inbox = clawx_messaging::node::validate::sig::inbox_id_for(&wallet.address(), 1);
    let update = build(
        &inbox,
        ts(),
        vec![A::Create(wallet.address(), 1, Signer::W(wallet)), A::Add(installation.id(), Signer::W(wallet), Signer::I(installation))],
    );
    (inbox, update)
}
