-- The one outstanding verification code of each account (a new one replaces it).
CREATE TABLE verification_codes (
    account_id BIGINT PRIMARY KEY,
    code TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Verified accounts and the X account that proved each. An X account proves one Clawx account:
-- by its stable user id when the tweet source gives one, by its username otherwise (oEmbed).
CREATE TABLE verifications (
    account_id BIGINT PRIMARY KEY,
    twitter_user_id TEXT UNIQUE,
    twitter_username TEXT NOT NULL,
    twitter_username_lower TEXT NOT NULL,
    tweet_id TEXT NOT NULL,
    verified_at BIGINT NOT NULL
);
CREATE INDEX verifications_username ON verifications (twitter_username_lower);

-- Accounts the expiry sweep is deleting: a replica holds a lease on each, so several replicas
-- share the work and a crashed one's accounts are taken over once its lease ends.
CREATE TABLE expiry_claims (
    account_id BIGINT PRIMARY KEY,
    owner TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);
