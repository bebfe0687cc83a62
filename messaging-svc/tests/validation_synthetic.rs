//! Rule-by-rule tests with locally generated keys (libxmtp v1.9.0 semantics).
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use prost::Message as _;
use sha2::{Digest, Sha256, Sha512};
use tls_codec::Serialize as _;

use clawx_messaging::node::validate::assoc::{self, AssocError, AssociationState, MemberId, MemberKind, Policy};
use clawx_messaging::node::validate::keypackage::{self, KeyPackageError};
use clawx_messaging::node::validate::mlsmsg;
use clawx_messaging::node::validate::text::{self, ActionText, Subject};
use clawx_proto::xmtp::identity::MlsCredential;
use clawx_proto::xmtp::identity::associations::{self as pb, identity_action::Kind, signature::Signature as S};

mod support;
use support::*;

/// create inbox (nonce 1) with wallet + installation, like node-sdk's first registration.
fn new_inbox(w: &Wallet, i: &Inst) -> (String, AssociationState) {
    let inbox = clawx_messaging::node::validate::sig::inbox_id_for(&w.address(), 1);
    let u = build(&inbox, ts(), vec![A::Create(w.address(), 1, Signer::W(w)), A::Add(i.id(), Signer::W(w), Signer::I(i))]);
    let st = apply(None, &u).unwrap();
    (inbox, st)
}

// ------------------------------------------------------------------ text / ids

#[test]
fn libxmtp_signature_text_vector() {
    // xmtp_id/src/associations/unsigned_actions.rs `create_signatures`
    let inbox = clawx_messaging::node::validate::sig::inbox_id_for("0x1234567890abcdef1234567890abcdef12345678", 0);
    assert_eq!(inbox, "fcd18d86276d7a99fe522dba9660c420f03c8648785ada7c5daae232a3df77a9");
    let t = text::signature_text(
        &inbox,
        12,
        &[
            ActionText::CreateInbox(Subject::Ethereum("0x1234567890abcdef1234567890abcdef12345678")),
            ActionText::Add(Subject::Ethereum("0x4567890abcdef1234567890abcdef12345678123")),
            ActionText::Add(Subject::Installation(&[1, 2, 3])),
            ActionText::Revoke(Subject::Ethereum("0x4567890abcdef1234567890abcdef12345678123")),
            ActionText::Revoke(Subject::Installation(&[1, 2, 3])),
            ActionText::ChangeRecovery(Subject::Ethereum("0x7890abcdef1234567890abcdef12345678123456")),
        ],
    );
    let expected = "XMTP : Authenticate to inbox

Inbox ID: fcd18d86276d7a99fe522dba9660c420f03c8648785ada7c5daae232a3df77a9
Current time: 1970-01-01T00:00:00Z

- Create inbox
  (Owner: 0x1234567890abcdef1234567890abcdef12345678)
- Link address to inbox
  (Address: 0x4567890abcdef1234567890abcdef12345678123)
- Grant messaging access to app
  (ID: 010203)
- Unlink address from inbox
  (Address: 0x4567890abcdef1234567890abcdef12345678123)
- Revoke messaging access from app
  (ID: 010203)
- Change inbox recovery address
  (Address: 0x7890abcdef1234567890abcdef12345678123456)

For more info: https://xmtp.org/signatures";
    assert_eq!(t, expected);
    assert_eq!(ActionText::Add(Subject::Passkey(&[0xab, 0xcd])).line(), "- Link passkey to inbox\n  (Passkey: abcd)");
    assert_eq!(ActionText::Revoke(Subject::Passkey(&[0xab])).line(), "- Unlink passkey from inbox\n  (Passkey: ab)");
}

#[test]
fn pretty_timestamp_is_libxmtps_whole_second_utc() {
    // libxmtp formats `client_timestamp_ns as i64` as RFC 3339 with whole seconds (floor), so
    // values at or above 2^63 wrap to dates before 1970.
    for (nanos, expected) in [
        (0u64, "1970-01-01T00:00:00Z"),
        (999_999_999, "1970-01-01T00:00:00Z"),
        (1_000_000_000, "1970-01-01T00:00:01Z"),
        (1_700_000_000_123_456_789, "2023-11-14T22:13:20Z"),
        (1_795_347_715_412_792_538, "2026-11-22T11:41:55Z"),
        (9_223_372_036_854_775_807, "2262-04-11T23:47:16Z"),
        (9_223_372_036_854_775_808, "1677-09-21T00:12:43Z"),
        (u64::MAX, "1969-12-31T23:59:59Z"),
        (u64::MAX - 999_999_999, "1969-12-31T23:59:59Z"),
    ] {
        assert_eq!(text::pretty_timestamp(nanos), expected, "{nanos}");
    }
}

