//! The XMTP v3 node served by the messaging service.

pub mod validate;
