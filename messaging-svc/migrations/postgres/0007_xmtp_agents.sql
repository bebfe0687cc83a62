-- The XMTP agent engine: each account's XMTP installation, run by this service, and its MLS
-- state. Secret values are encrypted with the keyring (CLAWX_MASTER_KEY).

-- One installation per account.
CREATE TABLE agent_installations (
    account_id BIGINT PRIMARY KEY,
    inbox_id TEXT NOT NULL,
    -- lowercase 0x + 40 hex digits: the account's server-held wallet
    wallet_address TEXT NOT NULL,
    -- Ed25519 public key: the installation's id on XMTP and its MLS signature key
    installation_key BYTEA NOT NULL UNIQUE,
    -- the Ed25519 secret key, encrypted
    private_key BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    -- when the inbox and installation were published on the network (null: not yet)
    identity_published_at BIGINT,
    -- when the key package last uploaded expires (null: none uploaded)
    key_package_expires_at BIGINT
);
CREATE INDEX agent_installations_key_package ON agent_installations (key_package_expires_at);

-- openmls storage, per installation: the provider's key-value pairs, each value encrypted.
-- Rows of one installation change only under its lock (the installation row, FOR UPDATE).
CREATE TABLE agent_mls_state (
    account_id BIGINT NOT NULL,
    state_key BYTEA NOT NULL,
    state_value BYTEA NOT NULL,
    PRIMARY KEY (account_id, state_key)
);
