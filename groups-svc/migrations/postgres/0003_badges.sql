-- Badges: a code and a holding rule on an EVM chain. The account that created a badge is its
-- partner, the only one that may notify its members. Amounts and token ids are decimal text
-- (uint256 does not fit a column type of either dialect).
CREATE TABLE badges (
    code TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    chain_id BIGINT NOT NULL,
    contract TEXT NOT NULL,
    standard TEXT NOT NULL,
    token_id TEXT,
    min_balance TEXT NOT NULL,
    partner_account_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The token-gated group of a badge (at most one each).
CREATE TABLE gated_groups (
    id TEXT PRIMARY KEY,
    badge_code TEXT NOT NULL UNIQUE REFERENCES badges (code),
    created_at BIGINT NOT NULL
);

-- Members of gated groups: wallet addresses (lowercase hex) that proved the signature and the
-- holding. checked_at is when the re-check last took the member (joining counts as a check).
CREATE TABLE gated_members (
    group_id TEXT NOT NULL REFERENCES gated_groups (id),
    address TEXT NOT NULL,
    joined_at BIGINT NOT NULL,
    checked_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, address)
);
CREATE INDEX gated_members_due ON gated_members (checked_at);

-- Partner notifications, and one delivery per member of the group when it was sent. A
-- delivery is claimed by pushing next_attempt_at to the end of a lease and counting the
-- attempt, so a stopped worker's deliveries are taken over once the lease ends; the direct
-- message's idempotency key (notification id and address) makes a repeated send harmless.
CREATE TABLE badge_notifications (
    id TEXT PRIMARY KEY,
    badge_code TEXT NOT NULL REFERENCES badges (code),
    partner_account_id BIGINT NOT NULL,
    subject TEXT NOT NULL,
    content TEXT NOT NULL,
    recipients BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX badge_notifications_partner ON badge_notifications (partner_account_id, created_at);

CREATE TABLE badge_deliveries (
    id BIGSERIAL PRIMARY KEY,
    notification_id TEXT NOT NULL REFERENCES badge_notifications (id),
    address TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    UNIQUE (notification_id, address)
);
CREATE INDEX badge_deliveries_due ON badge_deliveries (state, next_attempt_at);
