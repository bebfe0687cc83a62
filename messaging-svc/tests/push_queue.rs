//! The push queue on SQLite and (when configured) PostgreSQL: registrations and their bounds,
//! notifications queued with the messages that cause them (and not for denied peers), claims
//! that hide a job while it is delivered, the retry schedule, failure after the last attempt,
//! unregistering a target that is gone, and two workers delivering each notification once to a
//! real webhook receiver on loopback.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, http::HeaderMap, http::StatusCode, routing::post};
use clawx_common::Database;
use clawx_messaging::{
    dm::store::{Consent, DmStore, NewMessage, Party, SendOutcome},
    node::store::{NewGroupMessage, NewWelcome},
    push::{
        Providers, PushConfig,
        store::{PushStore, Registered, RegistrationLimits, TopicRegistration, xmtp_topic},
        worker::Worker,
    },
};

fn dm(from: i64, to: i64, content: &str) -> NewMessage {
    NewMessage { sender_account_id: from, recipient: Party::Account(to), content: content.into(), idempotency: None }
}

fn topic(key: &str, topic: &str, peer: Option<&str>) -> TopicRegistration {
    TopicRegistration { topic_key: key.into(), topic: topic.into(), peer: peer.map(str::to_string) }
}

const LIMITS: RegistrationLimits = RegistrationLimits { max_targets: 2, max_topics: 4, max_targets_per_xmtp_topic: 20 };

async fn send(store: &Arc<dyn DmStore>, messages: &[NewMessage], now: i64) -> Vec<i64> {
    let outcomes = store.send_batch(messages, now).await.unwrap();
    outcomes
        .iter()
        .map(|outcome| match outcome {
            SendOutcome::Stored { message, .. } => message.id,
            other => panic!("{other:?}"),
        })
        .collect()
}

/// A webhook receiver on loopback: answers with `statuses` in turn (then 200), records each
/// call's `webhook-id`.
struct Receiver {
    url: String,
    calls: Arc<Mutex<Vec<String>>>,
}

/// 48 registrations of `account` at once, each a new target (`<prefix>-<n>`) with 10 new
/// topics; on PostgreSQL they run on separate connections, so a count-then-insert would let
/// several pass the same count.
async fn register_at_once(push: &Arc<dyn PushStore>, account: i64, prefix: &'static str, limits: RegistrationLimits) -> Vec<Registered> {
    let registrations = (0..48).map(|index| {
        let push = Arc::clone(push);
        tokio::spawn(async move {
            let url = format!("https://hooks.example.com/{prefix}-{index}");
            let topics: Vec<_> = (0..10).map(|n| topic(&format!("/clawx/dm/1/{index}{n}"), "t", None)).collect();
            push.register(account, "webhook", &url, &topics, limits, 1).await
        })
    });
    futures::future::join_all(registrations).await.into_iter().map(|joined| joined.unwrap().unwrap()).collect()
}