// ------------------------------------------------------------------ identity rules

#[test]
fn create_and_add_then_rules() {
    let w = Wallet::new();
    let i1 = Inst::new();
    let (inbox, st) = new_inbox(&w, &i1);
    assert_eq!(st.members.len(), 2);
    assert_eq!(st.recovery, MemberId::Ethereum(w.address()));

    // installation adding an installation is the one forbidden pair
    let i2 = Inst::new();
    let u = build(&inbox, ts(), vec![A::Add(i2.id(), Signer::I(&i1), Signer::I(&i2))]);
    assert_eq!(apply(Some(st.clone()), &u).unwrap_err(), AssocError::MemberNotAllowed(MemberKind::Installation, MemberKind::Installation));

    // installation may add a wallet
    let w2 = Wallet::new();
    let u = build(&inbox, ts(), vec![A::Add(w2.id(), Signer::I(&i1), Signer::W(&w2))]);
    let st2 = apply(Some(st.clone()), &u).unwrap();
    assert_eq!(st2.members[&MemberId::Ethereum(w2.address())].added_by, Some(MemberId::Installation(i1.key())));

    // a linked (non-recovery) wallet may add installations
    let i3 = Inst::new();
    let u = build(&inbox, ts(), vec![A::Add(i3.id(), Signer::W(&w2), Signer::I(&i3))]);
    let st3 = apply(Some(st2.clone()), &u).unwrap();

    // ... but may not revoke: only the recovery identifier signs revocations
    let u = build(&inbox, ts(), vec![A::Revoke(i3.id(), Signer::W(&w2))]);
    assert_eq!(apply(Some(st3.clone()), &u).unwrap_err(), AssocError::MissingExistingMember);
    let u = build(&inbox, ts(), vec![A::Revoke(i3.id(), Signer::I(&i1))]);
    assert_eq!(apply(Some(st3.clone()), &u).unwrap_err(), AssocError::MissingExistingMember);

    // revoking w2 (by recovery) also removes the installations w2 added
    let u = build(&inbox, ts(), vec![A::Revoke(w2.id(), Signer::W(&w))]);
    let st4 = apply(Some(st3.clone()), &u).unwrap();
    assert!(!st4.members.contains_key(&MemberId::Installation(i3.key())));
    assert!(!st4.members.contains_key(&MemberId::Ethereum(w2.address())));
    assert!(st4.members.contains_key(&MemberId::Installation(i1.key())));

    // revoking a non-member is accepted (no-op), as in libxmtp
    let u = build(&inbox, ts(), vec![A::Revoke(Inst::new().id(), Signer::W(&w))]);
    assert_eq!(apply(Some(st4.clone()), &u).unwrap().members.len(), st4.members.len());

    // add self / id mismatch / stranger
    let u = build(&inbox, ts(), vec![A::Add(w.id(), Signer::W(&w), Signer::W(&w))]);
    assert_eq!(apply(Some(st.clone()), &u).unwrap_err(), AssocError::AddSelf);
    let i4 = Inst::new();
    let u = build(&inbox, ts(), vec![A::Add(Inst::new().id(), Signer::W(&w), Signer::I(&i4))]);
    assert_eq!(apply(Some(st.clone()), &u).unwrap_err(), AssocError::NewMemberIdSignatureMismatch);
    let stranger = Wallet::new();
    let u = build(&inbox, ts(), vec![A::Add(i4.id(), Signer::W(&stranger), Signer::I(&i4))]);
    assert_eq!(apply(Some(st.clone()), &u).unwrap_err(), AssocError::MissingExistingMember);

    // an installation signature where a wallet signature is required (new member kind = ethereum)
    let w5 = Wallet::new();
    let u = build(&inbox, ts(), vec![A::Add(w5.id(), Signer::W(&w), Signer::I(&i4))]);
    assert_eq!(apply(Some(st.clone()), &u).unwrap_err(), AssocError::NewMemberIdSignatureMismatch);

    // empty update
    let u = build(&inbox, ts(), vec![]);
    assert_eq!(apply(Some(st.clone()), &u).unwrap_err(), AssocError::NoActions);
}

