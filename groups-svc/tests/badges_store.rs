//! The badge store's conformance suite: each test runs on SQLite and (when configured)
//! PostgreSQL as its own test case.

use std::{collections::HashSet, sync::Arc};

use clawx_common::{Database, testing::TestDatabase};
use clawx_groups::badges::store::{BadgeRecord, BadgeStore, NewNotification, StoreError, for_database};

async fn open_store(test_db: &TestDatabase) -> (&'static str, Arc<dyn BadgeStore>) {
    let mut args = test_db.args.clone();
    args.database_max_connections = 8;
    let database = Database::connect(&args, "groups").await.unwrap();
    database.migrate(&clawx_groups::MIGRATIONS).await.unwrap();
    (test_db.backend.name(), for_database(&database))
}

fn badge(code: &str, partner: i64) -> BadgeRecord {
    BadgeRecord {
        code: code.into(),
        name: format!("{code} holders"),
        chain_id: 31337,
        contract: "0x5fbdb2315678afecb367f032d93f642f64180aa3".into(),
        standard: "erc1155".into(),
        token_id: Some("115792089237316195423570985008687907853269984665640564039457584007913129639935".into()),
        min_balance: "1000000000000000000000000".into(),
        partner_account_id: partner,
        created_at: 1_000,
        group_id: None,
        member_count: 0,
    }
}

fn notification(id: &str, code: &str, partner: i64, at: i64) -> NewNotification {
    NewNotification {
        id: id.into(),
        badge_code: code.into(),
        partner_account_id: partner,
        subject: "Hello".into(),
        content: "Hello\n\nBody".into(),
        created_at: at,
    }
}

