//! The edge guard: one table decides, per operation — keyed by the gRPC method a call reaches,
//! whether it came over REST or over gRPC and grpc-web — who may call it, whether it creates
//! identities (limited per client IP), whether it revokes credentials (cached credentials are
//! dropped before the answer leaves), and which rate-limit bucket it counts against. The REST
//! router and the gRPC pass-through both call [`Gateway::admit`] and [`Gateway::settle`].

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::http::{HeaderMap, Request};
use clawx_common::{Backends, ErrorCode, Principal, ServiceError, cache::RateDecision};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{Authenticated, Authenticator},
    config::Config,
    context,
    limiter::{Limiter, StreamSlots, refused_error},
    upstream::{BadgesClient, GroupsClient, IdentityClient, MessagingClient, Upstreams, VerifyClient},
};

/// Who may call an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Clawx credentials are not read: the XMTP node (which learns the client's IP instead),
    /// and calls the request proves by itself (a wallet's signature); counted per client IP.
    Open,
    /// Anyone; credentials are checked when sent.
    Public,
    /// An authenticated account; anyone else gets 401 `UNAUTHORIZED`.
    Account,
}

/// The rate-limit bucket an operation counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// Per account, or per client IP for anonymous callers.
    Caller,
    /// XMTP node calls, per client IP.
    Xmtp,
}

/// What the edge does for an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub access: Access,
    /// Creates an identity: also limited per client IP (`CLAWX_RATE_LIMIT_CREATE_PER_MINUTE`).
    pub creates_identity: bool,
    /// Revokes credentials: the caller's cached credentials are dropped on this replica before
    /// the answer leaves (the identity service announces the revocation to the others).
    pub revokes_credentials: bool,
    pub bucket: Bucket,
}

impl Policy {
    /// Anyone may call; what the service decides is all that applies.
    pub const PUBLIC: Policy = Policy { access: Access::Public, creates_identity: false, revokes_credentials: false, bucket: Bucket::Caller };
    /// An account's own business.
    pub const ACCOUNT: Policy = Policy { access: Access::Account, ..Policy::PUBLIC };
    /// The XMTP node.
    pub const XMTP: Policy = Policy { access: Access::Open, bucket: Bucket::Xmtp, ..Policy::PUBLIC };
}

/// Operations whose policy is not [`Policy::PUBLIC`]. XMTP node methods (`/xmtp.*`) are all
/// [`Policy::XMTP`].
const OPERATIONS: &[(&str, Policy)] = &[
    ("/clawx.identity.v1.IdentityService/CreateAccount", Policy { creates_identity: true, ..Policy::PUBLIC }),
    ("/clawx.identity.v1.IdentityService/CreateAgent", Policy { creates_identity: true, ..Policy::PUBLIC }),
    ("/clawx.identity.v1.IdentityService/RegisterHandle", Policy::ACCOUNT),
    ("/clawx.identity.v1.IdentityService/GetMe", Policy::ACCOUNT),
    ("/clawx.identity.v1.IdentityService/UpdateMe", Policy::ACCOUNT),
    ("/clawx.identity.v1.IdentityService/CreateApiKey", Policy::ACCOUNT),
    ("/clawx.identity.v1.IdentityService/ListApiKeys", Policy::ACCOUNT),
    ("/clawx.identity.v1.IdentityService/RevokeApiKey", Policy { revokes_credentials: true, ..Policy::ACCOUNT }),
    ("/clawx.identity.v1.IdentityService/GetWalletChallenge", Policy::ACCOUNT),
    ("/clawx.identity.v1.IdentityService/LinkWallet", Policy::ACCOUNT),
    ("/clawx.identity.v1.IdentityService/ListWallets", Policy::ACCOUNT),
    ("/clawx.identity.v1.IdentityService/UnlinkWallet", Policy { revokes_credentials: true, ..Policy::ACCOUNT }),
    ("/clawx.identity.v1.IdentityService/ClaimDomain", Policy::ACCOUNT),
    ("/clawx.identity.v1.IdentityService/ListDomains", Policy::ACCOUNT),
    ("/clawx.identity.v1.IdentityService/ReleaseDomain", Policy { revokes_credentials: true, ..Policy::ACCOUNT }),
    ("/clawx.messaging.v1.MessagingService/SendDirectMessage", Policy::ACCOUNT),
    ("/clawx.messaging.v1.MessagingService/ListInbox", Policy::ACCOUNT),
    ("/clawx.messaging.v1.MessagingService/ListConversation", Policy::ACCOUNT),
    ("/clawx.messaging.v1.MessagingService/StreamMessages", Policy::ACCOUNT),
    ("/clawx.messaging.v1.MessagingService/SetConsent", Policy::ACCOUNT),
    ("/clawx.verify.v1.VerifyService/StartVerification", Policy::ACCOUNT),
    // A verified account's cached credentials still say unverified: dropped before the answer.
    ("/clawx.verify.v1.VerifyService/CompleteVerification", Policy { revokes_credentials: true, ..Policy::ACCOUNT }),
    ("/clawx.verify.v1.VerifyService/GetVerification", Policy::ACCOUNT),
    ("/clawx.messaging.v1.MessagingService/RegisterPush", Policy::ACCOUNT),
    ("/clawx.messaging.v1.MessagingService/SyncXmtp", Policy::ACCOUNT),
    ("/clawx.groups.v1.BadgesService/CreateBadge", Policy::ACCOUNT),
    // The wallet's signature proves the address: credentials are not read, calls count per IP.
    ("/clawx.groups.v1.BadgesService/JoinGatedGroup", Policy { access: Access::Open, ..Policy::PUBLIC }),
    ("/clawx.groups.v1.BadgesService/LeaveGatedGroup", Policy { access: Access::Open, ..Policy::PUBLIC }),
    ("/clawx.groups.v1.BadgesService/SendBadgeNotification", Policy::ACCOUNT),
    ("/clawx.groups.v1.BadgesService/GetNotification", Policy::ACCOUNT),
    ("/clawx.groups.v1.GroupsService/CreateGroup", Policy::ACCOUNT),
    ("/clawx.groups.v1.GroupsService/UpdateGroup", Policy::ACCOUNT),
    ("/clawx.groups.v1.GroupsService/DeleteGroup", Policy::ACCOUNT),
    ("/clawx.groups.v1.GroupsService/JoinGroup", Policy::ACCOUNT),
    ("/clawx.groups.v1.GroupsService/LeaveGroup", Policy::ACCOUNT),
    ("/clawx.groups.v1.GroupsService/SendGroupMessage", Policy::ACCOUNT),
    ("/clawx.groups.v1.GroupsService/ListGroupMessages", Policy::ACCOUNT),
];

