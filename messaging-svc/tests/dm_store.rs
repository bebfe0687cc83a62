//! The direct-message store's conformance suite on SQLite and (when configured) PostgreSQL:
//! one transaction per batch, mailboxes chained per account, inbox and conversations read from
//! one side, idempotency keys within and across batches, nothing half-written on failure, the
//! XMTP outbox (claims, leases, retries, final states) and messages received over XMTP (each
//! stored once, echoes of sends recognised).

use clawx_common::Database;
use clawx_messaging::dm::store::{
    Consent, IDEMPOTENCY_TTL_MS, InboundMessage, NewMessage, OutboxResult, Party, ReceiveOutcome, SendOutcome, StoredMessage, for_database,
};

fn new(from: i64, to: Party, content: &str, key: Option<&str>) -> NewMessage {
    NewMessage {
        sender_account_id: from,
        recipient: to,
        content: content.into(),
        idempotency: key.map(|key| (key.to_string(), format!("hash of {content}").into_bytes())),
    }
}

fn stored(outcome: &SendOutcome) -> &StoredMessage {
    match outcome {
        SendOutcome::Stored { message, .. } => message,
        other => panic!("expected a stored message, got {other:?}"),
    }
}

fn contents(messages: &[StoredMessage]) -> Vec<&str> {
    messages.iter().map(|message| message.content.as_str()).collect()
}

const WALLET: &str = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed";

