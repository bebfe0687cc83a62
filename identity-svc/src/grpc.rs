//! gRPC adapter of the identity service: unwraps requests, calls the domain, converts results.

use clawx_common::{AuthMethod, ErrorCode, Principal, ServiceContext, ServiceError, auth::principal_of};
use clawx_proto::{
    common::{GetStatusRequest, ServiceStatus},
    identity::{self as pb, identity_service_server::IdentityService},
};
use tonic::{Request, Response, Status};

use crate::{
    domain::{Authenticated, CreatedAccount, Identity, ProfileUpdate, Registration},
    store::{AccountRecord, ApiKeyRecord, DomainRecord, LinkedWalletRecord},
};

/// The audience name of the messaging service, the only caller of `SignXmtpIdentityUpdate`.
const MESSAGING_SERVICE: &str = "messaging";

pub struct IdentityGrpc {
    context: ServiceContext,
    identity: Identity,
}

impl IdentityGrpc {
    pub fn new(context: ServiceContext, identity: Identity) -> Self {
        IdentityGrpc { context, identity }
    }
}

fn account_of<T>(request: &Request<T>) -> Result<i64, Status> {
    principal_of(request).require_account().map_err(Status::from)
}

/// The account of a call that manages credentials (API keys, wallets, domains). Those need an
/// API key: a signed-expiry request is a bearer token valid for up to 30 days, and must not
/// mint or drop credentials that outlive it (`API_KEY_REQUIRED`).
fn api_key_account_of<T>(request: &Request<T>) -> Result<i64, Status> {
    let principal = principal_of(request);
    let account_id = principal.require_account()?;
    if principal.method != AuthMethod::ApiKey {
        return Err(ServiceError::new(
            ErrorCode::ApiKeyRequired,
            "managing API keys, wallets and domains needs an API key; a signed-expiry request cannot",
        )
        .into());
    }
    Ok(account_id)
}

/// Calls reserved to the verify service (setting verification, deleting unverified accounts).
fn require_verify_service<T>(request: &Request<T>) -> Result<(), Status> {
    if !principal_of(request).is_service(&["verify"]) {
        return Err(ServiceError::forbidden("this call is reserved for the Clawx verify service").into());
    }
    Ok(())
}

/// Calls meant for other Clawx services only (the gateway never mints service principals for
/// its clients).
fn require_service<T>(request: &Request<T>) -> Result<Principal, Status> {
    let principal = principal_of(request);
    if principal.method != AuthMethod::Service {
        return Err(ServiceError::forbidden("this call is reserved for Clawx services").into());
    }
    Ok(principal)
}

pub fn profile(account: AccountRecord) -> pb::Profile {
    pb::Profile {
        id: account.id,
        wallet_address: account.wallet_address,
        handle: account.handle,
        name: account.name,
        description: account.description,
        x_url: account.x_url,
        github_url: account.github_url,
        website_url: account.website_url,
        xmtp_inbox_id: account.xmtp_inbox_id,
        created_at_ms: account.created_at,
        verified: account.verified,
        twitter_username: account.twitter_username,
    }
}

fn api_key(key: ApiKeyRecord) -> pb::ApiKey {
    pb::ApiKey { id: key.id, name: key.name, prefix: key.prefix, created_at_ms: key.created_at, last_used_at_ms: key.last_used_at }
}

fn wallet(wallet: LinkedWalletRecord) -> pb::LinkedWallet {
    pb::LinkedWallet { address: wallet.address, linked_at_ms: wallet.linked_at }
}

fn domain(domain: DomainRecord) -> pb::Domain {
    pb::Domain { name: domain.name, claimed_at_ms: domain.claimed_at }
}

fn authenticated(result: Authenticated) -> pb::AuthenticatedAccount {
    pb::AuthenticatedAccount {
        account_id: result.account.id,
        handle: result.account.handle,
        wallet_address: result.account.wallet_address,
        verified: result.account.verified,
        valid_until_ms: result.valid_until_ms,
    }
}