#[test]
fn recovery_address_semantics() {
    let w = Wallet::new();
    let i1 = Inst::new();
    let (inbox, st) = new_inbox(&w, &i1);
    let r = Wallet::new(); // new recovery wallet, NOT a member
    let u = build(&inbox, ts(), vec![A::Change(r.address(), Signer::W(&w))]);
    let st = apply(Some(st), &u).unwrap();
    assert_eq!(st.recovery, MemberId::Ethereum(r.address()));
    assert!(!st.members.contains_key(&MemberId::Ethereum(r.address())));
    // old recovery (still a member) can no longer revoke or change recovery
    let u = build(&inbox, ts(), vec![A::Revoke(i1.id(), Signer::W(&w))]);
    assert_eq!(apply(Some(st.clone()), &u).unwrap_err(), AssocError::MissingExistingMember);
    let u = build(&inbox, ts(), vec![A::Change(w.address(), Signer::W(&w))]);
    assert_eq!(apply(Some(st.clone()), &u).unwrap_err(), AssocError::MissingExistingMember);
    // the recovery wallet can revoke the original wallet: its installations go with it
    let u = build(&inbox, ts(), vec![A::Revoke(w.id(), Signer::W(&r))]);
    let st2 = apply(Some(st.clone()), &u).unwrap();
    assert!(st2.members.is_empty());
    // and, although not a member, may add members (added_by = recovery identifier)
    let i2 = Inst::new();
    let u = build(&inbox, ts(), vec![A::Add(i2.id(), Signer::W(&r), Signer::I(&i2))]);
    let st3 = apply(Some(st2), &u).unwrap();
    assert_eq!(st3.members[&MemberId::Installation(i2.key())].added_by, Some(MemberId::Ethereum(r.address())));
}

#[test]
fn create_rules() {
    let w = Wallet::new();
    let i = Inst::new();
    // signer != initial identifier
    let other = Wallet::new();
    let inbox = clawx_messaging::node::validate::sig::inbox_id_for(&w.address(), 1);
    let u = build(&inbox, ts(), vec![A::Create(w.address(), 1, Signer::W(&other))]);
    assert_eq!(apply(None, &u).unwrap_err(), AssocError::MissingExistingMember);
    // checksummed / uppercase address: the recovered signer is lowercase -> mismatch
    let upper = format!("0x{}", w.address()[2..].to_uppercase());
    let inbox_u = clawx_messaging::node::validate::sig::inbox_id_for(&upper, 1);
    let u = build(&inbox_u, ts(), vec![A::Create(upper.clone(), 1, Signer::W(&w))]);
    assert_eq!(apply(None, &u).unwrap_err(), AssocError::MissingExistingMember);
    // inbox_id not derived from (address, nonce)
    let wrong = clawx_messaging::node::validate::sig::inbox_id_for(&w.address(), 2);
    let u = build(&wrong, ts(), vec![A::Create(w.address(), 1, Signer::W(&w))]);
    assert_eq!(apply(None, &u).unwrap_err(), AssocError::WrongInboxId);
    // nonce 0 is as good as any other
    let inbox0 = clawx_messaging::node::validate::sig::inbox_id_for(&w.address(), 0);
    let u = build(&inbox0, ts(), vec![A::Create(w.address(), 0, Signer::W(&w)), A::Add(i.id(), Signer::W(&w), Signer::I(&i))]);
    apply(None, &u).unwrap();
    // an installation key cannot create an inbox (signer kind mismatch)
    let u = build(&inbox, ts(), vec![A::Create(w.address(), 1, Signer::I(&i))]);
    assert_eq!(apply(None, &u).unwrap_err(), AssocError::MissingExistingMember);
    // Add before Create in the first update
    let u = build(&inbox, ts(), vec![A::Add(i.id(), Signer::W(&w), Signer::I(&i)), A::Create(w.address(), 1, Signer::W(&w))]);
    assert_eq!(apply(None, &u).unwrap_err(), AssocError::NotCreated);
}

