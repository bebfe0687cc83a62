//! Generated protocol types, gRPC clients and servers for every Clawx service, and the encoded
//! file descriptor set that server reflection needs.

/// Everything generated from `proto/`, one module per protobuf package.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/_includes.rs"));
}

pub use pb::clawx::common::v1 as common;
pub use pb::clawx::groups::v1 as groups;
pub use pb::clawx::identity::v1 as identity;
pub use pb::clawx::messaging::v1 as messaging;
pub use pb::clawx::verify::v1 as verify;

/// The encoded `FileDescriptorSet` of every `.proto` in this crate, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// Fully qualified names of the public Clawx gRPC services.
pub const PUBLIC_SERVICES: &[&str] = &[
    "clawx.identity.v1.IdentityService",
    "clawx.messaging.v1.MessagingService",
    "clawx.groups.v1.GroupsService",
    "clawx.groups.v1.BadgesService",
    "clawx.verify.v1.VerifyService",
];

/// Fully qualified names of the XMTP node services (served by messaging, forwarded by the
/// gateway without Clawx auth).
pub const XMTP_SERVICES: &[&str] = &["xmtp.mls.api.v1.MlsApi", "xmtp.identity.api.v1.IdentityApi"];

pub use pb::xmtp;
