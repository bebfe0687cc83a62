//! The agent store's conformance suite on SQLite and (when configured) PostgreSQL: installations
//! are created once, openmls state round-trips encrypted and only when a session commits, two
//! stores on one database (two replicas) never interleave one installation's operations, and a
//! master-key rotation re-encrypts what a session touches.

use std::sync::Arc;

use clawx_common::{
    Database, Secret,
    crypto::{Keyring, generate_master_key},
};
use clawx_messaging::agent::{
    AgentError,
    state::MlsSession,
    store::{AgentStore, InstallationRecord, for_database},
};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;

const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;

async fn open_store(test_db: &clawx_common::testing::TestDatabase) -> (Database, Arc<dyn AgentStore>) {
    let database = Database::connect(&test_db.args, "messaging").await.unwrap();
    database.migrate(&clawx_messaging::MIGRATIONS).await.unwrap();
    let store = for_database(&database);
    (database, store)
}

fn installation(account_id: i64, key_byte: u8) -> InstallationRecord {
    InstallationRecord {
        account_id,
        inbox_id: format!("inbox-{account_id}"),
        wallet_address: format!("0x{:040x}", account_id),
        installation_key: vec![key_byte; 32],
        private_key: vec![key_byte; 60],
        created_at: 1_000,
        identity_published_at: None,
        key_package_expires_at: None,
    }
}

fn keyring(active: &str, retired: Option<&str>) -> Keyring {
    Keyring::new(&Secret::new(active), retired.map(Secret::new).as_ref()).unwrap()
}

/// The stored (encrypted) state rows of an account.
async fn raw_rows(database: &Database, account_id: i64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let statement = "SELECT state_key, state_value FROM agent_mls_state WHERE account_id = $1";
    match database {
        Database::Postgres(pool) => sqlx::query_as(statement).bind(account_id).fetch_all(pool).await.unwrap(),
        Database::Sqlite(pool) => sqlx::query_as(statement).bind(account_id).fetch_all(pool).await.unwrap(),
    }
}

fn group_epoch(session: &MlsSession, group_id: &GroupId) -> Option<u64> {
    MlsGroup::load(session.provider().storage(), group_id).unwrap().map(|group| group.epoch().as_u64())
}

clawx_common::backend_tests! {
    async fn installations_are_created_once(test_db) {
        let backend = test_db.backend.name();
        let (_database, store) = open_store(&test_db).await;
        assert_eq!(store.installation(1).await.unwrap(), None, "{backend}");
        let first = store.create_installation(&installation(1, 1)).await.unwrap();
        assert_eq!(first, installation(1, 1), "{backend}");
        let again = store.create_installation(&installation(1, 2)).await.unwrap();
        assert_eq!(again, first, "{backend}: the first installation wins");
        store.set_identity_published(1, 2_000).await.unwrap();
        store.set_key_package_expiry(1, 3_000).await.unwrap();
        store.replace_private_key(1, &[9; 61]).await.unwrap();
        let updated = store.installation(1).await.unwrap().unwrap();
        assert_eq!((updated.identity_published_at, updated.key_package_expires_at), (Some(2_000), Some(3_000)), "{backend}");
        assert_eq!(updated.private_key, vec![9; 61], "{backend}");
        let duplicate_key = store.create_installation(&installation(2, 1)).await;
        assert!(duplicate_key.is_err(), "{backend}: an installation key belongs to one account");
    }
}

clawx_common::backend_tests! {
    async fn mls_state_round_trips_encrypted_and_only_when_committed(test_db) {
        let backend = test_db.backend.name();
        let (database, store) = open_store(&test_db).await;
        let keys = keyring(&generate_master_key(), None);
        let error = MlsSession::open(store.as_ref(), &keys, 7).await.unwrap_err();
        assert!(matches!(error, AgentError::NoInstallation), "{backend}: {error:?}");
        store.create_installation(&installation(7, 7)).await.unwrap();

        // A group and a key package, made by openmls with the session's provider.
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
        let credential = CredentialWithKey { credential: BasicCredential::new(b"agent".to_vec()).into(), signature_key: signer.public().into() };
        let session = MlsSession::open(store.as_ref(), &keys, 7).await.unwrap();
        signer.store(session.provider().storage()).unwrap();
        let group = MlsGroup::builder().ciphersuite(CIPHERSUITE).build(session.provider(), &signer, credential.clone()).unwrap();
        let group_id = group.group_id().clone();
        KeyPackage::builder().build(CIPHERSUITE, session.provider(), &signer, credential.clone()).unwrap();
        let (written, removed) = session.commit().await.unwrap();
        assert!(written > 3 && removed == 0, "{backend}: {written} written, {removed} removed");

        // At rest every value is encrypted under the active key, bound to its installation.
        let rows = raw_rows(&database, 7).await;
        assert_eq!(rows.len(), written, "{backend}");
        for (key, blob) in &rows {
            assert_eq!(Keyring::key_id_of(blob), Some(keys.active_id()), "{backend}");
            let mut context = b"xmtp-mls:7:".to_vec();
            context.extend_from_slice(key);
            keys.decrypt(blob, &context).unwrap();
            let mut elsewhere = b"xmtp-mls:8:".to_vec();
            elsewhere.extend_from_slice(key);
            assert!(keys.decrypt(blob, &elsewhere).is_err(), "{backend}: a value cannot move to another installation");
        }

        // A session that advances the group but does not commit leaves the stored state alone.
        let session = MlsSession::open(store.as_ref(), &keys, 7).await.unwrap();
        let mut loaded = MlsGroup::load(session.provider().storage(), &group_id).unwrap().expect("group stored");
        assert_eq!(loaded.epoch().as_u64(), 0, "{backend}");
        loaded.self_update(session.provider(), &signer, LeafNodeParameters::default()).unwrap();
        loaded.merge_pending_commit(session.provider()).unwrap();
        assert_eq!(loaded.epoch().as_u64(), 1);
        drop(session);
        let session = MlsSession::open(store.as_ref(), &keys, 7).await.unwrap();
        assert_eq!(group_epoch(&session, &group_id), Some(0), "{backend}: nothing half-written");

        // Committed, it carries on from there; what openmls deleted is deleted.
        let mut loaded = MlsGroup::load(session.provider().storage(), &group_id).unwrap().unwrap();
        loaded.self_update(session.provider(), &signer, LeafNodeParameters::default()).unwrap();
        loaded.merge_pending_commit(session.provider()).unwrap();
        session.commit().await.unwrap();
        let session = MlsSession::open(store.as_ref(), &keys, 7).await.unwrap();
        assert_eq!(group_epoch(&session, &group_id), Some(1), "{backend}");
        let mut loaded = MlsGroup::load(session.provider().storage(), &group_id).unwrap().unwrap();
        loaded.delete(session.provider().storage()).unwrap();
        let (_, removed) = session.commit().await.unwrap();
        assert!(removed > 0, "{backend}: deleting the group removes its rows");
        let session = MlsSession::open(store.as_ref(), &keys, 7).await.unwrap();
        assert_eq!(group_epoch(&session, &group_id), None, "{backend}");
    }
}