clawx_common::backend_tests! {
    async fn batches_store_conversations_mailboxes_and_idempotency_keys(test_db) {
        let backend = test_db.backend.name();
        let database = Database::connect(&test_db.args, "messaging").await.unwrap();
        database.migrate(&clawx_messaging::MIGRATIONS).await.unwrap();
        let store = for_database(&database);
        let wallet = Party::Wallet(WALLET.into());

        // One batch: alice (1) and bob (2) talk, alice writes to a wallet; the same key twice
        // with the same content stores once, with other content is refused.
        let outcomes = store
            .send_batch(
                &[
                    new(1, Party::Account(2), "hi bob", Some("k1")),
                    new(2, Party::Account(1), "hi alice", None),
                    new(1, wallet.clone(), "hi wallet", None),
                    new(1, Party::Account(2), "hi bob", Some("k1")),
                    new(1, Party::Account(2), "other", Some("k1")),
                ],
                1_000,
            )
            .await
            .unwrap();
        let (first, reply, to_wallet) = (stored(&outcomes[0]).clone(), stored(&outcomes[1]).clone(), stored(&outcomes[2]).clone());
        assert_eq!(outcomes[3], SendOutcome::Repeated(first.clone()), "{backend}: same key, same content, one batch");
        assert_eq!(outcomes[4], SendOutcome::KeyReused, "{backend}: same key, other content");
        assert!(first.id < reply.id && reply.id < to_wallet.id, "{backend}: ids in order");
        assert_eq!(first.conversation_id, reply.conversation_id, "{backend}: one conversation per pair");
        assert_ne!(first.conversation_id, to_wallet.conversation_id);
        assert_eq!((to_wallet.recipient_account_id, to_wallet.recipient_address.as_deref()), (None, Some(WALLET)));
        assert_eq!((first.delivery.as_str(), first.sent_at), ("stored", 1_000));
        // Mailboxes chain per account: what a live subscriber needs to see a gap.
        match &outcomes[1] {
            SendOutcome::Stored { previous, .. } => assert_eq!(previous, &vec![(2, first.id), (1, first.id)], "{backend}"),
            other => panic!("{other:?}"),
        }
        match &outcomes[2] {
            SendOutcome::Stored { previous, .. } => assert_eq!(previous, &vec![(1, reply.id)], "{backend}"),
            other => panic!("{other:?}"),
        }

        // A key committed by an earlier batch.
        let again = store.send_batch(&[new(1, Party::Account(2), "hi bob", Some("k1")), new(1, Party::Account(2), "x", Some("k1"))], 2_000).await.unwrap();
        assert_eq!(again, vec![SendOutcome::Repeated(first.clone()), SendOutcome::KeyReused], "{backend}: across batches");
        // Keys are per account: bob may use k1.
        let bobs = store.send_batch(&[new(2, Party::Account(1), "bob's k1", Some("k1"))], 3_000).await.unwrap();
        let bobs = stored(&bobs[0]).clone();

        // Inbox: the newest message per conversation, newest first; consent filters.
        let inbox = store.inbox(1, None, 50, 0).await.unwrap();
        assert_eq!(contents(&inbox), vec!["bob's k1", "hi wallet"], "{backend}");
        assert_eq!(contents(&store.inbox(1, None, 1, 1).await.unwrap()), vec!["hi wallet"], "{backend}: offset");
        assert_eq!(contents(&store.inbox(1, Some(Consent::Unknown), 50, 0).await.unwrap()).len(), 2, "{backend}: unknown by default");
        assert!(store.inbox(1, Some(Consent::Allowed), 50, 0).await.unwrap().is_empty(), "{backend}");
        assert_eq!(contents(&store.inbox(2, None, 50, 0).await.unwrap()), vec!["bob's k1"], "{backend}");

        // Conversations from each side, newest first, paged by id; others see nothing.
        let history = store.conversation(1, &Party::Account(2), i64::MAX, 0, 50, 0).await.unwrap();
        assert_eq!(contents(&history), vec!["bob's k1", "hi alice", "hi bob"], "{backend}");
        assert_eq!(history, store.conversation(2, &Party::Account(1), i64::MAX, 0, 50, 0).await.unwrap(), "{backend}: both sides");
        assert_eq!(contents(&store.conversation(1, &Party::Account(2), bobs.id, 0, 50, 0).await.unwrap()), vec!["hi alice", "hi bob"]);
        assert_eq!(contents(&store.conversation(1, &Party::Account(2), i64::MAX, first.id, 50, 0).await.unwrap()), vec!["bob's k1", "hi alice"]);
        assert_eq!(contents(&store.conversation(1, &Party::Account(2), i64::MAX, 0, 1, 1).await.unwrap()), vec!["hi alice"], "{backend}");
        assert_eq!(contents(&store.conversation(1, &wallet, i64::MAX, 0, 50, 0).await.unwrap()), vec!["hi wallet"]);
        assert!(store.conversation(3, &Party::Account(2), i64::MAX, 0, 50, 0).await.unwrap().is_empty(), "{backend}: not a participant");
        assert!(store.conversation(2, &wallet, i64::MAX, 0, 50, 0).await.unwrap().is_empty(), "{backend}: alice's wallet chat is hers");

        // Mailboxes: every message of an account, oldest first; heads per account.
        assert_eq!(contents(&store.mailbox_after(1, 0, 10).await.unwrap()), vec!["hi bob", "hi alice", "hi wallet", "bob's k1"]);
        assert_eq!(contents(&store.mailbox_after(2, reply.id, 10).await.unwrap()), vec!["bob's k1"], "{backend}");
        assert_eq!(store.mailbox_heads(&[1, 2, 3]).await.unwrap(), vec![bobs.id, bobs.id, 0], "{backend}");

        // Expired keys are ignored (the key names a new message), then deleted.
        let later = 2_000 + IDEMPOTENCY_TTL_MS + 1;
        let renewed = store.send_batch(&[new(1, Party::Account(2), "hi bob", Some("k1"))], later).await.unwrap();
        assert_ne!(stored(&renewed[0]).id, first.id, "{backend}: an expired key is free again");
        assert_eq!(store.delete_idempotency_keys_before(later).await.unwrap(), 1, "{backend}: bob's old key");

        // A batch bigger than one multi-row statement: every message, each chained to the one
        // before it in bob's mailbox.
        let head = store.mailbox_heads(&[2]).await.unwrap()[0];
        let big: Vec<NewMessage> = (0..600).map(|index| new(1 + index % 3, Party::Account(if index % 3 == 1 { 5 } else { 2 }), &format!("bulk {index}"), None)).collect();
        let outcomes = store.send_batch(&big, later).await.unwrap();
        let mut expected_previous = head;
        for outcome in &outcomes {
            let SendOutcome::Stored { message, previous } = outcome else { panic!("{backend}: {outcome:?}") };
            if let Some((_, before)) = previous.iter().find(|(account_id, _)| *account_id == 2) {
                assert_eq!(*before, expected_previous, "{backend}: chained in bob's mailbox");
                expected_previous = message.id;
            }
        }
        let bobs_bulk = store.mailbox_after(2, head, 1_000).await.unwrap();
        assert_eq!(bobs_bulk.len(), 600, "{backend}: 400 received and 200 sent by bob");
        assert_eq!(store.mailbox_heads(&[2]).await.unwrap()[0], expected_previous, "{backend}");

        // A failing batch stores nothing of it.
        let heads = store.mailbox_heads(&[1, 2]).await.unwrap();
        let bobs_inbox = store.inbox(2, None, 50, 0).await.unwrap();
        let pool_query = "DROP TABLE dm_outbox";
        match &database {
            Database::Postgres(pool) => { sqlx::query(pool_query).execute(pool).await.unwrap(); }
            Database::Sqlite(pool) => { sqlx::query(pool_query).execute(pool).await.unwrap(); }
        }
        let failed = store.send_batch(&[new(1, Party::Account(2), "lost", Some("k9")), new(2, Party::Account(4), "lost too", None)], later + 1).await;
        assert!(failed.is_err(), "{backend}");
        assert_eq!(store.mailbox_heads(&[1, 2, 4]).await.unwrap(), vec![heads[0], heads[1], 0], "{backend}: no mailbox moved");
        assert_eq!(store.inbox(2, None, 50, 0).await.unwrap(), bobs_inbox, "{backend}: no conversation moved");
        assert!(store.inbox(4, None, 50, 0).await.unwrap().is_empty(), "{backend}: no conversation created");
        database.close().await;
    }

    async fn concurrent_batches_fill_each_mailbox_in_id_order(test_db) {
        // Four writers (separate connections on PostgreSQL) send batches into the same three
        // mailboxes, some to accounts with no mailbox yet: every message must follow the one
        // before it in each of its mailboxes, with a smaller id, or a live stream that resumes
        // after an id would miss messages.
        let backend = test_db.backend.name();
        let database = Database::connect(&test_db.args, "messaging").await.unwrap();
        database.migrate(&clawx_messaging::MIGRATIONS).await.unwrap();
        let store = for_database(&database);
        let writers: Vec<_> = (0..4i64)
            .map(|writer| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for round in 0..20i64 {
                        let newcomer = 1_000 + writer * 100 + round;
                        let batch: Vec<NewMessage> = (0..8i64)
                            .map(|index| {
                                let to = if index == 7 { newcomer } else { 10 + (index + writer + 1) % 3 };
                                new(10 + (index + writer) % 3, Party::Account(to), &format!("{writer}-{round}-{index}"), None)
                            })
                            .collect();
                        outcomes.extend(store.send_batch(&batch, 1_000 + round).await.unwrap());
                    }
                    outcomes
                })
            })
            .collect();
        let mut before: std::collections::HashMap<(i64, i64), i64> = std::collections::HashMap::new();
        for writer in writers {
            for outcome in writer.await.unwrap() {
                let SendOutcome::Stored { message, previous } = outcome else { panic!("{backend}: {outcome:?}") };
                for (account_id, previous_id) in previous {
                    assert!(previous_id < message.id, "{backend}: {} follows {previous_id} in {account_id}'s mailbox", message.id);
                    before.insert((account_id, message.id), previous_id);
                }
            }
        }
        for account_id in [10, 11, 12] {
            let mailbox = store.mailbox_after(account_id, 0, 10_000).await.unwrap();
            assert!(mailbox.len() > 100, "{backend}: {}", mailbox.len());
            let mut expected = 0;
            for message in &mailbox {
                assert_eq!(before[&(account_id, message.id)], expected, "{backend}: mailbox {account_id} chained in id order");
                expected = message.id;
            }
            assert_eq!(store.mailbox_heads(&[account_id]).await.unwrap(), vec![expected], "{backend}");
        }
        database.close().await;
    }

    async fn consent_and_spam_reports(test_db) {
        let backend = test_db.backend.name();
        let database = Database::connect(&test_db.args, "messaging").await.unwrap();
        database.migrate(&clawx_messaging::MIGRATIONS).await.unwrap();
        let store = for_database(&database);
        let wallet = Party::Wallet(WALLET.into());

        // Account 10 opens conversations with 11 and a wallet; 12 opens one with 10.
        let outcomes = store
            .send_batch(&[new(10, Party::Account(11), "hi", None), new(10, wallet.clone(), "hi wallet", None), new(12, Party::Account(10), "hello", None)], 5_000)
            .await
            .unwrap();
        let (to_11, from_12) = (stored(&outcomes[0]).clone(), stored(&outcomes[2]).clone());
        store.send_batch(&[new(11, Party::Account(10), "reply", None)], 6_000).await.unwrap();

        // Per conversation: 11 allows its conversation with 10; not a member of 12's.
        assert_eq!(store.set_conversation_consent(11, to_11.conversation_id, Consent::Allowed).await.unwrap(), Some(Party::Account(10)), "{backend}");
        assert_eq!(store.set_conversation_consent(11, from_12.conversation_id, Consent::Allowed).await.unwrap(), None, "{backend}: not a member");
        assert_eq!(contents(&store.inbox(11, Some(Consent::Allowed), 50, 0).await.unwrap()), vec!["reply"], "{backend}");
        assert!(store.inbox(10, Some(Consent::Allowed), 50, 0).await.unwrap().is_empty(), "{backend}: consent is per side");

        // Per peer: 10 denies 12 and the wallet; no conversation with 99.
        assert!(store.set_peer_consent(10, &Party::Account(12), Consent::Denied).await.unwrap(), "{backend}");
        assert!(store.set_peer_consent(10, &wallet, Consent::Denied).await.unwrap(), "{backend}");
        assert!(!store.set_peer_consent(10, &Party::Account(99), Consent::Denied).await.unwrap(), "{backend}");
        assert!(store.is_denied(10, &Party::Account(12)).await.unwrap() && store.is_denied(10, &wallet).await.unwrap(), "{backend}");
        assert!(!store.is_denied(12, &Party::Account(10)).await.unwrap() && !store.is_denied(10, &Party::Account(11)).await.unwrap(), "{backend}");
        assert_eq!(contents(&store.inbox(10, Some(Consent::Denied), 50, 0).await.unwrap()), vec!["hello", "hi wallet"], "{backend}");
        assert_eq!(contents(&store.inbox(10, Some(Consent::Unknown), 50, 0).await.unwrap()), vec!["reply"], "{backend}");

        // Spam reports: one per reporter and address; counted by address or owning account.
        let other = "0x00000000000000000000000000000000000000aa";
        assert!(store.report_spam(10, WALLET, None, 7_000).await.unwrap(), "{backend}");
        assert!(!store.report_spam(10, WALLET, None, 7_001).await.unwrap(), "{backend}: once per reporter");
        assert!(store.report_spam(11, WALLET, Some(12), 7_002).await.unwrap(), "{backend}");
        assert!(store.report_spam(13, other, Some(12), 7_003).await.unwrap(), "{backend}");
        assert_eq!(store.spam_reporters(WALLET, None).await.unwrap(), 2, "{backend}");
        assert_eq!(store.spam_reporters(other, Some(12)).await.unwrap(), 2, "{backend}: 11 reported the owning account under another address");
        assert_eq!(store.spam_reporters("0x00000000000000000000000000000000000000bb", None).await.unwrap(), 0, "{backend}");

        // First contacts: conversations whose first message the account sent.
        assert_eq!(store.first_contacts_since(10, 0).await.unwrap(), 2, "{backend}: 11 and the wallet, not 12's");
        assert_eq!(store.first_contacts_since(11, 0).await.unwrap(), 0, "{backend}: a reply is no first contact");
        assert_eq!(store.first_contacts_since(12, 0).await.unwrap(), 1, "{backend}");
        assert_eq!(store.first_contacts_since(10, 5_001).await.unwrap(), 0, "{backend}: older than the window");
        database.close().await;
    }

    async fn the_outbox_claims_leases_retries_and_settles_deliveries(test_db) {
        let backend = test_db.backend.name();
        let database = Database::connect(&test_db.args, "messaging").await.unwrap();
        database.migrate(&clawx_messaging::MIGRATIONS).await.unwrap();
        let store = for_database(&database);
        let outcomes = store
            .send_batch(&[new(1, Party::Account(2), "one", None), new(1, Party::Wallet(WALLET.into()), "two", None), new(2, Party::Account(1), "three", None)], 1_000)
            .await
            .unwrap();
        let ids: Vec<i64> = outcomes.iter().map(|outcome| stored(outcome).id).collect();

        // Due messages are claimed oldest first, once until their lease runs out.
        assert!(store.claim_outbox(999, 60_000, 10).await.unwrap().is_empty(), "{backend}: not due before it was sent");
        let claimed = store.claim_outbox(1_000, 60_000, 2).await.unwrap();
        assert_eq!(claimed.iter().map(|entry| (entry.message.id, entry.attempts)).collect::<Vec<_>>(), vec![(ids[0], 1), (ids[1], 1)], "{backend}");
        assert_eq!(contents(&claimed.iter().map(|entry| entry.message.clone()).collect::<Vec<_>>()), vec!["one", "two"]);
        let rest = store.claim_outbox(1_000, 60_000, 10).await.unwrap();
        assert_eq!(rest.iter().map(|entry| entry.message.id).collect::<Vec<_>>(), vec![ids[2]], "{backend}: leased ones are not claimed again");
        let after_lease = store.claim_outbox(60_000, 120_000, 10).await.unwrap();
        assert_eq!(after_lease.iter().map(|entry| (entry.message.id, entry.attempts)).collect::<Vec<_>>(), vec![(ids[0], 2), (ids[1], 2), (ids[2], 2)], "{backend}: an expired lease is taken over");

        // Sent, retried, failed: the message's delivery follows the final states only.
        store.finish_outbox(ids[0], &OutboxResult::Sent).await.unwrap();
        store.finish_outbox(ids[1], &OutboxResult::Retry { at_ms: 200_000, error: "network down".into() }).await.unwrap();
        store.finish_outbox(ids[2], &OutboxResult::Failed { error: "RECIPIENT_NOT_ON_XMTP".into() }).await.unwrap();
        let history = store.conversation(1, &Party::Account(2), i64::MAX, 0, 10, 0).await.unwrap();
        let states: Vec<(&str, Option<&str>)> = history.iter().map(|message| (message.delivery.as_str(), message.delivery_error.as_deref())).collect();
        assert_eq!(states, vec![("failed", Some("RECIPIENT_NOT_ON_XMTP")), ("sent", None)], "{backend}");
        let to_wallet = store.conversation(1, &Party::Wallet(WALLET.into()), i64::MAX, 0, 10, 0).await.unwrap();
        assert_eq!((to_wallet[0].delivery.as_str(), to_wallet[0].delivery_error.as_deref()), ("stored", None), "{backend}: a retry is not final");
        assert!(store.claim_outbox(199_999, 300_000, 10).await.unwrap().is_empty(), "{backend}: not before its retry time");
        let retried = store.claim_outbox(200_000, 300_000, 10).await.unwrap();
        assert_eq!(retried.iter().map(|entry| (entry.message.id, entry.attempts)).collect::<Vec<_>>(), vec![(ids[1], 3)], "{backend}: settled ones are never claimed");
        database.close().await;
    }

    async fn received_messages_are_stored_once_and_echoes_of_sends_not_at_all(test_db) {
        let backend = test_db.backend.name();
        let database = Database::connect(&test_db.args, "messaging").await.unwrap();
        database.migrate(&clawx_messaging::MIGRATIONS).await.unwrap();
        let store = for_database(&database);
        let sent = store.send_batch(&[new(1, Party::Account(2), "from here", None)], 1_000).await.unwrap();
        let sent = stored(&sent[0]).clone();
        let inbound = |sender: Party, content: &str, network_id: &str, echo_of: Option<i64>| InboundMessage {
            recipient_account_id: 2,
            sender,
            content: content.into(),
            content_type: None,
            sent_at: 1_500,
            xmtp_message_id: network_id.into(),
            echo_of,
        };
        let outcomes = store
            .receive_batch(
                &[
                    inbound(Party::Wallet(WALLET.into()), "from a wallet", "2/10", None),
                    inbound(Party::Account(1), "from here", "2/11", Some(sent.id)),
                    inbound(Party::Wallet(WALLET.into()), "from a wallet", "2/10", None),
                    inbound(Party::Account(1), "sent elsewhere", "2/12", Some(999_999)),
                ],
                2_000,
            )
            .await
            .unwrap();
        let (from_wallet, previous) = match &outcomes[0] {
            ReceiveOutcome::Stored { message, previous } => (message.clone(), previous.clone()),
            other => panic!("{backend}: {other:?}"),
        };
        assert_eq!(outcomes[1], ReceiveOutcome::Known, "{backend}: the echo of a send from here");
        assert_eq!(outcomes[2], ReceiveOutcome::Known, "{backend}: the same network message twice");
        assert!(matches!(&outcomes[3], ReceiveOutcome::Stored { message, .. } if message.sender_account_id == Some(1)), "{backend}: {:?}", outcomes[3]);
        assert_eq!((from_wallet.sender_address.as_deref(), from_wallet.recipient_account_id, from_wallet.delivery.as_str()), (Some(WALLET), Some(2), "sent"));
        assert_eq!(previous, vec![(2, sent.id)], "{backend}: the recipient's mailbox chain");
        // Again later: nothing new; received messages never enter the outbox.
        let again = store.receive_batch(&[inbound(Party::Wallet(WALLET.into()), "from a wallet", "2/10", None)], 3_000).await.unwrap();
        assert_eq!(again, vec![ReceiveOutcome::Known], "{backend}");
        let due: Vec<i64> = store.claim_outbox(10_000, 20_000, 10).await.unwrap().iter().map(|entry| entry.message.id).collect();
        assert_eq!(due, vec![sent.id], "{backend}");
        let inbox = store.inbox(2, None, 50, 0).await.unwrap();
        assert_eq!(contents(&inbox), vec!["sent elsewhere", "from a wallet"], "{backend}");
        assert_eq!(store.mailbox_after(2, 0, 10).await.unwrap().len(), 3, "{backend}");
        assert!(store.mailbox_after(2, 0, 10).await.unwrap().iter().all(|message| message.content_type.is_none()), "{backend}: texts");

        // Content that is not text keeps its type beside its fallback text.
        let reaction = InboundMessage {
            content_type: Some("xmtp.org/reaction:1.0".into()),
            ..inbound(Party::Wallet(WALLET.into()), "Reacted 👍 to an earlier message", "2/13", None)
        };
        let outcomes = store.receive_batch(&[reaction], 4_000).await.unwrap();
        assert!(matches!(&outcomes[0], ReceiveOutcome::Stored { .. }), "{backend}: {outcomes:?}");
        let newest = store.inbox(2, None, 1, 0).await.unwrap();
        assert_eq!(
            (newest[0].content.as_str(), newest[0].content_type.as_deref()),
            ("Reacted 👍 to an earlier message", Some("xmtp.org/reaction:1.0")),
            "{backend}"
        );
        database.close().await;
    }
}

