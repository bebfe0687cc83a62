-- A group's commit log: the Ed25519 key it accepts (the signer of its first entry, as XMTP
-- clients read it) and how many entries it holds, both kept under the group's row lock.
ALTER TABLE xmtp_groups ADD COLUMN commit_log_public_key BLOB;
ALTER TABLE xmtp_groups ADD COLUMN commit_log_count INTEGER NOT NULL DEFAULT 0;
UPDATE xmtp_groups SET commit_log_count = (SELECT COUNT(*) FROM xmtp_commit_log c WHERE c.group_id = xmtp_groups.group_id);