clawx_common::backend_tests! {
    async fn badges_groups_and_members(test_db) {
        let (backend, store) = open_store(&test_db).await;
        store.create_badge(&badge("vip", 7)).await.unwrap();
        assert!(matches!(store.create_badge(&badge("vip", 8)).await, Err(StoreError::BadgeExists)), "{backend}");
        assert_eq!(store.badge("vip").await.unwrap(), Some(badge("vip", 7)), "{backend}: big decimals survive");
        assert_eq!(store.badge("VIP").await.unwrap(), None, "{backend}: codes are exact");

        assert!(matches!(store.ensure_group("nope", "g0", 2_000).await, Err(StoreError::NoBadge)), "{backend}");
        assert_eq!(store.ensure_group("vip", "g1", 2_000).await.unwrap(), ("g1".to_string(), true), "{backend}");
        assert_eq!(store.ensure_group("vip", "g2", 3_000).await.unwrap(), ("g1".to_string(), false), "{backend}: the same group");

        assert!(store.add_member("g1", "0xaa", 4_000).await.unwrap(), "{backend}");
        assert!(!store.add_member("g1", "0xaa", 5_000).await.unwrap(), "{backend}: already a member");
        assert!(store.add_member("g1", "0xbb", 4_000).await.unwrap(), "{backend}");
        assert!(store.is_member("g1", "0xaa").await.unwrap(), "{backend}");
        let read = store.badge("vip").await.unwrap().unwrap();
        assert_eq!((read.group_id.as_deref(), read.member_count), (Some("g1"), 2), "{backend}");
        assert!(store.remove_member("g1", "0xaa").await.unwrap(), "{backend}");
        assert!(!store.remove_member("g1", "0xaa").await.unwrap(), "{backend}: leaving twice changes nothing");
        assert!(!store.is_member("g1", "0xaa").await.unwrap(), "{backend}");
    }

    async fn the_recheck_takes_each_due_member_once_and_spares_rejoined_ones(test_db) {
        let (backend, store) = open_store(&test_db).await;
        store.create_badge(&badge("gated", 1)).await.unwrap();
        store.ensure_group("gated", "g", 0).await.unwrap();
        for index in 0..10 {
            store.add_member("g", &format!("0x{index:02}"), 1_000 + index).await.unwrap();
        }
        // Two replicas claim at once: between them every due member once, nobody twice.
        let (first, second) = tokio::join!(store.claim_recheck(5_000, 1_005, 4), store.claim_recheck(5_000, 1_005, 4));
        let mut taken: Vec<String> = first.unwrap().into_iter().chain(second.unwrap()).map(|member| member.address).collect();
        taken.sort();
        assert_eq!(taken, (0..6).map(|index| format!("0x{index:02}")).collect::<Vec<_>>(), "{backend}: due ones, each once");
        assert!(store.claim_recheck(5_000, 1_005, 100).await.unwrap().is_empty(), "{backend}: marked checked");
        let later = store.claim_recheck(6_000, 5_000, 100).await.unwrap();
        assert_eq!(later.len(), 10, "{backend}: due again an interval later");
        assert!(later.iter().all(|member| member.badge_code == "gated" && member.group_id == "g"), "{backend}");

        // Removal only of the membership that was checked.
        let checked = later.iter().find(|member| member.address == "0x03").unwrap().clone();
        store.remove_member("g", "0x03").await.unwrap();
        store.add_member("g", "0x03", 7_000).await.unwrap();
        assert!(!store.remove_stale_member("g", "0x03", checked.joined_at).await.unwrap(), "{backend}: rejoined since");
        assert!(store.is_member("g", "0x03").await.unwrap(), "{backend}");
        let other = later.iter().find(|member| member.address == "0x04").unwrap();
        assert!(store.remove_stale_member("g", "0x04", other.joined_at).await.unwrap(), "{backend}");
        assert!(!store.is_member("g", "0x04").await.unwrap(), "{backend}");

        // A member whose chain could not be read is due again at once.
        store.recheck_again("g", "0x05").await.unwrap();
        let again = store.claim_recheck(6_001, 10, 100).await.unwrap();
        assert_eq!(again.iter().map(|member| member.address.as_str()).collect::<Vec<_>>(), vec!["0x05"], "{backend}");
    }

    async fn notifications_fan_out_to_members_and_settle_per_attempt(test_db) {
        let (backend, store) = open_store(&test_db).await;
        store.create_badge(&badge("news", 9)).await.unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(store.create_notification(&notification(id, "news", 9, 1_000)).await.unwrap(), 0, "{backend}: no group, nobody");
        store.ensure_group("news", "g", 0).await.unwrap();
        for address in ["0x01", "0x02", "0x03"] {
            store.add_member("g", address, 500).await.unwrap();
        }
        let id = "fedcba9876543210fedcba9876543210";
        assert_eq!(store.create_notification(&notification(id, "news", 9, 1_000)).await.unwrap(), 3, "{backend}");
        // Joining later does not receive an earlier notification.
        store.add_member("g", "0x04", 1_500).await.unwrap();
        let status = store.notification(id).await.unwrap().unwrap();
        assert_eq!((status.recipients, status.pending, status.delivered, status.failed), (3, 3, 0, 0), "{backend}");
        assert_eq!((status.partner_account_id, status.subject.as_str()), (9, "Hello"), "{backend}");

        assert!(store.claim_deliveries(999, 5_000, 10).await.unwrap().is_empty(), "{backend}: not due yet");
        let (first, second) = tokio::join!(store.claim_deliveries(2_000, 5_000, 2), store.claim_deliveries(2_000, 5_000, 2));
        let claimed: Vec<_> = first.unwrap().into_iter().chain(second.unwrap()).collect();
        let addresses: HashSet<&str> = claimed.iter().map(|delivery| delivery.address.as_str()).collect();
        assert_eq!((claimed.len(), addresses.len()), (3, 3), "{backend}: each delivery to one worker");
        assert!(claimed.iter().all(|delivery| delivery.attempts == 1 && delivery.content == "Hello\n\nBody" && delivery.partner_account_id == 9));
        assert!(store.claim_deliveries(4_999, 9_000, 10).await.unwrap().is_empty(), "{backend}: hidden while leased");

        let by_address = |address: &str| claimed.iter().find(|delivery| delivery.address == address).unwrap().clone();
        assert!(store.delivered(by_address("0x01").id, 1).await.unwrap(), "{backend}");
        assert!(store.retry_delivery(by_address("0x02").id, 1, 6_000, "UNAVAILABLE").await.unwrap(), "{backend}");
        assert!(store.fail_delivery(by_address("0x03").id, 1, "VALIDATION_FAILED").await.unwrap(), "{backend}");
        let status = store.notification(id).await.unwrap().unwrap();
        assert_eq!((status.delivered, status.pending, status.failed), (1, 1, 1), "{backend}");

        // A worker whose lease ran out cannot settle what another took over.
        let retaken = store.claim_deliveries(6_000, 9_000, 10).await.unwrap();
        assert_eq!(retaken.len(), 1, "{backend}");
        assert_eq!((retaken[0].address.as_str(), retaken[0].attempts), ("0x02", 2), "{backend}");
        assert!(!store.delivered(retaken[0].id, 1).await.unwrap(), "{backend}: a stale attempt");
        assert!(store.delivered(retaken[0].id, 2).await.unwrap(), "{backend}");
        assert!(!store.delivered(retaken[0].id, 2).await.unwrap(), "{backend}: once");
        let status = store.notification(id).await.unwrap().unwrap();
        assert_eq!((status.delivered, status.pending, status.failed), (2, 0, 1), "{backend}");
        assert_eq!(store.notification("ffffffffffffffffffffffffffffffff").await.unwrap(), None, "{backend}");
    }
}
