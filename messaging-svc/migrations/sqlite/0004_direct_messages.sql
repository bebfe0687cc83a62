-- Direct messages between accounts, and between an account and a wallet with no account here.

-- Message ids: the paging, inbox and stream cursor.
CREATE TABLE dm_counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO dm_counters (name, value) VALUES ('messages', 0);

-- One conversation per pair of parties. A party is `a:<account id>` or `w:<lowercase address>`;
-- party_low < party_high, so a pair has one row whoever wrote first.
CREATE TABLE dm_conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    party_low TEXT NOT NULL,
    party_high TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (party_low, party_high)
);

CREATE TABLE dm_messages (
    id BIGINT PRIMARY KEY,
    conversation_id BIGINT NOT NULL REFERENCES dm_conversations (id),
    sender_account_id BIGINT,
    sender_address TEXT,
    recipient_account_id BIGINT,
    recipient_address TEXT,
    content TEXT NOT NULL,
    sent_at BIGINT NOT NULL,
    -- stored | sent | failed
    delivery TEXT NOT NULL DEFAULT 'stored',
    delivery_error TEXT,
    -- the XMTP message id once carried (or when received over XMTP): inbound deduplication
    xmtp_message_id TEXT UNIQUE
);
CREATE INDEX dm_messages_conversation ON dm_messages (conversation_id, id);

-- Per account: the id of its newest mailbox message. Locked while a batch writes to the
-- account's mailbox, so ids commit in order per account (streams rely on it).
CREATE TABLE dm_mailboxes (
    account_id BIGINT PRIMARY KEY,
    last_message_id BIGINT NOT NULL DEFAULT 0
);

-- One row per message for each account side: an account's messages after an id are one range.
CREATE TABLE dm_mailbox_messages (
    account_id BIGINT NOT NULL,
    message_id BIGINT NOT NULL,
    PRIMARY KEY (account_id, message_id)
);

-- An account's side of a conversation: its peer, the newest message and its consent.
CREATE TABLE dm_memberships (
    account_id BIGINT NOT NULL,
    peer TEXT NOT NULL,
    conversation_id BIGINT NOT NULL REFERENCES dm_conversations (id),
    last_message_id BIGINT NOT NULL,
    -- unknown | allowed | denied
    consent TEXT NOT NULL DEFAULT 'unknown',
    PRIMARY KEY (account_id, peer)
);
CREATE INDEX dm_memberships_inbox ON dm_memberships (account_id, last_message_id);
CREATE INDEX dm_memberships_consent ON dm_memberships (account_id, consent, last_message_id);

-- Messages waiting to be carried over XMTP by the account's agent.
CREATE TABLE dm_outbox (
    message_id BIGINT PRIMARY KEY,
    -- pending | sent | failed
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT
);
CREATE INDEX dm_outbox_due ON dm_outbox (state, next_attempt_at);

-- Idempotency keys, per account, honoured for 24 hours (older rows are ignored, then replaced).
CREATE TABLE dm_idempotency_keys (
    account_id BIGINT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    message_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, idempotency_key)
);
CREATE INDEX dm_idempotency_keys_age ON dm_idempotency_keys (created_at);