/// A batch for an account with no mailbox yet never holds another mailbox while it waits for
/// that one: it creates the missing mailbox on its own first and then locks all of its mailboxes
/// in account order. Here another transaction holds the new mailbox (5) and then asks for the
/// batch's other one (20): locked out of order, the two would deadlock and PostgreSQL would
/// abort one of them.
#[tokio::test]
async fn a_batch_creating_a_mailbox_never_waits_for_it_out_of_order() {
    let Some(test_db) = clawx_common::testing::TestDatabase::postgres() else { return };
    let database = Database::connect(&test_db.args, "messaging").await.unwrap();
    database.migrate(&clawx_messaging::MIGRATIONS).await.unwrap();
    let Database::Postgres(pool) = &database else { unreachable!() };
    let store = for_database(&database);
    store.send_batch(&[new(20, Party::Account(21), "20 has a mailbox", None)], 1_000).await.unwrap();

    let url = std::env::var("CLAWX_TEST_DATABASE_URL").unwrap();
    let schema = clawx_common::storage::schema_for(&test_db.args, "messaging");
    let connect = || async {
        let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("SET search_path = \"{schema}\""))).execute(&mut connection).await.unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut connection).await.unwrap();
        (connection, pid)
    };
    let blocked_by = |pid: i32| {
        let pool = pool.clone();
        async move {
            for _ in 0..500 {
                let waiting: Option<i32> = sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)) LIMIT 1")
                    .bind(pid)
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
                if let Some(waiting) = waiting {
                    return waiting;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("nothing waited for {pid}");
        }
    };
    let (mut holder, holder_pid) = connect().await;
    let (mut other, other_pid) = connect().await;

    // The batch (20 writes to 5, who has no mailbox) waits for mailbox 20.
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT 1 FROM dm_mailboxes WHERE account_id = 20 FOR UPDATE").execute(&mut holder).await.unwrap();
    let batch = tokio::spawn({
        let store = store.clone();
        async move { store.send_batch(&[new(20, Party::Account(5), "to a new account", None)], 2_000).await }
    });
    blocked_by(holder_pid).await;
    // Meanwhile mailbox 5 appears and another transaction takes it; then 20 is free again.
    sqlx::query("INSERT INTO dm_mailboxes (account_id) VALUES (5)").execute(&mut other).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT 1 FROM dm_mailboxes WHERE account_id = 5 FOR UPDATE").execute(&mut other).await.unwrap();
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    // The batch now waits for 5, holding nothing the other transaction needs: it takes 20 at once.
    blocked_by(other_pid).await;
    let taken = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        sqlx::query("SELECT 1 FROM dm_mailboxes WHERE account_id = 20 FOR UPDATE").execute(&mut other),
    )
    .await;
    assert!(matches!(taken, Ok(Ok(_))), "mailbox 20 is not held by the batch waiting for 5: {taken:?}");
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let outcomes = batch.await.unwrap().expect("the batch is stored");
    let message = stored(&outcomes[0]);
    assert_eq!(store.mailbox_after(5, 0, 10).await.unwrap(), vec![message.clone()]);
    database.close().await;
}
