//! The identity store's conformance suite: each test runs on SQLite and (when configured)
//! PostgreSQL as its own test case.

use clawx_common::{Database, testing::TestDatabase};
use clawx_identity::store::{
    ChallengeRecord, IdentityStore, NewAccount, NewApiKey, NewRegistration, ProfileFields, ProfilePatch, StoreError, UserQuery, for_database,
};

/// The backend's name and a store on a freshly migrated database.
async fn open_store(test_db: &TestDatabase) -> (&'static str, std::sync::Arc<dyn IdentityStore>) {
    let database = Database::connect(&test_db.args, "identity").await.unwrap();
    database.migrate(&clawx_identity::MIGRATIONS).await.unwrap();
    (test_db.backend.name(), for_database(&database))
}

fn key(id: &str, hash: &str) -> NewApiKey {
    NewApiKey { id: id.into(), key_hash: hash.into(), prefix: "clx_abcd".into(), name: "default".into() }
}

fn account(address: &str, key_id: &str, hash: &str) -> NewAccount {
    NewAccount {
        wallet_address: address.into(),
        wallet_key: vec![1, 2, 3],
        xmtp_inbox_id: format!("inbox-{address}"),
        first_key: key(key_id, hash),
        created_at: 1_000,
        registration: None,
    }
}

fn profile(name: &str) -> ProfileFields {
    ProfileFields {
        name: name.into(),
        description: Some("d".into()),
        x_url: None,
        github_url: Some("https://github.com/a".into()),
        website_url: None,
    }
}