/// Operations only verified accounts may call when verification is required
/// (`CLAWX_REQUIRE_VERIFICATION`): 403 `NOT_VERIFIED` otherwise. Sending messages and creating
/// groups.
const VERIFIED_OPERATIONS: &[&str] = &["/clawx.messaging.v1.MessagingService/SendDirectMessage", "/clawx.groups.v1.GroupsService/CreateGroup"];

/// Whether a gRPC method is for verified accounts only (when verification is required).
pub fn requires_verification(method: &str) -> bool {
    VERIFIED_OPERATIONS.contains(&method)
}

/// The policy of a gRPC method (`/package.Service/Method`).
pub fn policy(method: &str) -> Policy {
    if method.starts_with("/xmtp.") {
        return Policy::XMTP;
    }
    OPERATIONS.iter().find(|(name, _)| *name == method).map_or(Policy::PUBLIC, |(_, policy)| *policy)
}

/// A call the guard let through.
#[derive(Clone, Debug)]
pub struct Admitted {
    pub principal: Principal,
    pub policy: Policy,
    /// The caller's bucket after this call, for rate-limit headers (none when unlimited).
    pub decision: Option<RateDecision>,
}

/// A call the guard turned away.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub error: ServiceError,
    /// The caller's bucket, for rate-limit headers: the refusing one when over a limit.
    pub decision: Option<RateDecision>,
}

impl Refusal {
    fn denied(error: ServiceError) -> Refusal {
        Refusal { error, decision: None }
    }

    fn limited(decision: RateDecision) -> Refusal {
        Refusal { error: refused_error(&decision), decision: Some(decision) }
    }
}

/// The gateway's shared state: upstream clients, limiter, authenticator and the guard over them.
#[derive(Debug)]
pub struct Gateway {
    pub upstreams: Upstreams,
    pub backends: Backends,
    pub config: Config,
    pub started: Instant,
    pub authenticator: Authenticator,
    pub limiter: Limiter,
    /// Open long-lived streams per client IP.
    pub streams: Arc<StreamSlots>,
    /// Fires when the gateway stops: long-lived REST streams end so the server can drain.
    pub shutdown: CancellationToken,
    /// The last `/status` answer, reused for a second.
    pub status_cache: Mutex<Option<(Instant, serde_json::Value)>>,
}

impl Gateway {
    /// The client's IP address (see [`context::client_ip`]).
    pub fn client_ip<B>(&self, request: &Request<B>) -> String {
        context::client_ip(self.config.trust_forwarded_for, request)
    }