/// Reads the counter value of an account's state, waits a moment, writes it back plus one.
async fn increment(store: Arc<dyn AgentStore>, keys: Keyring, account_id: i64) {
    let session = MlsSession::open(store.as_ref(), &keys, account_id).await.unwrap();
    let current = session.provider().storage().values.read().unwrap().get(b"counter".as_slice()).map_or(0, |value| value[0]);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    session.provider().storage().values.write().unwrap().insert(b"counter".to_vec(), vec![current + 1]);
    session.commit().await.unwrap();
}

clawx_common::backend_tests! {
    async fn two_replicas_take_turns_on_one_installation(test_db) {
        let backend = test_db.backend.name();
        // Two stores on two connection pools: two replicas of the service.
        let (_first_database, first) = open_store(&test_db).await;
        let (_second_database, second) = open_store(&test_db).await;
        let keys = keyring(&generate_master_key(), None);
        first.create_installation(&installation(11, 11)).await.unwrap();
        first.create_installation(&installation(12, 12)).await.unwrap();
        let mut tasks = Vec::new();
        for round in 0..8 {
            let store = if round % 2 == 0 { Arc::clone(&first) } else { Arc::clone(&second) };
            tasks.push(tokio::spawn(increment(Arc::clone(&store), keys.clone(), 11)));
            tasks.push(tokio::spawn(increment(store, keys.clone(), 12)));
        }
        for task in tasks {
            task.await.unwrap();
        }
        for account_id in [11, 12] {
            let session = MlsSession::open(second.as_ref(), &keys, account_id).await.unwrap();
            let counter = session.provider().storage().values.read().unwrap().get(b"counter".as_slice()).cloned();
            assert_eq!(counter, Some(vec![8]), "{backend}: no operation lost another's write");
        }
    }
}

clawx_common::backend_tests! {
    async fn rotating_the_master_key_reencrypts_state(test_db) {
        let backend = test_db.backend.name();
        let (database, store) = open_store(&test_db).await;
        let old_key = generate_master_key();
        let new_key = generate_master_key();
        let old = keyring(&old_key, None);
        store.create_installation(&installation(21, 21)).await.unwrap();
        let session = MlsSession::open(store.as_ref(), &old, 21).await.unwrap();
        session.provider().storage().values.write().unwrap().insert(b"secret".to_vec(), b"value".to_vec());
        session.commit().await.unwrap();

        let only_new = keyring(&new_key, None);
        let error = MlsSession::open(store.as_ref(), &only_new, 21).await.unwrap_err();
        assert!(matches!(error, AgentError::Keyring(_)), "{backend}: {error:?}");

        let rotated = keyring(&new_key, Some(&old_key));
        let session = MlsSession::open(store.as_ref(), &rotated, 21).await.unwrap();
        let (written, _) = session.commit().await.unwrap();
        assert_eq!(written, 1, "{backend}: unchanged values under a retired key are rewritten");
        let rows = raw_rows(&database, 21).await;
        assert!(rows.iter().all(|(_, blob)| Keyring::key_id_of(blob) == Some(only_new.active_id())), "{backend}");
        let session = MlsSession::open(store.as_ref(), &only_new, 21).await.unwrap();
        assert_eq!(session.provider().storage().values.read().unwrap().get(b"secret".as_slice()).cloned(), Some(b"value".to_vec()));
        let (written, removed) = session.commit().await.unwrap();
        assert_eq!((written, removed), (0, 0), "{backend}: an untouched state writes nothing");
    }
}