clawx_common::backend_tests! {
    async fn accounts_keys_and_handles(test_db) {
        let (backend, store) = open_store(&test_db).await;
        let alice = store.create_account(account("0xAAaa", "key_a", "hash-a")).await.unwrap();
        assert_eq!(alice.wallet_address, "0xAAaa", "{backend}");
        assert_eq!(alice.handle, None);
        assert!(!alice.verified);
        assert!(matches!(store.create_account(account("0xaaaa", "key_x", "hash-x")).await, Err(StoreError::Conflict(_))), "{backend}: wallet is unique");
        let bob = store.create_account(account("0xBBbb", "key_b", "hash-b")).await.unwrap();
        assert!(bob.id > alice.id);

        // The first key authenticates; the failed account creation left no key behind.
        let (found, found_key) = store.account_by_key_hash("hash-a").await.unwrap().unwrap();
        assert_eq!((found.id, found_key.id.as_str(), found_key.name.as_str()), (alice.id, "key_a", "default"), "{backend}");
        assert!(store.account_by_key_hash("hash-x").await.unwrap().is_none(), "{backend}: transaction rolled back");

        // Handles: unique, once per account.
        let registered = store.register(alice.id, "alice", &profile("Alice Liddell"), 2_000).await.unwrap();
        assert_eq!(registered.handle.as_deref(), Some("alice"));
        assert_eq!(registered.registered_at, Some(2_000));
        assert!(matches!(store.register(alice.id, "alice2", &profile("x"), 3_000).await, Err(StoreError::AlreadyRegistered)), "{backend}");
        assert!(matches!(store.register(bob.id, "alice", &profile("x"), 3_000).await, Err(StoreError::Conflict("handle"))), "{backend}");
        assert!(matches!(store.register(9_999, "ghost", &profile("x"), 3_000).await, Err(StoreError::NotFound)));
        store.register(bob.id, "bob_the_builder", &profile("Bob"), 3_000).await.unwrap();

        // Patches leave, set and clear fields.
        let patch = ProfilePatch { description: Some(None), x_url: Some(Some("https://x.com/alice".into())), ..ProfilePatch::default() };
        let updated = store.update_profile(alice.id, &patch, 4_000).await.unwrap();
        assert_eq!(updated.name.as_deref(), Some("Alice Liddell"), "{backend}");
        assert_eq!(updated.description, None);
        assert_eq!(updated.x_url.as_deref(), Some("https://x.com/alice"));
        assert_eq!(updated.github_url.as_deref(), Some("https://github.com/a"));
        assert_eq!(updated.updated_at, 4_000);

        // Directory: registered only, oldest first, substring search on handle or name.
        let carol = store.create_account(account("0xCCcc", "key_c", "hash-c")).await.unwrap();
        let all = store.list_users(&UserQuery { search: None, limit: 50, offset: 0 }).await.unwrap();
        assert_eq!(all.iter().map(|a| a.id).collect::<Vec<_>>(), vec![alice.id, bob.id], "{backend}: carol has no handle");
        let found = store.list_users(&UserQuery { search: Some("liddell".into()), limit: 50, offset: 0 }).await.unwrap();
        assert_eq!(found.len(), 1, "{backend}: name match");
        let found = store.list_users(&UserQuery { search: Some("_the_".into()), limit: 50, offset: 0 }).await.unwrap();
        assert_eq!(found.iter().map(|a| a.handle.clone().unwrap()).collect::<Vec<_>>(), vec!["bob_the_builder"], "{backend}: _ is literal");
        let found = store.list_users(&UserQuery { search: Some("%".into()), limit: 50, offset: 0 }).await.unwrap();
        assert!(found.is_empty(), "{backend}: % is literal");
        let page = store.list_users(&UserQuery { search: None, limit: 1, offset: 1 }).await.unwrap();
        assert_eq!(page.iter().map(|a| a.id).collect::<Vec<_>>(), vec![bob.id], "{backend}");

        // Lookups by id, handle and wallet.
        let by_id = store.accounts_by_id(&[bob.id, alice.id, 12345]).await.unwrap();
        assert_eq!(by_id.iter().map(|a| a.id).collect::<Vec<_>>(), vec![alice.id, bob.id]);
        assert_eq!(store.accounts_by_handle(&["bob_the_builder".into()]).await.unwrap()[0].id, bob.id);
        assert_eq!(store.accounts_by_wallet(&["0xcccc".into()]).await.unwrap()[0].id, carol.id);
        assert!(store.accounts_by_id(&[]).await.unwrap().is_empty());

        // Keys: create, list, touch, revoke (never the last one).
        let second = store.create_api_key(alice.id, &key("key_a2", "hash-a2"), 5_000, 20).await.unwrap();
        assert_eq!(second.created_at, 5_000);
        store.touch_api_key("key_a2", 6_000).await.unwrap();
        let keys = store.list_api_keys(alice.id).await.unwrap();
        assert_eq!(keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), vec!["key_a", "key_a2"], "{backend}");
        assert_eq!(keys[1].last_used_at, Some(6_000));
        assert_eq!(store.count_api_keys(alice.id).await.unwrap(), 2);
        assert!(matches!(store.revoke_api_key(bob.id, "key_a2").await, Err(StoreError::NotFound)), "{backend}: not bob's key");
        assert_eq!(store.revoke_api_key(alice.id, "key_a").await.unwrap(), "hash-a");
        assert!(store.account_by_key_hash("hash-a").await.unwrap().is_none(), "{backend}: revoked");
        assert!(matches!(store.revoke_api_key(alice.id, "key_a2").await, Err(StoreError::LastKey)), "{backend}");
        assert!(matches!(store.create_api_key(bob.id, &key("key_b2", "hash-a2"), 1, 20).await, Err(StoreError::Conflict(_))));
        assert!(matches!(store.create_api_key(bob.id, &key("key_b3", "hash-b3"), 1, 1).await, Err(StoreError::LimitExceeded)), "{backend}: cap");
        assert!(matches!(store.create_api_key(9_999, &key("key_z", "hash-z"), 1, 20).await, Err(StoreError::NotFound)), "{backend}");
    }
}

