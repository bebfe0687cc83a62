//! What a batch finds before it writes ([`Found`]) and what it writes once its mailboxes are
//! locked and its messages built ([`Writes`], planned once in Rust for both dialects).
//! PostgreSQL finds in one statement and writes in one (arrays into a data-modifying `WITH`);
//! SQLite uses a few multi-row statements under its single writer lock.

use std::collections::{BTreeMap, HashMap};

use clawx_common::storage::placeholders;

use super::{Party, StoredMessage};
use crate::dm::consent::TOPIC_PREFIX;

/// Rows per multi-row statement (at most 11 parameters each: well within both dialects'
/// limits).
pub const ROWS_PER_STATEMENT: usize = 256;

/// `($1, $2), ($3, $4), ...` for `rows` rows of `columns` parameters.
pub fn values(rows: usize, columns: usize) -> String {
    (0..rows).map(|row| format!("({})", placeholders(1 + row * columns, columns))).collect::<Vec<_>>().join(", ")
}

/// What a dialect's `find` returns for a batch.
#[derive(Debug, Default)]
pub struct Found {
    /// The newest message id of each existing mailbox of the batch's accounts, locked.
    pub heads: BTreeMap<i64, i64>,
    /// The batch's message ids, in increasing order, when every mailbox existed (taken under
    /// their locks); `None` otherwise (they are taken once the missing mailboxes are locked).
    pub ids: Option<Vec<i64>>,
    /// The ids of the existing conversations among those asked for.
    pub conversations: HashMap<(String, String), i64>,
}

/// An account's side of a conversation, at its newest message of the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub account_id: i64,
    /// `a:<id>` or `w:<address>`.
    pub peer: String,
    pub conversation_id: i64,
    pub last_message_id: i64,
}

/// A message whose recipient (an account here) may have registered for notifications.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub account_id: i64,
    pub message_id: i64,
    /// `dm:<conversation id>`, matched against registered topic keys (besides `inbox`).
    pub topic_key: String,
    /// The sender's party key: no notification when the recipient denied it.
    pub peer: String,
    /// The conversation's topic, as the job reports it.
    pub topic: String,
    pub at: i64,
}

/// Every row a batch writes besides conversations and idempotency keys.
#[derive(Debug)]
pub struct Writes<'a> {
    pub messages: &'a [StoredMessage],
    /// Per message, its XMTP message id (received messages only).
    pub network_ids: Vec<Option<&'a str>>,
    /// (message id, due at): sends wait in the outbox; received messages are delivered already.
    pub outbox: Vec<(i64, i64)>,
    /// (account id, message id) for each account side of each message.
    pub mailbox_entries: Vec<(i64, i64)>,
    /// Each (account, peer) once, at its newest message: one upsert may not touch a row twice.
    pub memberships: Vec<Membership>,
    pub notifications: Vec<Notification>,
    /// (account id, newest message id) of each mailbox the batch entered.
    pub heads: Vec<(i64, i64)>,
}

fn sender(message: &StoredMessage) -> Option<Party> {
    message.sender_account_id.map(Party::Account).or_else(|| message.sender_address.clone().map(Party::Wallet))
}

fn recipient(message: &StoredMessage) -> Option<Party> {
    message.recipient_account_id.map(Party::Account).or_else(|| message.recipient_address.clone().map(Party::Wallet))
}

impl<'a> Writes<'a> {
    /// The writes of `messages` (in id order), with `network_ids` beside them (empty for sends)
    /// and the mailbox `heads` they moved.
    pub fn plan(messages: &'a [StoredMessage], network_ids: Vec<Option<&'a str>>, heads: Vec<(i64, i64)>) -> Writes<'a> {
        let network_ids = if network_ids.is_empty() { vec![None; messages.len()] } else { network_ids };
        let outbox = messages.iter().filter(|message| message.delivery == "stored").map(|message| (message.id, message.sent_at)).collect();
        let mailbox_entries = messages.iter().flat_map(|message| message.accounts().map(|account_id| (account_id, message.id))).collect();
        let mut memberships: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
        let mut notifications = Vec::new();
        for message in messages {
            let (sender, recipient) = (sender(message), recipient(message));
            if let (Some(account_id), Some(peer)) = (message.sender_account_id, &recipient) {
                memberships.insert((account_id, peer.key()), (message.conversation_id, message.id));
            }
            if let (Some(account_id), Some(peer)) = (message.recipient_account_id, &sender) {
                memberships.insert((account_id, peer.key()), (message.conversation_id, message.id));
            }
            if let Some(account_id) = message.recipient_account_id {
                notifications.push(Notification {
                    account_id,
                    message_id: message.id,
                    topic_key: format!("dm:{}", message.conversation_id),
                    peer: sender.map(|party| party.key()).unwrap_or_default(),
                    topic: format!("{TOPIC_PREFIX}{}", message.conversation_id),
                    at: message.sent_at,
                });
            }
        }
        let memberships = memberships
            .into_iter()
            .map(|((account_id, peer), (conversation_id, last_message_id))| Membership { account_id, peer, conversation_id, last_message_id })
            .collect();
        Writes { messages, network_ids, outbox, mailbox_entries, memberships, notifications, heads }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: i64, conversation_id: i64, sender: i64, recipient: Party, delivery: &str) -> StoredMessage {
        StoredMessage {
            id,
            conversation_id,
            sender_account_id: Some(sender),
            sender_address: None,
            recipient_account_id: recipient.account_id(),
            recipient_address: recipient.address().map(str::to_string),
            content: "hi".to_string(),
            sent_at: 1_000 + id,
            delivery: delivery.to_string(),
            delivery_error: None,
            content_type: None,
        }
    }

    #[test]
    fn a_plan_keeps_each_membership_once_at_its_newest_message() {
        let wallet = Party::Wallet("0x00000000000000000000000000000000000000aa".to_string());
        let messages =
            [message(5, 1, 1, Party::Account(2), "stored"), message(6, 2, 1, wallet.clone(), "stored"), message(7, 1, 2, Party::Account(1), "sent")];
        let writes = Writes::plan(&messages, Vec::new(), vec![(1, 7), (2, 7)]);
        assert_eq!(writes.network_ids, vec![None, None, None]);
        assert_eq!(writes.outbox, vec![(5, 1_005), (6, 1_006)]);
        assert_eq!(writes.mailbox_entries, vec![(1, 5), (2, 5), (1, 6), (2, 7), (1, 7)], "sender first, then recipient");
        let memberships: Vec<(i64, &str, i64, i64)> =
            writes.memberships.iter().map(|m| (m.account_id, m.peer.as_str(), m.conversation_id, m.last_message_id)).collect();
        assert_eq!(memberships, vec![(1, "a:2", 1, 7), (1, "w:0x00000000000000000000000000000000000000aa", 2, 6), (2, "a:1", 1, 7)]);
        let notified: Vec<(i64, i64, &str, &str)> =
            writes.notifications.iter().map(|n| (n.account_id, n.message_id, n.topic_key.as_str(), n.peer.as_str())).collect();
        assert_eq!(notified, vec![(2, 5, "dm:1", "a:1"), (1, 7, "dm:1", "a:2")]);
        assert_eq!(writes.notifications[0].topic, format!("{TOPIC_PREFIX}1"));
    }
}
