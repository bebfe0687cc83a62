-- Open groups, their members and their chat. Timestamps are Unix milliseconds.
CREATE TABLE groups (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    title_lower TEXT NOT NULL,
    description TEXT NOT NULL,
    description_lower TEXT NOT NULL,
    x_url TEXT,
    github_url TEXT,
    website_url TEXT,
    owner_id BIGINT NOT NULL,
    member_count BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX groups_owner ON groups (owner_id);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    account_id BIGINT NOT NULL,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, account_id)
);
CREATE INDEX group_members_account ON group_members (account_id);
CREATE INDEX group_members_joined ON group_members (group_id, joined_at, account_id);

CREATE TABLE group_messages (
    id BIGSERIAL PRIMARY KEY,
    group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    sender_id BIGINT NOT NULL,
    content TEXT NOT NULL,
    sent_at BIGINT NOT NULL
);
CREATE INDEX group_messages_group ON group_messages (group_id, id);

-- Idempotency keys of group sends, per account, kept 24 hours.
CREATE TABLE group_idempotency_keys (
    account_id BIGINT NOT NULL,
    key TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    message_id BIGINT NOT NULL REFERENCES group_messages (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX group_idempotency_keys_message ON group_idempotency_keys (message_id);
CREATE INDEX group_idempotency_keys_created ON group_idempotency_keys (created_at);