clawx_common::backend_tests! {
    async fn wallets_challenges_and_domains(test_db) {
        let (backend, store) = open_store(&test_db).await;
        let alice = store.create_account(account("0xA1", "key_a", "hash-a")).await.unwrap();
        let bob = store.create_account(account("0xB1", "key_b", "hash-b")).await.unwrap();
        store.register(alice.id, "alice", &profile("Alice"), 2).await.unwrap();

        // Challenges are single use, and old ones are trimmed.
        let challenge = |nonce: &str, expires_at| ChallengeRecord {
            nonce: nonce.into(),
            account_id: alice.id,
            address_lower: "0xfeed".into(),
            message: format!("message {nonce}"),
            expires_at,
        };
        store.create_challenge(&challenge("n1", 100), 10, 2).await.unwrap();
        store.create_challenge(&challenge("n2", 200), 10, 2).await.unwrap();
        store.create_challenge(&challenge("n3", 300), 10, 2).await.unwrap();
        assert!(store.take_challenge("n1").await.unwrap().is_none(), "{backend}: trimmed to 2");
        assert_eq!(store.take_challenge("n3").await.unwrap().unwrap().message, "message n3");
        assert!(store.take_challenge("n3").await.unwrap().is_none(), "{backend}: single use");
        store.create_challenge(&challenge("n4", 400), 250, 5).await.unwrap();
        assert!(store.take_challenge("n2").await.unwrap().is_none(), "{backend}: expired ones dropped");

        // Wallets: one owner each, idempotent for the owner.
        let linked = store.link_wallet(alice.id, "0xFeEd", 50, 20).await.unwrap();
        assert_eq!((linked.address.as_str(), linked.account_id), ("0xFeEd", alice.id));
        assert_eq!(store.link_wallet(alice.id, "0xfeed", 60, 20).await.unwrap().linked_at, 50, "{backend}: idempotent");
        assert_eq!(store.link_wallet(alice.id, "0xfeed", 60, 1).await.unwrap().linked_at, 50, "{backend}: relinking at the cap");
        assert!(matches!(store.link_wallet(alice.id, "0xbeef", 60, 1).await, Err(StoreError::LimitExceeded)), "{backend}: cap");
        assert!(matches!(store.link_wallet(9_999, "0xbeef", 60, 20).await, Err(StoreError::NotFound)), "{backend}");
        assert!(matches!(store.link_wallet(bob.id, "0xFEED", 70, 20).await, Err(StoreError::Conflict("wallet"))), "{backend}");
        assert_eq!(store.wallet_owner("0xfeed").await.unwrap(), Some(alice.id));
        assert_eq!(store.list_wallets(alice.id).await.unwrap().len(), 1);
        assert!(matches!(store.unlink_wallet(bob.id, "0xfeed").await, Err(StoreError::NotFound)));
        store.unlink_wallet(alice.id, "0xfeed").await.unwrap();
        assert_eq!(store.wallet_owner("0xfeed").await.unwrap(), None, "{backend}");

        // Domains: handles and claimed names both resolve.
        assert_eq!(store.account_for_domain("alice").await.unwrap(), Some(alice.id));
        assert_eq!(store.account_for_domain("nobody").await.unwrap(), None);
        store.claim_domain(bob.id, "bob.crypto", 5, 20).await.unwrap();
        assert_eq!(store.claim_domain(bob.id, "bob.crypto", 6, 20).await.unwrap().claimed_at, 5);
        assert_eq!(store.claim_domain(bob.id, "bob.crypto", 6, 1).await.unwrap().claimed_at, 5, "{backend}: reclaiming at the cap");
        assert!(matches!(store.claim_domain(bob.id, "bob2.crypto", 6, 1).await, Err(StoreError::LimitExceeded)), "{backend}: cap");
        assert!(matches!(store.claim_domain(alice.id, "bob.crypto", 7, 20).await, Err(StoreError::Conflict("domain"))), "{backend}");
        assert_eq!(store.account_for_domain("bob.crypto").await.unwrap(), Some(bob.id));
        assert_eq!(store.list_domains(bob.id).await.unwrap().len(), 1);
        assert!(matches!(store.release_domain(alice.id, "bob.crypto").await, Err(StoreError::NotFound)));
        store.release_domain(bob.id, "bob.crypto").await.unwrap();
        assert_eq!(store.account_for_domain("bob.crypto").await.unwrap(), None, "{backend}");
    }
}

clawx_common::backend_tests! {
    async fn concurrent_revocations_keep_one_key(test_db) {
        let (backend, store) = open_store(&test_db).await;
        let alice = store.create_account(account("0xA1", "key_1", "hash-1")).await.unwrap();
        for index in 2..=4 {
            store.create_api_key(alice.id, &key(&format!("key_{index}"), &format!("hash-{index}")), 1, 20).await.unwrap();
        }
        let revocations = (1..=4).map(|index| {
            let store = store.clone();
            tokio::spawn(async move { store.revoke_api_key(alice.id, &format!("key_{index}")).await })
        });
        let results = futures_results(revocations).await;
        let revoked = results.iter().filter(|result| result.is_ok()).count();
        assert_eq!(revoked, 3, "{backend}: {results:?}");
        assert_eq!(store.count_api_keys(alice.id).await.unwrap(), 1, "{backend}");
    }
}

