-- One global, monotonically increasing id for every stored item: the paging and subscription cursor.
CREATE TABLE xmtp_counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO xmtp_counters (name, value) VALUES ('ids', 0);

-- Per-group state; its row is locked while a message or commit-log entry is stored, so ids
-- commit in order within a group.
CREATE TABLE xmtp_groups (
    group_id BLOB PRIMARY KEY,
    last_message_id BIGINT NOT NULL DEFAULT 0,
    last_commit_log_id BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE xmtp_group_messages (
    id BIGINT PRIMARY KEY,
    group_id BLOB NOT NULL,
    created_ns BIGINT NOT NULL,
    data BLOB NOT NULL,
    sender_hmac BLOB NOT NULL,
    should_push BOOLEAN NOT NULL,
    is_commit BOOLEAN NOT NULL,
    -- sha256(group_id || data): a resent message is stored once
    content_hash BLOB NOT NULL UNIQUE
);
CREATE INDEX xmtp_group_messages_group ON xmtp_group_messages (group_id, id);

-- Installations: the latest key package (keyed by the installation's signature key) and the
-- welcome cursor.
CREATE TABLE xmtp_installations (
    installation_key BLOB PRIMARY KEY,
    inbox_id TEXT,
    key_package BLOB,
    key_package_not_after BIGINT,
    key_package_updated_at BIGINT,
    last_welcome_id BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE xmtp_welcomes (
    id BIGINT PRIMARY KEY,
    installation_key BLOB NOT NULL,
    created_ns BIGINT NOT NULL,
    -- the WelcomeMessageInput as received (v1 or welcome pointer)
    message BLOB NOT NULL,
    content_hash BLOB NOT NULL UNIQUE
);
CREATE INDEX xmtp_welcomes_installation ON xmtp_welcomes (installation_key, id);

-- Identity: one log per inbox, and the identifier -> inbox index.
CREATE TABLE xmtp_inboxes (
    inbox_id TEXT PRIMARY KEY,
    last_sequence_id BIGINT NOT NULL,
    update_count INTEGER NOT NULL
);

CREATE TABLE xmtp_identity_updates (
    sequence_id BIGINT PRIMARY KEY,
    inbox_id TEXT NOT NULL,
    server_timestamp_ns BIGINT NOT NULL,
    -- the validated IdentityUpdate, re-encoded
    update_bytes BLOB NOT NULL
);
CREATE INDEX xmtp_identity_updates_inbox ON xmtp_identity_updates (inbox_id, sequence_id);

CREATE TABLE xmtp_address_log (
    address TEXT NOT NULL,
    inbox_id TEXT NOT NULL,
    association_sequence_id BIGINT NOT NULL,
    revocation_sequence_id BIGINT,
    PRIMARY KEY (address, association_sequence_id)
);

CREATE TABLE xmtp_commit_log (
    id BIGINT PRIMARY KEY,
    group_id BLOB NOT NULL,
    entry BLOB NOT NULL,
    -- an encoded RecoverableEd25519Signature, when sent
    signature BLOB
);
CREATE INDEX xmtp_commit_log_group ON xmtp_commit_log (group_id, id);
