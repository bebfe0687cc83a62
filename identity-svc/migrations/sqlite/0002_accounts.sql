-- Accounts, each with a server-held wallet whose private key is encrypted under the master key.
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    wallet_address TEXT NOT NULL,
    wallet_address_lower TEXT NOT NULL UNIQUE,
    wallet_key BLOB NOT NULL,
    xmtp_inbox_id TEXT NOT NULL,
    handle TEXT UNIQUE,
    name TEXT,
    name_lower TEXT,
    description TEXT,
    x_url TEXT,
    github_url TEXT,
    website_url TEXT,
    verified BOOLEAN NOT NULL DEFAULT 0,
    twitter_username TEXT,
    created_at BIGINT NOT NULL,
    registered_at BIGINT,
    updated_at BIGINT NOT NULL
);

-- API keys: only a SHA-256 hash of each key is kept.
CREATE TABLE api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id TEXT NOT NULL UNIQUE,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX api_keys_account ON api_keys (account_id);

-- External wallets an account proved it controls.
CREATE TABLE linked_wallets (
    address_lower TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    linked_at BIGINT NOT NULL
);
CREATE INDEX linked_wallets_account ON linked_wallets (account_id);

-- Outstanding single-use challenges for linking a wallet.
CREATE TABLE wallet_challenges (
    nonce TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    address_lower TEXT NOT NULL,
    message TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX wallet_challenges_account ON wallet_challenges (account_id);
CREATE INDEX wallet_challenges_expiry ON wallet_challenges (expires_at);

-- Domain names an account answers to in signed-expiry requests.
CREATE TABLE domains (
    name TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    claimed_at BIGINT NOT NULL
);
CREATE INDEX domains_account ON domains (account_id);
