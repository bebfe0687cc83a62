-- Spam reports: one per reporting account and reported wallet, filed when an account blocks a
-- peer. The spam check counts distinct reporters of an address (or of the account owning it).
CREATE TABLE dm_spam_reports (
    reporter_account_id BIGINT NOT NULL,
    -- lowercase 0x + 40 hex digits
    reported_address TEXT NOT NULL,
    -- the account here owning the address when it was reported, if any
    reported_account_id BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (reporter_account_id, reported_address)
);
CREATE INDEX dm_spam_reports_address ON dm_spam_reports (reported_address);
CREATE INDEX dm_spam_reports_account ON dm_spam_reports (reported_account_id);

-- First-contact rate: the conversations a party opened recently, found from either side.
CREATE INDEX dm_conversations_high ON dm_conversations (party_high, created_at);
CREATE INDEX dm_conversations_low ON dm_conversations (party_low, created_at);