async fn receiver(statuses: Vec<u16>) -> Receiver {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let answers = Arc::new(Mutex::new(statuses.into_iter()));
    let recorded = Arc::clone(&calls);
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, _body: Bytes| {
            let recorded = Arc::clone(&recorded);
            let answers = Arc::clone(&answers);
            async move {
                let id = headers.get("webhook-id").and_then(|value| value.to_str().ok()).unwrap_or_default().to_string();
                recorded.lock().unwrap().push(id);
                // Deliveries overlap when they are slow: a second worker must still not repeat one.
                tokio::time::sleep(Duration::from_millis(5)).await;
                StatusCode::from_u16(answers.lock().unwrap().next().unwrap_or(200)).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, calls }
}

fn config() -> PushConfig {
    PushConfig {
        allow_private_targets: true,
        webhook_secret: b"push-queue-test-master-secret-0123456789".to_vec(),
        retry_base: Duration::from_millis(1000),
        retry_max: Duration::from_millis(4000),
        max_attempts: 3,
        batch: 7,
        concurrency: 4,
        timeout: Duration::from_secs(5),
        ..PushConfig::default()
    }
}

clawx_common::backend_tests! {
    async fn notifications_are_queued_with_their_messages_claimed_retried_and_failed(test_db) {
        let backend = test_db.backend.name();
        let database = Database::connect(&test_db.args, "messaging").await.unwrap();
        database.migrate(&clawx_messaging::MIGRATIONS).await.unwrap();
        let dms = clawx_messaging::dm::store::for_database(&database);
        let push = clawx_messaging::push::store::for_database(&database);
        let node = clawx_messaging::node::store::for_database(&database);

        // Registrations and their bounds.
        let url = "https://hooks.example.com/a";
        let inbox = topic("inbox", "/clawx/inbox/1", None);
        let target = match push.register(2, "webhook", url, std::slice::from_ref(&inbox), LIMITS, 1_000).await.unwrap() {
            Registered::Done { target_id, target_created: true, new_topics: 1 } => target_id,
            other => panic!("{backend}: {other:?}"),
        };
        let again = push.register(2, "webhook", url, std::slice::from_ref(&inbox), LIMITS, 1_001).await.unwrap();
        assert_eq!(again, Registered::Done { target_id: target, target_created: false, new_topics: 0 }, "{backend}: idempotent");
        push.register(2, "fcm", "token-1", &[topic("inbox", "/clawx/inbox/1", None)], LIMITS, 1_002).await.unwrap();
        let third = push.register(2, "fcm", "token-2", &[topic("inbox", "/clawx/inbox/1", None)], LIMITS, 1_003).await.unwrap();
        assert_eq!(third, Registered::TooManyTargets, "{backend}");
        let many: Vec<_> = (0..4).map(|index| topic(&format!("/xmtp/mls/1/g-0{index}/proto"), "t", None)).collect();
        assert_eq!(push.register(2, "webhook", url, &many, LIMITS, 1_004).await.unwrap(), Registered::TooManyTopics, "{backend}");
        assert_eq!(push.targets_of(2).await.unwrap().len(), 2, "{backend}: a refused registration stores nothing");
        assert!(push.jobs_of(target).await.unwrap().is_empty());

        // A DM to account 2 queues one job per target (the inbox on two targets), none for the
        // sender's side; a DM to account 3 (no registration) queues nothing.
        let ids = send(&dms, &[dm(1, 2, "hello"), dm(2, 3, "hi three"), dm(4, 2, "from four")], 2_000).await;
        let jobs = push.jobs_of(target).await.unwrap();
        assert_eq!(jobs.iter().map(|job| (job.kind.as_str(), job.ref_id, job.state.as_str(), job.attempts)).collect::<Vec<_>>(),
            vec![("dm", ids[0], "pending", 0), ("dm", ids[2], "pending", 0)], "{backend}");
        assert!(jobs[0].topic.starts_with("/clawx/dm/1/"), "{backend}: {jobs:?}");

        // Denied: account 2 blocks account 4; 4's next message is stored, not pushed.
        assert!(dms.set_peer_consent(2, &Party::Account(4), Consent::Denied).await.unwrap());
        let denied = send(&dms, &[dm(4, 2, "again")], 2_100).await;
        assert!(push.jobs_of(target).await.unwrap().iter().all(|job| job.ref_id != denied[0]), "{backend}: a denied peer is not pushed");
        // Denied before they ever talked: the first message, which starts the conversation (and
        // account 2's membership in the same batch), is not pushed either.
        assert!(!dms.set_peer_consent(2, &Party::Account(6), Consent::Denied).await.unwrap(), "{backend}: no conversation yet");
        let first_contact = send(&dms, &[dm(6, 2, "first contact"), dm(6, 2, "and again")], 2_200).await;
        let queued = push.jobs_of(target).await.unwrap();
        assert!(queued.iter().all(|job| !first_contact.contains(&job.ref_id)), "{backend}: a peer denied in advance is not pushed: {queued:?}");

        // Claims: due jobs, oldest first, with their target; hidden while leased.
        let claimed = push.claim(3_000, 63_000, 3, u32::MAX).await.unwrap();
        assert_eq!(claimed.len(), 3, "{backend}: two on the webhook, one on the FCM token (limit 3)");
        let rest = push.claim(3_000, 63_000, 10, u32::MAX).await.unwrap();
        assert_eq!(rest.len(), 1, "{backend}: only the one not claimed yet");
        let claimed: Vec<_> = claimed.into_iter().chain(rest).collect();
        let first = claimed.iter().find(|job| job.target_id == target && job.ref_id == ids[0]).expect("the first job").clone();
        assert_eq!((first.account_id, first.platform.as_str(), first.address.as_str(), first.attempt), (2, "webhook", url, 1), "{backend}");
        assert!(push.claim(3_001, 63_001, 10, u32::MAX).await.unwrap().is_empty(), "{backend}: leased jobs are hidden");

        // Retry: due again at the time given, counted as the next attempt; a stale attempt
        // cannot finish the job.
        assert!(push.retry(first.id, 1, 5_000, "the webhook answered 500").await.unwrap());
        assert!(push.claim(4_999, 70_000, 10, u32::MAX).await.unwrap().is_empty(), "{backend}: not before its time");
        let retried = push.claim(5_000, 70_000, 10, u32::MAX).await.unwrap();
        assert_eq!(retried.iter().map(|job| (job.id, job.attempt)).collect::<Vec<_>>(), vec![(first.id, 2)], "{backend}");
        assert!(!push.delivered(first.id, 1).await.unwrap(), "{backend}: attempt 1 was taken over");
        assert!(push.delivered(first.id, 2).await.unwrap(), "{backend}");
        assert!(push.jobs_of(target).await.unwrap().iter().all(|job| job.id != first.id), "{backend}: delivered jobs leave the queue");

        // Failed jobs stay, are not claimed again, and are deleted after a while.
        let second = claimed.iter().find(|job| job.target_id == target && job.ref_id == ids[2]).unwrap().clone();
        assert!(push.fail(second.id, second.attempt, "out of attempts").await.unwrap());
        let kept = push.jobs_of(target).await.unwrap();
        assert_eq!((kept[0].state.as_str(), kept[0].last_error.as_deref()), ("failed", Some("out of attempts")), "{backend}");
        assert!(push.claim(i64::MAX / 2, i64::MAX / 2, 10, u32::MAX).await.unwrap().iter().all(|job| job.id != second.id), "{backend}");
        assert_eq!(push.delete_failed_before(i64::MAX).await.unwrap(), 1, "{backend}");

        // XMTP envelopes on a registered topic queue a job (not when the writer says no push);
        // the envelope is read back for the notification.
        let group = b"\x01\x02group".to_vec();
        let group_topic = xmtp_topic('g', &group);
        let welcome_topic = xmtp_topic('w', b"installation");
        let xmtp_target = match push
            .register(5, "webhook", "https://hooks.example.com/x", &[topic(&group_topic, &group_topic, None), topic(&welcome_topic, &welcome_topic, None)], LIMITS, 6_000)
            .await
            .unwrap()
        {
            Registered::Done { target_id, .. } => target_id,
            other => panic!("{other:?}"),
        };
        let message = |data: &[u8], should_push| NewGroupMessage { group_id: group.clone(), data: data.to_vec(), sender_hmac: vec![], should_push, is_commit: false };
        let inserted = node.insert_group_messages(&[message(b"sealed", true), message(b"commit", false)], 7_000_000_000).await.unwrap();
        let welcomed = node.insert_welcomes(&[NewWelcome { installation_key: b"installation".to_vec(), message: b"welcome".to_vec() }], 7_000_000_001).await.unwrap();
        let jobs = push.jobs_of(xmtp_target).await.unwrap();
        assert_eq!(jobs.iter().map(|job| (job.kind.as_str(), job.ref_id, job.topic.as_str())).collect::<Vec<_>>(),
            vec![("xmtp_group", inserted[0].item.id, group_topic.as_str()), ("xmtp_welcome", welcomed[0].item.id, welcome_topic.as_str())], "{backend}");
        let envelope = push.envelope("xmtp_group", inserted[0].item.id, 1024).await.unwrap().unwrap();
        assert_eq!((envelope.data.as_slice(), envelope.size, envelope.created_ns), (&b"sealed"[..], 6, 7_000_000_000), "{backend}");
        let too_big = push.envelope("xmtp_group", inserted[0].item.id, 3).await.unwrap().unwrap();
        assert!(too_big.data.is_empty() && too_big.size == 6, "{backend}: larger than asked is announced without its payload");

        // Unregistering removes the target, its topics and its jobs.
        assert!(push.unregister_target(xmtp_target).await.unwrap());
        assert!(push.jobs_of(xmtp_target).await.unwrap().is_empty());
        assert!(push.targets_of(5).await.unwrap().is_empty());
        node.insert_group_messages(&[message(b"later", true)], 8_000_000_000).await.unwrap();
        assert!(push.jobs_of(xmtp_target).await.unwrap().is_empty(), "{backend}: nothing queued for a removed target");
    }

    async fn concurrent_registrations_never_exceed_the_per_account_caps(test_db) {
        let backend = test_db.backend.name();
        // Enough connections for the registrations to overlap.
        let mut args = test_db.args.clone();
        args.database_max_connections = 16;
        let database = Database::connect(&args, "messaging").await.unwrap();
        database.migrate(&clawx_messaging::MIGRATIONS).await.unwrap();
        let push = clawx_messaging::push::store::for_database(&database);
        let outcomes = register_at_once(&push, 9, "race", RegistrationLimits { max_targets: 3, max_topics: 100, ..LIMITS }).await;
        let done = outcomes.iter().filter(|outcome| matches!(outcome, Registered::Done { .. })).count();
        assert_eq!(done, 3, "{backend}: {outcomes:?}");
        assert_eq!(push.targets_of(9).await.unwrap().len(), 3, "{backend}: the target cap holds");

        let outcomes = register_at_once(&push, 10, "topics", RegistrationLimits { max_targets: 100, max_topics: 50, ..LIMITS }).await;
        let done = outcomes.iter().filter(|outcome| matches!(outcome, Registered::Done { .. })).count();
        assert_eq!(done, 5, "{backend}: the topic cap holds: {outcomes:?}");
        database.close().await;
    }

    async fn one_xmtp_topic_reaches_a_bounded_number_of_targets(test_db) {
        let backend = test_db.backend.name();
        let mut args = test_db.args.clone();
        args.database_max_connections = 16;
        let database = Database::connect(&args, "messaging").await.unwrap();
        database.migrate(&clawx_messaging::MIGRATIONS).await.unwrap();
        let push = clawx_messaging::push::store::for_database(&database);
        let group = xmtp_topic('g', b"shared group");
        // Many accounts at once register the same group topic, each to the same receiver URL.
        let registrations = (0..40).map(|account| {
            let push = Arc::clone(&push);
            let group = group.clone();
            tokio::spawn(async move {
                let topics = [topic(&group, &group, None)];
                push.register(100 + account, "webhook", "https://victim.example.com/hook", &topics, RegistrationLimits { max_targets_per_xmtp_topic: 5, ..LIMITS }, 1).await
            })
        });
        let outcomes: Vec<Registered> = futures::future::join_all(registrations).await.into_iter().map(|joined| joined.unwrap().unwrap()).collect();
        let done = outcomes.iter().filter(|outcome| matches!(outcome, Registered::Done { .. })).count();
        assert_eq!(done, 5, "{backend}: {outcomes:?}");
        assert!(outcomes.iter().all(|outcome| matches!(outcome, Registered::Done { .. }) || *outcome == Registered::TopicTaken(group.clone())), "{backend}");
        // Registering it again to a target that has it already is not refused.
        let first = (100..140).find(|account| outcomes[(account - 100) as usize] != Registered::TopicTaken(group.clone())).unwrap();
        let again = push.register(first, "webhook", "https://victim.example.com/hook", &[topic(&group, &group, None)], RegistrationLimits { max_targets_per_xmtp_topic: 5, ..LIMITS }, 2).await.unwrap();
        assert!(matches!(again, Registered::Done { target_created: false, new_topics: 0, .. }), "{backend}: {again:?}");
        database.close().await;
    }

    async fn a_target_with_a_backlog_does_not_hold_back_other_targets(test_db) {
        let backend = test_db.backend.name();
        let database = Database::connect(&test_db.args, "messaging").await.unwrap();
        database.migrate(&clawx_messaging::MIGRATIONS).await.unwrap();
        let dms = clawx_messaging::dm::store::for_database(&database);
        let push = clawx_messaging::push::store::for_database(&database);
        let providers = Providers::from_config(&config()).unwrap();
        let worker = Worker::new(clawx_messaging::push::store::for_database(&database), providers, None, config());

        // A slow receiver with a backlog of 20, queued before one notification to a healthy one.
        let slow = receiver(vec![]).await;
        let healthy = receiver(vec![]).await;
        push.register(2, "webhook", &slow.url, &[topic("inbox", "/clawx/inbox/1", None)], LIMITS, 1).await.unwrap();
        push.register(3, "webhook", &healthy.url, &[topic("inbox", "/clawx/inbox/1", None)], LIMITS, 1).await.unwrap();
        let backlog: Vec<NewMessage> = (0..20).map(|index| dm(1, 2, &format!("backlog {index}"))).collect();
        // Both due now (a job is due at its message's time: one a millisecond ahead could still be
        // in the future at the first tick); the backlog's ids come first.
        let now = clawx_common::time::now_ms();
        send(&dms, &backlog, now).await;
        send(&dms, &[dm(1, 3, "for the healthy one")], now).await;

        // The first tick (batch 7, concurrency 4: one job per target) already delivers it.
        let tick = worker.tick().await.unwrap();
        assert_eq!(worker.per_target(), 1);
        assert_eq!((tick.claimed, tick.delivered), (2, 2), "{backend}: {tick:?}");
        assert_eq!(healthy.calls.lock().unwrap().len(), 1, "{backend}: the healthy target is not behind the backlog");
        assert_eq!(slow.calls.lock().unwrap().len(), 1, "{backend}");
        // The backlog still drains, a share per tick.
        for _ in 0..19 {
            worker.tick().await.unwrap();
        }
        assert_eq!(slow.calls.lock().unwrap().len(), 20, "{backend}");
        database.close().await;
    }

    async fn workers_deliver_each_notification_once_retry_with_backoff_and_unregister_gone_targets(test_db) {
        let backend = test_db.backend.name();
        let database = Database::connect(&test_db.args, "messaging").await.unwrap();
        database.migrate(&clawx_messaging::MIGRATIONS).await.unwrap();
        let dms = clawx_messaging::dm::store::for_database(&database);
        let providers = Providers::from_config(&config()).unwrap();

        // Two workers, each on its own connection pool, as on two replicas.
        let other_database = Database::connect(&test_db.args, "messaging").await.unwrap();
        let workers = [
            Worker::new(clawx_messaging::push::store::for_database(&database), providers.clone(), None, config()),
            Worker::new(clawx_messaging::push::store::for_database(&other_database), providers.clone(), None, config()),
        ];
        let push = clawx_messaging::push::store::for_database(&database);

        let good = receiver(vec![]).await;
        push.register(2, "webhook", &good.url, &[topic("inbox", "/clawx/inbox/1", None)], LIMITS, 1).await.unwrap();
        let messages: Vec<NewMessage> = (0..40).map(|index| dm(1, 2, &format!("m{index}"))).collect();
        send(&dms, &messages, clawx_common::time::now_ms()).await;
        let mut delivered = 0;
        for _ in 0..40 {
            let (first, second) = tokio::join!(workers[0].tick(), workers[1].tick());
            let (first, second) = (first.unwrap(), second.unwrap());
            assert!(first.claimed <= 7 && second.claimed <= 7, "{backend}: a tick claims at most the batch");
            delivered += first.delivered + second.delivered;
            if delivered == 40 {
                break;
            }
        }
        let calls = good.calls.lock().unwrap().clone();
        let mut counts: HashMap<&String, usize> = HashMap::new();
        for id in &calls {
            *counts.entry(id).or_default() += 1;
        }
        assert_eq!((delivered, calls.len(), counts.len()), (40, 40, 40), "{backend}: each notification once: {counts:?}");
        assert!(counts.keys().all(|id| id.starts_with("push_")), "{backend}");

        // A failing receiver: 500 twice, then 200. Each retry waits the doubled delay (with
        // jitter: half to all of it); the webhook-id stays the same.
        let flaky = receiver(vec![500, 500]).await;
        let flaky_target = match push.register(3, "webhook", &flaky.url, &[topic("inbox", "/clawx/inbox/1", None)], LIMITS, 1).await.unwrap() {
            Registered::Done { target_id, .. } => target_id,
            other => panic!("{other:?}"),
        };
        send(&dms, &[dm(1, 3, "flaky")], clawx_common::time::now_ms()).await;
        let mut schedule = Vec::new();
        for attempt in 1..=3 {
            let before = clawx_common::time::now_ms();
            let tick = workers[attempt % 2].tick().await.unwrap();
            assert_eq!(tick.claimed, 1, "{backend}: attempt {attempt}");
            let jobs = push.jobs_of(flaky_target).await.unwrap();
            if attempt < 3 {
                assert_eq!((tick.retried, jobs[0].attempts as usize), (1, attempt), "{backend}");
                let delay = jobs[0].next_attempt_at - before;
                schedule.push(delay);
                // Make the job due now rather than sleeping through the backoff.
                sqlx_due_now(&database, jobs[0].id).await;
            } else {
                assert_eq!(tick.delivered, 1, "{backend}");
                assert!(jobs.is_empty(), "{backend}");
            }
        }
        assert!((500..=1_100).contains(&schedule[0]), "{backend}: first retry after 0.5-1 s: {schedule:?}");
        assert!((1_000..=2_100).contains(&schedule[1]), "{backend}: second after 1-2 s: {schedule:?}");
        let flaky_calls = flaky.calls.lock().unwrap().clone();
        assert_eq!(flaky_calls.len(), 3);
        assert!(flaky_calls.iter().all(|id| id == &flaky_calls[0]), "{backend}: one webhook-id across retries");

        // Out of attempts: failed after the third.
        let broken = receiver(vec![503; 10]).await;
        let broken_target = match push.register(4, "webhook", &broken.url, &[topic("inbox", "/clawx/inbox/1", None)], LIMITS, 1).await.unwrap() {
            Registered::Done { target_id, .. } => target_id,
            other => panic!("{other:?}"),
        };
        send(&dms, &[dm(1, 4, "broken")], clawx_common::time::now_ms()).await;
        for _ in 0..3 {
            workers[0].tick().await.unwrap();
            let jobs = push.jobs_of(broken_target).await.unwrap();
            sqlx_due_now(&database, jobs[0].id).await;
        }
        let jobs = push.jobs_of(broken_target).await.unwrap();
        assert_eq!((jobs[0].state.as_str(), jobs[0].attempts), ("failed", 3), "{backend}");
        assert_eq!(jobs[0].last_error.as_deref(), Some("the webhook answered 503"));
        assert_eq!(workers[0].tick().await.unwrap().claimed, 0, "{backend}: failed jobs are not retried");

        // A receiver answering 404 is retried, not unregistered: only 410 Gone says it is gone.
        let missing = receiver(vec![404]).await;
        let missing_target = match push.register(5, "webhook", &missing.url, &[topic("inbox", "/clawx/inbox/1", None)], LIMITS, 1).await.unwrap() {
            Registered::Done { target_id, .. } => target_id,
            other => panic!("{other:?}"),
        };
        send(&dms, &[dm(1, 5, "not found")], clawx_common::time::now_ms()).await;
        let tick = workers[0].tick().await.unwrap();
        assert_eq!((tick.retried, tick.unregistered), (1, 0), "{backend}: {tick:?}");
        assert_eq!(push.targets_of(5).await.unwrap().len(), 1, "{backend}: a 404 keeps the target");
        let jobs = push.jobs_of(missing_target).await.unwrap();
        assert_eq!(jobs[0].last_error.as_deref(), Some("the webhook answered 404"), "{backend}");
        sqlx_due_now(&database, jobs[0].id).await;
        assert_eq!(workers[0].tick().await.unwrap().delivered, 1, "{backend}: delivered on the retry");

        // A receiver answering 410 is unregistered with its topics and jobs.
        let gone = receiver(vec![410]).await;
        push.register(6, "webhook", &gone.url, &[topic("inbox", "/clawx/inbox/1", None)], LIMITS, 1).await.unwrap();
        send(&dms, &[dm(1, 6, "gone"), dm(1, 6, "gone too")], clawx_common::time::now_ms()).await;
        let tick = workers[1].tick().await.unwrap();
        assert!(tick.unregistered >= 1, "{backend}: {tick:?}");
        assert!(push.targets_of(6).await.unwrap().is_empty(), "{backend}");
        send(&dms, &[dm(1, 6, "after")], clawx_common::time::now_ms()).await;
        assert_eq!(workers[1].tick().await.unwrap().claimed, 0, "{backend}: nothing queued any more");
        other_database.close().await;
    }
}

/// Makes a job due at once (the tests do not sleep through backoffs).
async fn sqlx_due_now(database: &Database, job_id: i64) {
    match database {
        Database::Postgres(pool) => {
            sqlx::query("UPDATE push_jobs SET next_attempt_at = 0 WHERE id = $1").bind(job_id).execute(pool).await.unwrap();
        }
        Database::Sqlite(pool) => {
            sqlx::query("UPDATE push_jobs SET next_attempt_at = 0 WHERE id = $1").bind(job_id).execute(pool).await.unwrap();
        }
    }
}
