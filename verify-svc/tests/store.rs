//! The verify store's conformance suite: each test runs on SQLite and (when configured)
//! PostgreSQL as its own test case.

use std::sync::Arc;

use clawx_common::{Database, testing::TestDatabase};
use clawx_verify::store::{CodeRecord, StoreError, VerificationRecord, VerifyStore, for_database};

async fn open_store(test_db: &TestDatabase) -> (&'static str, Arc<dyn VerifyStore>) {
    let database = Database::connect(&test_db.args, "verify").await.unwrap();
    database.migrate(&clawx_verify::MIGRATIONS).await.unwrap();
    (test_db.backend.name(), for_database(&database))
}

fn code(account_id: i64, code: &str, issued_at: i64) -> CodeRecord {
    CodeRecord { account_id, code: code.into(), issued_at, expires_at: issued_at + 900_000 }
}

fn verification(account_id: i64, user_id: Option<&str>, username: &str) -> VerificationRecord {
    VerificationRecord {
        account_id,
        twitter_user_id: user_id.map(str::to_string),
        twitter_username: username.into(),
        tweet_id: format!("{account_id}000"),
        verified_at: 5_000,
    }
}

clawx_common::backend_tests! {
    async fn a_new_code_replaces_the_old_one(test_db) {
        let (backend, store) = open_store(&test_db).await;
        assert_eq!(store.code(1).await.unwrap(), None, "{backend}");
        store.issue_code(&code(1, "CLAW-AAAAAA", 1_000)).await.unwrap();
        store.issue_code(&code(2, "CLAW-BBBBBB", 1_000)).await.unwrap();
        store.issue_code(&code(1, "CLAW-CCCCCC", 2_000)).await.unwrap();
        assert_eq!(store.code(1).await.unwrap(), Some(code(1, "CLAW-CCCCCC", 2_000)), "{backend}");
        assert_eq!(store.code(2).await.unwrap(), Some(code(2, "CLAW-BBBBBB", 1_000)), "{backend}");
    }

    async fn an_x_account_proves_one_clawx_account(test_db) {
        let (backend, store) = open_store(&test_db).await;
        store.issue_code(&code(1, "CLAW-AAAAAA", 1_000)).await.unwrap();
        store.record_verification(&verification(1, Some("111"), "Alice")).await.unwrap();
        assert_eq!(store.code(1).await.unwrap(), None, "{backend}: the code is used up");
        assert_eq!(store.verification(1).await.unwrap(), Some(verification(1, Some("111"), "Alice")), "{backend}");

        // The same user id, renamed, cannot prove another account.
        store.issue_code(&code(2, "CLAW-BBBBBB", 1_000)).await.unwrap();
        let reused = store.record_verification(&verification(2, Some("111"), "alice_renamed")).await.unwrap_err();
        assert!(matches!(reused, StoreError::TwitterAlreadyUsed), "{backend}: {reused:?}");
        assert_eq!(store.code(2).await.unwrap(), Some(code(2, "CLAW-BBBBBB", 1_000)), "{backend}: a refused binding keeps the code");
        // Another user who took the old username is a different X account.
        store.record_verification(&verification(2, Some("222"), "alice")).await.unwrap();

        // Bound by username only (oEmbed): that username is taken, whatever its case, either way.
        store.record_verification(&verification(3, None, "Carol")).await.unwrap();
        let by_name = store.record_verification(&verification(4, None, "CAROL")).await.unwrap_err();
        assert!(matches!(by_name, StoreError::TwitterAlreadyUsed), "{backend}: {by_name:?}");
        let by_id = store.record_verification(&verification(4, Some("333"), "carol")).await.unwrap_err();
        assert!(matches!(by_id, StoreError::TwitterAlreadyUsed), "{backend}: {by_id:?}");
        let by_name_of_id = store.record_verification(&verification(4, None, "alice")).await.unwrap_err();
        assert!(matches!(by_name_of_id, StoreError::TwitterAlreadyUsed), "{backend}: {by_name_of_id:?}");

        let twice = store.record_verification(&verification(1, Some("999"), "other")).await.unwrap_err();
        assert!(matches!(twice, StoreError::AlreadyVerified), "{backend}: {twice:?}");

        store.remove_verification(2).await.unwrap();
        assert_eq!(store.verification(2).await.unwrap(), None, "{backend}");
        store.record_verification(&verification(5, Some("222"), "alice")).await.unwrap();
    }

    async fn concurrent_completions_of_one_account_say_it_is_already_verified(test_db) {
        let mut args = test_db.args.clone();
        args.database_max_connections = 16;
        let database = Database::connect(&args, "verify").await.unwrap();
        database.migrate(&clawx_verify::MIGRATIONS).await.unwrap();
        let (backend, store) = (test_db.backend.name(), for_database(&database));
        // One account completes with 16 different X accounts at once: one wins, and every
        // other answer says the account is verified, not that the X account is taken.
        for round in 0..4 {
            let account_id = 100 + round;
            let completions = (0..16).map(|index| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let user_id = format!("{account_id}-{index}");
                    store.record_verification(&verification(account_id, Some(&user_id), &format!("user_{account_id}_{index}"))).await
                })
            });
            let outcomes: Vec<_> = futures::future::join_all(completions).await.into_iter().map(|joined| joined.unwrap()).collect();
            assert_eq!(outcomes.iter().filter(|outcome| outcome.is_ok()).count(), 1, "{backend}: {outcomes:?}");
            assert!(outcomes.iter().all(|outcome| matches!(outcome, Ok(()) | Err(StoreError::AlreadyVerified))), "{backend}: {outcomes:?}");
        }
    }

    async fn expiry_leases_go_to_one_owner_until_they_run_out(test_db) {
        let (backend, store) = open_store(&test_db).await;
        assert!(store.claim_expiry(7, "a", 1_000, 2_000).await.unwrap(), "{backend}");
        assert!(!store.claim_expiry(7, "b", 1_500, 2_500).await.unwrap(), "{backend}: held by a");
        assert!(store.claim_expiry(7, "a", 1_500, 2_500).await.unwrap(), "{backend}: the owner renews");
        assert_eq!(store.stale_expiry_claims(2_000, 10).await.unwrap(), Vec::<i64>::new(), "{backend}");
        assert_eq!(store.stale_expiry_claims(2_501, 10).await.unwrap(), vec![7], "{backend}");
        assert!(store.claim_expiry(7, "b", 2_501, 3_000).await.unwrap(), "{backend}: taken over once run out");
        store.release_expiry(7, "a").await.unwrap();
        assert!(!store.claim_expiry(7, "a", 2_600, 3_000).await.unwrap(), "{backend}: a cannot release b's lease");
        store.release_expiry(7, "b").await.unwrap();
        assert!(store.claim_expiry(7, "a", 2_600, 3_000).await.unwrap(), "{backend}");

        store.issue_code(&code(7, "CLAW-AAAAAA", 1_000)).await.unwrap();
        store.issue_code(&code(8, "CLAW-BBBBBB", 1_000)).await.unwrap();
        store.record_verification(&verification(8, Some("8"), "eight")).await.unwrap();
        store.claim_expiry(8, "a", 2_600, 3_000).await.unwrap();
        store.finish_expiry(7).await.unwrap();
        assert_eq!(store.code(7).await.unwrap(), None, "{backend}");
        assert_eq!(store.stale_expiry_claims(i64::MAX, 10).await.unwrap(), vec![8], "{backend}: only 7 is finished");
        assert!(store.verification(8).await.unwrap().is_some(), "{backend}: nothing else touched");
    }
}