clawx_common::backend_tests! {
    async fn agents_are_created_registered_or_not_at_all(test_db) {
        let (backend, store) = open_store(&test_db).await;
        let registration = |handle: &str| Some(NewRegistration { handle: handle.into(), profile: ProfileFields { name: "Agent".into(), ..ProfileFields::default() } });
        let agent = store.create_account(NewAccount { registration: registration("agent-1"), ..account("0xB1", "key_b1", "hash-b1") }).await.unwrap();
        assert_eq!((agent.handle.as_deref(), agent.name.as_deref(), agent.registered_at), (Some("agent-1"), Some("Agent"), Some(1_000)), "{backend}");
        let taken = store.create_account(NewAccount { registration: registration("agent-1"), ..account("0xB2", "key_b2", "hash-b2") }).await;
        assert!(matches!(taken, Err(StoreError::Conflict("handle"))), "{backend}: {taken:?}");
        assert!(store.account_by_key_hash("hash-b2").await.unwrap().is_none(), "{backend}: nothing kept of the refused agent");
        assert!(store.accounts_by_wallet(&["0xb2".into()]).await.unwrap().is_empty(), "{backend}");
    }

    async fn verification_and_the_deletion_of_unverified_accounts(test_db) {
        let (backend, store) = open_store(&test_db).await;
        let old = store.create_account(NewAccount { created_at: 1_000, ..account("0xC1", "key_c1", "hash-c1") }).await.unwrap();
        store.create_api_key(old.id, &key("key_c1b", "hash-c1b"), 1_000, 20).await.unwrap();
        store.claim_domain(old.id, "old.example", 1_000, 20).await.unwrap();
        let verified = store.create_account(NewAccount { created_at: 1_000, ..account("0xC2", "key_c2", "hash-c2") }).await.unwrap();
        let young = store.create_account(NewAccount { created_at: 9_000, ..account("0xC3", "key_c3", "hash-c3") }).await.unwrap();

        let marked = store.set_verification(verified.id, true, Some("verified_op"), 2_000).await.unwrap();
        assert_eq!((marked.verified, marked.twitter_username.as_deref()), (true, Some("verified_op")), "{backend}");
        assert!(matches!(store.set_verification(-1, true, None, 2_000).await, Err(StoreError::NotFound)), "{backend}");
        assert_eq!(store.api_key_hashes(old.id).await.unwrap(), vec!["hash-c1".to_string(), "hash-c1b".to_string()], "{backend}");

        let ids = |accounts: Vec<clawx_identity::store::AccountRecord>| accounts.into_iter().map(|account| account.id).collect::<Vec<_>>();
        assert_eq!(ids(store.unverified_accounts(5_000, 0, 10).await.unwrap()), vec![old.id], "{backend}");
        assert_eq!(ids(store.unverified_accounts(10_000, 0, 10).await.unwrap()), vec![old.id, young.id], "{backend}");
        assert_eq!(ids(store.unverified_accounts(10_000, old.id, 10).await.unwrap()), vec![young.id], "{backend}");
        assert_eq!(ids(store.unverified_accounts(10_000, 0, 1).await.unwrap()), vec![old.id], "{backend}");

        assert_eq!(store.delete_unverified_account(young.id, 5_000).await.unwrap(), None, "{backend}: too young");
        assert_eq!(store.delete_unverified_account(verified.id, 5_000).await.unwrap(), None, "{backend}: verified");
        let hashes = store.delete_unverified_account(old.id, 5_000).await.unwrap();
        assert_eq!(hashes, Some(vec!["hash-c1".to_string(), "hash-c1b".to_string()]), "{backend}");
        assert_eq!(store.delete_unverified_account(old.id, 5_000).await.unwrap(), None, "{backend}: once");
        assert!(store.account(old.id).await.unwrap().is_none(), "{backend}");
        assert!(store.account_by_key_hash("hash-c1b").await.unwrap().is_none(), "{backend}: its keys went with it");
        assert_eq!(store.account_for_domain("old.example").await.unwrap(), None, "{backend}: and its domains");
        assert!(store.account(verified.id).await.unwrap().is_some() && store.account(young.id).await.unwrap().is_some(), "{backend}");
    }
}

async fn futures_results<T: Send + 'static>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

#[test]
fn every_migration_file_is_embedded() {
    clawx_common::testing::assert_migrations_embedded(env!("CARGO_MANIFEST_DIR"), &clawx_identity::MIGRATIONS);
}