fn created_account(created: CreatedAccount) -> pb::CreateAccountResponse {
    let account = profile(created.account);
    pb::CreateAccountResponse {
        api_key: created.api_key,
        wallet_address: account.wallet_address.clone(),
        xmtp_inbox_id: account.xmtp_inbox_id.clone(),
        account_id: account.id,
        api_key_id: created.api_key_id,
        account: Some(account),
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl IdentityService for IdentityGrpc {
    async fn get_status(&self, _request: Request<GetStatusRequest>) -> Reply<ServiceStatus> {
        Ok(Response::new(self.context.status().await))
    }

    async fn create_account(&self, _request: Request<pb::CreateAccountRequest>) -> Reply<pb::CreateAccountResponse> {
        let created = self.identity.create_account().await?;
        Ok(Response::new(created_account(created)))
    }

    async fn create_agent(&self, request: Request<pb::CreateAgentRequest>) -> Reply<pb::CreateAccountResponse> {
        let message = request.into_inner();
        let created = self.identity.create_account_with(Some((message.handle, message.name))).await?;
        Ok(Response::new(created_account(created)))
    }

    async fn register_handle(&self, request: Request<pb::RegisterHandleRequest>) -> Reply<pb::RegisterHandleResponse> {
        let account_id = account_of(&request)?;
        let message = request.into_inner();
        let registration = Registration {
            handle: message.handle,
            name: message.name,
            description: message.description,
            x_url: message.x_url,
            github_url: message.github_url,
            website_url: message.website_url,
        };
        let account = self.identity.register(account_id, registration).await?;
        Ok(Response::new(pb::RegisterHandleResponse { handle: account.handle.unwrap_or_default(), wallet_address: account.wallet_address }))
    }

    async fn get_me(&self, request: Request<pb::GetMeRequest>) -> Reply<pb::Profile> {
        let account_id = account_of(&request)?;
        Ok(Response::new(profile(self.identity.me(account_id).await?)))
    }

    async fn update_me(&self, request: Request<pb::UpdateMeRequest>) -> Reply<pb::Profile> {
        let account_id = account_of(&request)?;
        let message = request.into_inner();
        let update = ProfileUpdate {
            name: message.name,
            description: message.description,
            x_url: message.x_url,
            github_url: message.github_url,
            website_url: message.website_url,
        };
        Ok(Response::new(profile(self.identity.update_me(account_id, update).await?)))
    }

    async fn list_users(&self, request: Request<pb::ListUsersRequest>) -> Reply<pb::ListUsersResponse> {
        let message = request.into_inner();
        let users = self.identity.list_users(&message.search, message.limit, message.offset).await?;
        Ok(Response::new(pb::ListUsersResponse { users: users.into_iter().map(profile).collect() }))
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Reply<pb::Profile> {
        Ok(Response::new(profile(self.identity.user(&request.into_inner().handle).await?)))
    }

    async fn create_api_key(&self, request: Request<pb::CreateApiKeyRequest>) -> Reply<pb::CreateApiKeyResponse> {
        let account_id = api_key_account_of(&request)?;
        let (key, secret) = self.identity.create_key(account_id, &request.into_inner().name).await?;
        Ok(Response::new(pb::CreateApiKeyResponse { key: Some(api_key(key)), api_key: secret }))
    }

    async fn list_api_keys(&self, request: Request<pb::ListApiKeysRequest>) -> Reply<pb::ListApiKeysResponse> {
        let account_id = account_of(&request)?;
        let keys = self.identity.list_keys(account_id).await?;
        Ok(Response::new(pb::ListApiKeysResponse { keys: keys.into_iter().map(api_key).collect() }))
    }

    async fn revoke_api_key(&self, request: Request<pb::RevokeApiKeyRequest>) -> Reply<pb::RevokeApiKeyResponse> {
        let account_id = api_key_account_of(&request)?;
        self.identity.revoke_key(account_id, &request.into_inner().id).await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {}))
    }

    async fn get_wallet_challenge(&self, request: Request<pb::GetWalletChallengeRequest>) -> Reply<pb::WalletChallenge> {
        let account_id = account_of(&request)?;
        let challenge = self.identity.wallet_challenge(account_id, &request.into_inner().address).await?;
        Ok(Response::new(pb::WalletChallenge { message: challenge.message, nonce: challenge.nonce, expires_at_ms: challenge.expires_at_ms }))
    }

    async fn link_wallet(&self, request: Request<pb::LinkWalletRequest>) -> Reply<pb::LinkedWallet> {
        let account_id = api_key_account_of(&request)?;
        let message = request.into_inner();
        let linked = self.identity.link_wallet(account_id, &message.address, &message.message, &message.signature).await?;
        Ok(Response::new(wallet(linked)))
    }

    async fn list_wallets(&self, request: Request<pb::ListWalletsRequest>) -> Reply<pb::ListWalletsResponse> {
        let account_id = account_of(&request)?;
        let wallets = self.identity.list_wallets(account_id).await?;
        Ok(Response::new(pb::ListWalletsResponse { wallets: wallets.into_iter().map(wallet).collect() }))
    }

    async fn unlink_wallet(&self, request: Request<pb::UnlinkWalletRequest>) -> Reply<pb::UnlinkWalletResponse> {
        let account_id = api_key_account_of(&request)?;
        self.identity.unlink_wallet(account_id, &request.into_inner().address).await?;
        Ok(Response::new(pb::UnlinkWalletResponse {}))
    }

    async fn claim_domain(&self, request: Request<pb::ClaimDomainRequest>) -> Reply<pb::Domain> {
        let account_id = api_key_account_of(&request)?;
        Ok(Response::new(domain(self.identity.claim_domain(account_id, &request.into_inner().name).await?)))
    }

    async fn list_domains(&self, request: Request<pb::ListDomainsRequest>) -> Reply<pb::ListDomainsResponse> {
        let account_id = account_of(&request)?;
        let domains = self.identity.list_domains(account_id).await?;
        Ok(Response::new(pb::ListDomainsResponse { domains: domains.into_iter().map(domain).collect() }))
    }

    async fn release_domain(&self, request: Request<pb::ReleaseDomainRequest>) -> Reply<pb::ReleaseDomainResponse> {
        let account_id = api_key_account_of(&request)?;
        self.identity.release_domain(account_id, &request.into_inner().name).await?;
        Ok(Response::new(pb::ReleaseDomainResponse {}))
    }

    async fn get_signature_message(&self, request: Request<pb::GetSignatureMessageRequest>) -> Reply<pb::SignatureMessage> {
        let message = request.into_inner();
        let (text, domain) = self.identity.signature_message(&message.domain, message.expiry, message.device).await?;
        Ok(Response::new(pb::SignatureMessage { message: text, domain, expiry: message.expiry }))
    }

    async fn authenticate(&self, request: Request<pb::AuthenticateRequest>) -> Reply<pb::AuthenticatedAccount> {
        require_service(&request)?;
        let result = self.identity.authenticate_key(&request.into_inner().api_key).await?;
        Ok(Response::new(authenticated(result)))
    }

    async fn authenticate_signature(&self, request: Request<pb::AuthenticateSignatureRequest>) -> Reply<pb::AuthenticatedAccount> {
        require_service(&request)?;
        let message = request.into_inner();
        let result = self.identity.authenticate_signature(&message.domain, &message.expires, &message.signature).await?;
        Ok(Response::new(authenticated(result)))
    }

    async fn resolve_accounts(&self, request: Request<pb::ResolveAccountsRequest>) -> Reply<pb::ResolveAccountsResponse> {
        require_service(&request)?;
        let message = request.into_inner();
        let accounts = self.identity.resolve(&message.ids, &message.handles, &message.wallet_addresses).await?;
        Ok(Response::new(pb::ResolveAccountsResponse { accounts: accounts.into_iter().map(profile).collect() }))
    }

    async fn set_verification(&self, request: Request<pb::SetVerificationRequest>) -> Reply<pb::Profile> {
        require_verify_service(&request)?;
        let message = request.into_inner();
        let account = self.identity.set_verification(message.account_id, message.verified, message.twitter_username.as_deref()).await?;
        Ok(Response::new(profile(account)))
    }

    async fn list_unverified_accounts(&self, request: Request<pb::ListUnverifiedAccountsRequest>) -> Reply<pb::ListUnverifiedAccountsResponse> {
        require_verify_service(&request)?;
        let message = request.into_inner();
        let accounts = self.identity.unverified_accounts(message.created_before_ms, message.after_id, message.limit).await?;
        Ok(Response::new(pb::ListUnverifiedAccountsResponse { accounts: accounts.into_iter().map(profile).collect() }))
    }

    async fn delete_unverified_account(&self, request: Request<pb::DeleteUnverifiedAccountRequest>) -> Reply<pb::DeleteUnverifiedAccountResponse> {
        require_verify_service(&request)?;
        let message = request.into_inner();
        let deleted = self.identity.delete_unverified_account(message.account_id, message.created_before_ms).await?;
        Ok(Response::new(pb::DeleteUnverifiedAccountResponse { deleted }))
    }

    async fn sign_xmtp_identity_update(&self, request: Request<pb::SignXmtpIdentityUpdateRequest>) -> Reply<pb::SignXmtpIdentityUpdateResponse> {
        // Only the messaging service runs accounts' XMTP clients; no other caller, the gateway
        // included, may have an account's wallet sign anything.
        if !principal_of(&request).is_service(&[MESSAGING_SERVICE]) {
            return Err(ServiceError::forbidden("only the messaging service may have a wallet sign XMTP identity updates").into());
        }
        let message = request.into_inner();
        let (signature, account) = self.identity.sign_xmtp_identity_update(message.account_id, &message.signature_text).await?;
        Ok(Response::new(pb::SignXmtpIdentityUpdateResponse {
            signature,
            wallet_address: account.wallet_address.to_ascii_lowercase(),
            xmtp_inbox_id: account.xmtp_inbox_id,
        }))
    }
}
