-- A message received over XMTP whose content is not text keeps its content type
-- (`authority/type:major.minor`, e.g. `xmtp.org/reaction:1.0`); its `content` is the fallback
-- text the sender gave. NULL: text (`xmtp.org/text:1.0`), as every message sent here is.

ALTER TABLE dm_messages ADD COLUMN content_type TEXT;
