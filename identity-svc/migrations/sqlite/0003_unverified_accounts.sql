-- Unverified accounts by id, for the verify service's sweep of accounts past their
-- verification window.
CREATE INDEX accounts_unverified ON accounts (id) WHERE verified = FALSE;