#[test]
fn signature_encodings() {
    let w = Wallet::new();
    let i = Inst::new();
    let inbox = clawx_messaging::node::validate::sig::inbox_id_for(&w.address(), 1);
    let t0 = ts();
    let text_ = text::signature_text(
        &inbox,
        t0,
        &[ActionText::CreateInbox(Subject::Ethereum(&w.address())), ActionText::Add(Subject::Installation(&i.key()))],
    );
    // plain Ed25519 (not prehashed) is rejected
    use ed25519_dalek::Signer as _;
    let plain = i.0.sign(text_.as_bytes()).to_bytes().to_vec();
    assert_eq!(
        clawx_messaging::node::validate::sig::verify_installation_signature(&text_, &plain, &i.key()),
        Err(clawx_messaging::node::validate::sig::SigError::Ed25519Verify)
    );
    // Ed25519ph without the context is rejected
    let noctx = i.0.sign_prehashed(Sha512::new().chain_update(text_.as_bytes()), None).unwrap().to_bytes().to_vec();
    assert!(clawx_messaging::node::validate::sig::verify_installation_signature(&text_, &noctx, &i.key()).is_err());
    // correct one passes
    let ok = match i.sign(&text_).signature.unwrap() {
        S::InstallationKey(k) => k.bytes,
        _ => unreachable!(),
    };
    clawx_messaging::node::validate::sig::verify_installation_signature(&text_, &ok, &i.key()).unwrap();
    // bad key lengths / points
    assert!(clawx_messaging::node::validate::sig::verify_installation_signature(&text_, &ok, &i.key()[..31]).is_err());

    // unsupported kinds are rejected before any state is looked at
    let scw = pb::Signature {
        signature: Some(S::Erc6492(pb::SmartContractWalletSignature {
            account_id: format!("eip155:8453:{}", w.address()),
            block_number: 1,
            signature: vec![1, 2, 3],
        })),
    };
    let u = build(&inbox, t0, vec![A::Create(w.address(), 1, Signer::Raw(scw)), A::Add(i.id(), Signer::W(&w), Signer::I(&i))]);
    assert!(matches!(assoc::verify_update(&u, &Policy::default()), Err(AssocError::Unsupported(_))));
    let legacy = pb::Signature {
        signature: Some(S::DelegatedErc191(pb::LegacyDelegatedSignature {
            delegated_key: Some(Default::default()),
            signature: Some(pb::RecoverableEcdsaSignature { bytes: vec![0; 65] }),
        })),
    };
    let u = build(&inbox, t0, vec![A::Create(w.address(), 0, Signer::Raw(legacy))]);
    assert!(matches!(assoc::verify_update(&u, &Policy::default()), Err(AssocError::Unsupported(_))));
    // missing signature / missing action kind
    let mut u = build(&inbox, t0, vec![A::Create(w.address(), 1, Signer::W(&w))]);
    if let Some(Kind::CreateInbox(c)) = u.actions[0].kind.as_mut() {
        c.initial_identifier_signature = None;
    }
    assert!(matches!(assoc::verify_update(&u, &Policy::default()), Err(AssocError::Malformed(_))));
    u.actions[0].kind = None;
    assert!(matches!(assoc::verify_update(&u, &Policy::default()), Err(AssocError::Malformed(_))));
}

#[test]
fn passkey_inbox() {
    use base64::Engine as _;
    use p256::ecdsa::signature::Signer as _;
    let sk = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let pk = sk.verifying_key().to_encoded_point(false).as_bytes().to_vec();
    let i = Inst::new();
    let inbox = clawx_messaging::node::validate::sig::inbox_id_for(&hex::encode(&pk), 1);
    let t = ts();
    let text_ = text::signature_text(&inbox, t, &[ActionText::CreateInbox(Subject::Passkey(&pk)), ActionText::Add(Subject::Installation(&i.key()))]);
    let cdj = format!(
        r#"{{"type":"webauthn.get","challenge":"{}","origin":"https://app.example"}}"#,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text_.as_bytes())
    );
    let auth = vec![7u8; 37];
    let mut data = auth.clone();
    data.extend_from_slice(&Sha256::digest(cdj.as_bytes()));
    let sig: p256::ecdsa::Signature = sk.sign(&data);
    let psig = pb::Signature {
        signature: Some(S::Passkey(pb::RecoverablePasskeySignature {
            public_key: pk.clone(),
            signature: sig.to_der().as_bytes().to_vec(),
            authenticator_data: auth,
            client_data_json: cdj.into_bytes(),
        })),
    };
    let u = pb::IdentityUpdate {
        inbox_id: inbox.clone(),
        client_timestamp_ns: t,
        actions: vec![
            pb::IdentityAction {
                kind: Some(Kind::CreateInbox(pb::CreateInbox {
                    initial_identifier: hex::encode(&pk),
                    nonce: 1,
                    initial_identifier_signature: Some(psig.clone()),
                    initial_identifier_kind: 2,
                    relying_party: Some("https://app.example".into()),
                })),
            },
            pb::IdentityAction {
                kind: Some(Kind::Add(pb::AddAssociation {
                    new_member_identifier: Some(i.id()),
                    existing_member_signature: Some(psig),
                    new_member_signature: Some(i.sign(&text_)),
                    relying_party: None,
                })),
            },
        ],
    };
    let st = apply(None, &u).unwrap();
    assert_eq!(st.members.len(), 2);
    let off = Policy { allow_passkeys: false, ..Policy::default() };
    assert!(matches!(assoc::verify_update(&u, &off), Err(AssocError::Unsupported(_))));
}