    /// Decides on a call of the gRPC `method` with `headers` from `client_ip`: authenticates the
    /// caller (unless the operation is open), then counts it against the creation limit and its
    /// bucket, then checks that an account calls what needs one.
    pub async fn admit(&self, method: &str, headers: &HeaderMap, client_ip: &str) -> Result<Admitted, Refusal> {
        let policy = policy(method);
        let limits = &self.limiter.limits;
        let Authenticated { principal, verified } = match policy.access {
            // XMTP clients carry no Clawx credentials; the node is protected by client IP instead.
            Access::Open => Authenticated { principal: Principal::anonymous(Some(client_ip.to_string())), verified: false },
            Access::Public | Access::Account => self.authenticator.authenticate(&self.limiter, headers, client_ip).await.map_err(Refusal::denied)?,
        };
        if policy.creates_identity {
            self.limiter.limit(&format!("create:{client_ip}"), limits.create_per_minute).await.map_err(Refusal::limited)?;
        }
        let decision = match policy.bucket {
            Bucket::Caller => self.limiter.limit_principal(&principal).await,
            Bucket::Xmtp => self.limiter.limit(&format!("xmtp:{client_ip}"), limits.xmtp_per_minute).await,
        }
        .map_err(Refusal::limited)?;
        if policy.access == Access::Account && principal.account_id.is_none() {
            let error = ServiceError::unauthorized("authentication required: send X-Api-Key (or Authorization: Bearer) or a signed request");
            return Err(Refusal { error, decision });
        }
        if self.config.require_verification && !verified && requires_verification(method) {
            let error = ServiceError::new(
                ErrorCode::NotVerified,
                "this account is not verified: prove who runs it with POST /verify/start and POST /verify/complete",
            );
            return Err(Refusal { error, decision });
        }
        Ok(Admitted { principal, policy, decision })
    }

    /// Called once the service has answered an admitted call, before the answer leaves.
    pub fn settle(&self, admitted: &Admitted) {
        if admitted.policy.revokes_credentials
            && let Some(account_id) = admitted.principal.account_id
        {
            self.authenticator.cache.revoke_account(account_id);
        }
    }

    /// The identity service, acting for `principal`.
    pub fn identity(&self, principal: &Principal) -> IdentityClient {
        self.upstreams.identity(principal)
    }

    /// The messaging service, acting for `principal`.
    pub fn messaging(&self, principal: &Principal) -> MessagingClient {
        self.upstreams.messaging(principal)
    }

    /// The groups service, acting for `principal`.
    pub fn groups(&self, principal: &Principal) -> GroupsClient {
        self.upstreams.groups(principal)
    }

    /// The verify service, acting for `principal`.
    pub fn verify(&self, principal: &Principal) -> VerifyClient {
        self.upstreams.verify(principal)
    }

    /// The groups service's badges, acting for `principal`.
    pub fn badges(&self, principal: &Principal) -> BadgesClient {
        self.upstreams.badges(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_one_policy() {
        assert_eq!(policy("/xmtp.mls.api.v1.MlsApi/SendGroupMessages"), Policy::XMTP);
        assert!(policy("/clawx.identity.v1.IdentityService/CreateAccount").creates_identity);
        assert!(policy("/clawx.identity.v1.IdentityService/UnlinkWallet").revokes_credentials);
        assert_eq!(policy("/clawx.identity.v1.IdentityService/GetUser"), Policy::PUBLIC);
        assert_eq!(policy("/clawx.identity.v1.IdentityService/GetMe").access, Access::Account);
        let mut names: Vec<&str> = OPERATIONS.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), OPERATIONS.len(), "one entry per method");
    }

    #[test]
    fn sending_and_creating_groups_need_verification_when_required() {
        assert!(requires_verification("/clawx.messaging.v1.MessagingService/SendDirectMessage"));
        assert!(requires_verification("/clawx.groups.v1.GroupsService/CreateGroup"));
        assert!(!requires_verification("/clawx.messaging.v1.MessagingService/ListInbox"));
        assert!(!requires_verification("/clawx.verify.v1.VerifyService/StartVerification"));
        assert!(policy("/clawx.verify.v1.VerifyService/CompleteVerification").revokes_credentials);
    }

    #[test]
    fn every_listed_operation_is_a_real_method() {
        use prost::Message;
        let descriptors = prost_types::FileDescriptorSet::decode(clawx_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let mut methods = Vec::new();
        for file in &descriptors.file {
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
        for (name, _) in OPERATIONS {
            assert!(methods.iter().any(|method| method == name), "{name} is not a gRPC method");
        }
    }
}
