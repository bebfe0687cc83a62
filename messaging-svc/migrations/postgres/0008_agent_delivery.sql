-- Carrying direct messages over XMTP: which accounts' installations belong to each MLS group
-- (so a new group message wakes only its members' receivers), and lookups by inbox and
-- installation key.

CREATE TABLE agent_groups (
    group_id BYTEA NOT NULL,
    account_id BIGINT NOT NULL,
    PRIMARY KEY (group_id, account_id)
);
CREATE INDEX agent_groups_account ON agent_groups (account_id);

CREATE INDEX agent_installations_inbox ON agent_installations (inbox_id);