// ------------------------------------------------------------------ key packages

#[test]
fn key_package_rules() {
    let inbox = "ab".repeat(32);
    let cred = MlsCredential { inbox_id: inbox.clone() }.encode_to_vec();
    let (kp, pk) = make_kp(CS, cred.clone(), Some(inbox.as_bytes()));
    let v = keypackage::validate_key_package(&kp).unwrap();
    assert_eq!(v.installation_key, pk);
    assert_eq!(v.inbox_id, inbox);
    // no ApplicationId is fine
    keypackage::validate_key_package(&make_kp(CS, cred.clone(), None).0).unwrap();
    // ApplicationId != credential inbox
    assert!(matches!(keypackage::validate_key_package(&make_kp(CS, cred.clone(), Some(b"other")).0), Err(KeyPackageError::ApplicationIdMismatch)));
    // credential identity that is not an MlsCredential proto
    assert!(matches!(keypackage::validate_key_package(&make_kp(CS, vec![0xff, 0xff], None).0), Err(KeyPackageError::BadCredential(_))));
    // inbox id not sha256-hex
    let bad = MlsCredential { inbox_id: "not-an-inbox".into() }.encode_to_vec();
    assert!(matches!(keypackage::validate_key_package(&make_kp(CS, bad, None).0), Err(KeyPackageError::BadInboxId(_))));
    // other ciphersuite (also Ed25519-signed, verifies fine in openmls)
    let other = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
    assert!(matches!(keypackage::validate_key_package(&make_kp(other, cred, None).0), Err(KeyPackageError::Ciphersuite(1))));
}

// ------------------------------------------------------------------ MLS messages

#[test]
fn group_message_framing() {
    let signer = SignatureKeyPair::new(CS.signature_algorithm()).unwrap();
    let cwk = CredentialWithKey { credential: BasicCredential::new(b"x".to_vec()).into(), signature_key: signer.public().to_vec().into() };
    for policy in [PURE_CIPHERTEXT_WIRE_FORMAT_POLICY, PURE_PLAINTEXT_WIRE_FORMAT_POLICY] {
        let provider = OpenMlsRustCrypto::default();
        let cfg = MlsGroupCreateConfig::builder().ciphersuite(CS).wire_format_policy(policy).build();
        let mut g = MlsGroup::new_with_group_id(&provider, &signer, &cfg, GroupId::from_slice(b"0123456789abcdef"), cwk.clone()).unwrap();
        let (commit, _, _) = g.self_update(&provider, &signer, LeafNodeParameters::default()).unwrap().into_contents();
        let c = commit.tls_serialize_detached().unwrap();
        let info = mlsmsg::parse_group_message(&c).unwrap();
        assert!(info.is_commit && info.content_type == 3);
        assert_eq!(info.group_id, b"0123456789abcdef");
        g.merge_pending_commit(&provider).unwrap();
        let app = g.create_message(&provider, &signer, b"hi").unwrap().tls_serialize_detached().unwrap();
        let info = mlsmsg::parse_group_message(&app).unwrap();
        assert!(!info.is_commit && info.content_type == 1 && info.epoch == 1);
        println!("policy private={} commit {} bytes app {} bytes", info.is_private, c.len(), app.len());
    }
}
