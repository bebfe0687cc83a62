//! Group messages on members' message streams. The groups service stores a group's messages
//! and, once one is committed, asks this service to put it on the live stream of every member
//! (`PublishGroupMessage`, reserved to the groups service). It goes out on each member's
//! mailbox channel (`msg.a.<id>`) as a notice outside the mailbox's sequence (id 0): the feed
//! delivers it to a stream that is listening and moves no stream's cursor, so direct messages
//! replay and resume exactly as before. Group messages are not replayed by the stream: a
//! member reads what it missed from the groups service (`GET /groups/:id/messages?after=`).

use clawx_common::{Principal, PubSub, ServiceError, ServiceResult};
use clawx_proto::messaging as pb;
use prost::Message as _;

use crate::dm::mailbox_channel;

/// The services that may publish group messages.
const PUBLISHERS: &[&str] = &["groups"];
/// Most members one call names.
pub const MAX_MEMBERS_PER_CALL: usize = 100_000;

/// Refuses callers other than the groups service.
pub fn authorize(principal: &Principal) -> ServiceResult<()> {
    if principal.is_service(PUBLISHERS) { Ok(()) } else { Err(ServiceError::forbidden("this call is reserved for the Clawx groups service")) }
}

/// Publishes `message` (a group message) on the mailbox channel of each of `member_ids`; how
/// many channels it went to.
pub async fn publish(pubsub: &PubSub, member_ids: &[i64], message: &pb::Message) -> ServiceResult<u32> {
    if message.group_id.as_deref().is_none_or(str::is_empty) {
        return Err(ServiceError::invalid("message.group_id", "a group message names its group"));
    }
    if member_ids.len() > MAX_MEMBERS_PER_CALL {
        return Err(ServiceError::invalid("member_ids", format!("at most {MAX_MEMBERS_PER_CALL} members per call")));
    }
    // The feed's notice: id and previous id 0 (outside the mailbox's sequence), then the
    // message, always inline since it is not in this service's database.
    let mut payload = Vec::with_capacity(16 + message.encoded_len());
    payload.extend_from_slice(&0i64.to_be_bytes());
    payload.extend_from_slice(&0i64.to_be_bytes());
    message.encode(&mut payload).expect("a Vec grows as needed");
    let mut published = 0;
    for member_id in member_ids {
        match pubsub.publish(&mailbox_channel(*member_id), &payload).await {
            Ok(()) => published += 1,
            Err(error) => tracing::warn!(%error, account.id = member_id, "group message not published to a member"),
        }
    }
    Ok(published)
}
