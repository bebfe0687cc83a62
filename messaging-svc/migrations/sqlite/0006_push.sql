-- Push notifications: where an account wants to be told (targets), about what (topics), and the
-- durable queue of notifications the push worker delivers.

-- A delivery target of an account: a webhook URL or an FCM registration token.
CREATE TABLE push_targets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id BIGINT NOT NULL,
    -- webhook | fcm
    platform TEXT NOT NULL,
    -- the URL or the token
    address TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (account_id, platform, address)
);

-- A topic registered to a target. topic_key is what arriving messages are matched on:
-- `inbox` (every direct message to the account), `dm:<conversation id>`, or an XMTP topic.
CREATE TABLE push_topics (
    target_id BIGINT NOT NULL REFERENCES push_targets (id) ON DELETE CASCADE,
    account_id BIGINT NOT NULL,
    topic_key TEXT NOT NULL,
    -- the topic as registered
    topic TEXT NOT NULL,
    -- the peer named with it (`a:<account id>` or `w:<address>`), if any: a denied peer is not pushed
    peer TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (target_id, topic_key)
);
CREATE INDEX push_topics_account ON push_topics (account_id, topic_key);
CREATE INDEX push_topics_key ON push_topics (topic_key);

-- Notifications to deliver. A job is due when next_attempt_at has passed; a worker claims it by
-- moving next_attempt_at past its lease and counting the attempt. Delivered jobs are deleted;
-- jobs out of attempts stay as `failed` for a while.
CREATE TABLE push_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target_id BIGINT NOT NULL REFERENCES push_targets (id) ON DELETE CASCADE,
    topic TEXT NOT NULL,
    -- dm (ref_id: dm_messages.id) | xmtp_group (xmtp_group_messages.id) | xmtp_welcome (xmtp_welcomes.id)
    kind TEXT NOT NULL,
    ref_id BIGINT NOT NULL,
    -- pending | failed
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (target_id, kind, ref_id)
);
CREATE INDEX push_jobs_due ON push_jobs (state, next_attempt_at);

-- Consent set before any conversation exists: per peer (`a:<account id>` or `w:<address>`; a
-- conversation created later starts with it) and per XMTP topic (no peer needed; a denied topic
-- is not pushed).
CREATE TABLE dm_peer_consent (
    account_id BIGINT NOT NULL,
    peer TEXT NOT NULL,
    -- allowed | denied
    consent TEXT NOT NULL,
    PRIMARY KEY (account_id, peer)
);
CREATE TABLE dm_topic_consent (
    account_id BIGINT NOT NULL,
    topic TEXT NOT NULL,
    consent TEXT NOT NULL,
    PRIMARY KEY (account_id, topic)
);
