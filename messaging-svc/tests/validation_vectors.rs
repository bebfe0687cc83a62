//! Validation against real libxmtp v1.9 (node-sdk 5.5.0) wire data, in tests/fixtures/xmtp.
use std::{collections::HashMap, fs, path::Path};

use clawx_messaging::node::validate::assoc::{self, AssocError, MemberId, Policy};
use clawx_messaging::node::validate::keypackage::{self, KeyPackageError};
use clawx_messaging::node::validate::mlsmsg;
use clawx_proto::xmtp::identity::api::v1::PublishIdentityUpdateRequest;
use prost::Message as _;

const V: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/xmtp");

fn files(dir: &str) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = fs::read_dir(Path::new(V).join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), fs::read(&p).unwrap()))
        .collect();
    // order by the numeric id (2nd `_` field) = server sequence
    v.sort_by_key(|(n, _)| n.split('_').nth(1).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0));
    v
}

fn clients() -> serde_json::Value {
    serde_json::from_slice(&fs::read(Path::new(V).join("capture_clients.json")).unwrap()).unwrap()
}

#[test]
fn key_packages_from_libxmtp_validate() {
    let c = clients();
    let inboxes = [c["alice"]["inboxId"].as_str().unwrap(), c["bob"]["inboxId"].as_str().unwrap()];
    for (name, bytes) in files("keypackages") {
        match keypackage::validate_key_package(&bytes) {
            Ok(kp) => {
                let prefix = name.trim_start_matches("kp_").trim_end_matches(".bin");
                assert!(hex::encode(&kp.installation_key).starts_with(prefix), "{name}");
                assert_eq!(kp.installation_key.len(), 32);
                assert!(inboxes.contains(&kp.inbox_id.as_str()), "{name}: {}", kp.inbox_id);
                assert!(kp.last_resort);
                println!("{name}: inbox {} lifetime {}..{}", kp.inbox_id, kp.not_before, kp.not_after);
            }
            // The captured KPs carry openmls' default lifetime (~12 weeks from capture). After that
            // validate() fails on the lifetime check, which runs AFTER both signature checks.
            Err(KeyPackageError::Lifetime(e)) => println!("{name}: expired ({e}) — signatures were verified"),
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

#[test]
fn key_package_tampering_is_rejected() {
    let (_, kp) = files("keypackages").remove(0);
    // flip a byte in the trailing KeyPackage signature
    let mut bad = kp.clone();
    let n = bad.len();
    bad[n - 5] ^= 1;
    assert!(matches!(keypackage::validate_key_package(&bad), Err(KeyPackageError::Invalid(_))), "sig");
    // trailing data
    let mut trailing = kp.clone();
    trailing.push(0);
    assert!(matches!(keypackage::validate_key_package(&trailing), Err(KeyPackageError::Malformed(_))));
    // truncated
    assert!(matches!(keypackage::validate_key_package(&kp[..100]), Err(KeyPackageError::Malformed(_))));
    // garbage / empty
    assert!(keypackage::validate_key_package(&[]).is_err());
    assert!(keypackage::validate_key_package(&[0xff; 300]).is_err());
    // every single-byte corruption of the header area is rejected or yields the same key
    for i in 0..200 {
        let mut b = kp.clone();
        b[i] ^= 0x40;
        if let Ok(v) = keypackage::validate_key_package(&b) {
            panic!("byte {i} flip accepted: {:?}", v.inbox_id);
        }
    }
}

#[test]
fn group_messages_from_libxmtp_parse() {
    let c = clients();
    let dm = c["dmGroupId"].as_str().unwrap();
    let group = c["groupId"].as_str().unwrap();
    let mut seen = HashMap::new();
    for (name, bytes) in files("group_messages") {
        let a = mlsmsg::parse_group_message(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(a.is_private, "{name}: libxmtp only sends PrivateMessage");
        assert_eq!(a.is_commit, name.contains("commit"), "{name}");
        *seen.entry(hex::encode(&a.group_id)).or_insert(0) += 1;
        println!("{name}: group {} epoch {} content_type {}", hex::encode(&a.group_id), a.epoch, a.content_type);
    }
    assert!(seen.contains_key(dm) && seen.contains_key(group), "{seen:?}");
}

#[test]
fn group_message_garbage_is_rejected() {
    let (_, m) = files("group_messages").remove(0);
    let mut trailing = m.clone();
    trailing.push(0);
    assert!(mlsmsg::parse_group_message(&trailing).is_err());
    assert!(mlsmsg::parse_group_message(&m[..20]).is_err());
    assert!(mlsmsg::parse_group_message(&[]).is_err());
    // a KeyPackage is an MLSMessage body only when framed; raw KP bytes are not a group message
    let (_, kp) = files("keypackages").remove(0);
    assert!(mlsmsg::parse_group_message(&kp).is_err());
    // a welcome wrapper is not a group message either
    let (_, w) = files("welcomes").remove(0);
    assert!(mlsmsg::parse_group_message(&w).is_err());
}

fn decode_idu(bytes: &[u8]) -> clawx_proto::xmtp::identity::associations::IdentityUpdate {
    PublishIdentityUpdateRequest::decode(bytes).unwrap().identity_update.unwrap()
}

#[test]
fn identity_updates_from_libxmtp_replay_to_the_sdk_state() {
    let c = clients();
    let alice_inbox = c["alice"]["inboxId"].as_str().unwrap();
    let wallet_texts: Vec<String> = ["alice", "bob", "carol"]
        .iter()
        .flat_map(|n| c[n]["signed"].as_array().unwrap().iter().map(|s| s["text"].as_str().unwrap().to_string()))
        .collect();
    let mut states: HashMap<String, assoc::AssociationState> = HashMap::new();
    for (name, bytes) in files("identity_updates") {
        let u = decode_idu(&bytes);
        let v = assoc::verify_update(&u, &Policy::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        // our text == the text libxmtp handed the wallet (the "Link address" update is signed by
        // an installation key + the new wallet, and carol's wallet signed it)
        assert!(wallet_texts.contains(&v.signature_text), "{name}: text differs:\n{}", v.signature_text);
        let old = states.remove(&u.inbox_id);
        let new = assoc::apply_update(old.clone(), &v).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (added, removed) = assoc::diff(old.as_ref(), &new);
        println!("{name}: +{added:?} -{removed:?}");
        states.insert(u.inbox_id.clone(), new);
    }
    // final state == what node-sdk's inboxState() reported after the run
    let a = &states[alice_inbox];
    let fin = &c["aliceFinalState"];
    assert_eq!(a.recovery, MemberId::Ethereum(fin["recoveryIdentifier"]["identifier"].as_str().unwrap().into()));
    let inst: Vec<String> = a.installation_keys().iter().map(hex::encode).collect();
    let want: Vec<String> = fin["installations"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().into()).collect();
    assert_eq!(inst, want);
    let ids: Vec<String> = fin["identifiers"].as_array().unwrap().iter().map(|i| i["identifier"].as_str().unwrap().into()).collect();
    assert_eq!(a.eth_addresses(), ids);
}

fn replay_alice(upto: usize) -> (Option<assoc::AssociationState>, Vec<Vec<u8>>) {
    let c = clients();
    let alice = c["alice"]["inboxId"].as_str().unwrap().to_string();
    let ups: Vec<Vec<u8>> = files("identity_updates").into_iter().filter(|(n, _)| n.contains(&alice[..8])).map(|(_, b)| b).collect();
    let mut st = None;
    for b in &ups[..upto] {
        st = Some(assoc::apply_update(st, &assoc::verify_update(&decode_idu(b), &Policy::default()).unwrap()).unwrap());
    }
    (st, ups)
}

#[test]
fn identity_update_rejections_on_real_data() {
    let p = Policy::default();
    let (_, ups) = replay_alice(0);
    // alice's log: [0]=create+add, [1]=add installation2, [2]=add carol, [3]=revoke installation2, [4]=revoke carol, [5]=change recovery
    // 1. first update must create the inbox
    let v1 = assoc::verify_update(&decode_idu(&ups[1]), &p).unwrap();
    assert_eq!(assoc::apply_update(None, &v1).unwrap_err(), AssocError::NotCreated);
    // 2. second create
    let (st, _) = replay_alice(1);
    let v0 = assoc::verify_update(&decode_idu(&ups[0]), &p).unwrap();
    assert_eq!(assoc::apply_update(st.clone(), &v0).unwrap_err(), AssocError::MultipleCreate);
    // 3. exact replay of a past update (re-add revoked installation2) -> Replay
    let (st4, _) = replay_alice(4);
    assert_eq!(assoc::apply_update(st4.clone(), &v1).unwrap_err(), AssocError::Replay);
    // 4. same replay with the wallet's v byte re-encoded 27/28 -> 0/1: libxmtp would ACCEPT it
    //    (raw-bytes comparison); Clawx's canonical key catches it.
    let mut u = decode_idu(&ups[1]);
    for a in u.actions.iter_mut() {
        if let Some(clawx_proto::xmtp::identity::associations::identity_action::Kind::Add(add)) = a.kind.as_mut()
            && let Some(clawx_proto::xmtp::identity::associations::signature::Signature::Erc191(e)) =
                add.existing_member_signature.as_mut().and_then(|s| s.signature.as_mut())
        {
            e.bytes[64] -= 27;
        }
    }
    let vre = assoc::verify_update(&u, &p).unwrap();
    assert_eq!(assoc::apply_update(st4.clone(), &vre).unwrap_err(), AssocError::ReplayCanonical);
    // 5. tampered text (timestamp changed) -> the wallet signature recovers another address
    let mut u = decode_idu(&ups[1]);
    u.client_timestamp_ns += 1_000_000_000;
    // the installation signature fails first (new member signature is verified first)
    assert!(matches!(assoc::verify_update(&u, &p), Err(AssocError::Signature(clawx_messaging::node::validate::sig::SigError::Ed25519Verify))));
    // 6. wrong inbox id in the update
    let mut u = decode_idu(&ups[0]);
    u.inbox_id = "00".repeat(32);
    // text changes too, so signatures fail: inbox id is inside the signed text
    assert!(assoc::verify_update(&u, &p).is_err());
    // 7. revoke signed by a non-recovery wallet: after recovery moved to dave, alice's wallet can't revoke
    let (st6, _) = replay_alice(6);
    let v3 = assoc::verify_update(&decode_idu(&ups[3]), &p).unwrap();
    assert_eq!(assoc::apply_update(st6, &v3).unwrap_err(), AssocError::Replay);
}

#[test]
fn high_s_is_normalised_without_flipping_v_like_libxmtp() {
    let c = clients();
    let s = &c["alice"]["signed"][0];
    let text = s["text"].as_str().unwrap();
    let sig = hex::decode(&s["signature"].as_str().unwrap()[2..]).unwrap();
    let good = clawx_messaging::node::validate::sig::recover_eip191(text, &sig).unwrap();
    assert_eq!(good.address, c["alice"]["address"].as_str().unwrap());
    assert_eq!(good.normalized, sig);
    // make s high: s' = n - s, keep v. libxmtp lowers it back WITHOUT flipping v -> same address.
    let k = k256::ecdsa::Signature::try_from(&sig[..64]).unwrap();
    let (r, s_) = k.split_scalars();
    let high = k256::ecdsa::Signature::from_scalars(r.to_bytes(), (-*s_.as_ref()).to_bytes()).unwrap();
    let mut hs = high.to_bytes().to_vec();
    hs.push(sig[64]);
    let rec = clawx_messaging::node::validate::sig::recover_eip191(text, &hs).unwrap();
    assert_eq!(rec.normalized, sig, "normalised back to the original low-s bytes");
    assert_eq!(rec.address, good.address);
    // v = 0/1 encodings are accepted too
    let mut v01 = sig.clone();
    v01[64] -= 27;
    assert_eq!(clawx_messaging::node::validate::sig::recover_eip191(text, &v01).unwrap().address, good.address);
    // 64-byte and bad-v signatures are rejected
    assert!(clawx_messaging::node::validate::sig::recover_eip191(text, &sig[..64]).is_err());
    let mut badv = sig.clone();
    badv[64] = 5;
    assert!(clawx_messaging::node::validate::sig::recover_eip191(text, &badv).is_err());
}
