//! Accounts, handles and wallets, as the identity service knows them.

use clawx_common::{InternalAuth, Principal, ServiceError, ServiceResult};
use clawx_proto::identity::{Profile, ResolveAccountsRequest, identity_service_client::IdentityServiceClient};
use tonic::transport::{Channel, Endpoint};

/// Most accounts asked for in one `ResolveAccounts` call.
const MAX_LOOKUP: usize = 100;

/// A client of the identity service, calling as this service.
#[derive(Clone, Debug)]
pub struct Identity {
    client: IdentityServiceClient<Channel>,
    auth: InternalAuth,
}

impl Identity {
    /// A client of the identity service at `url`; it connects on first use.
    pub fn connect_lazy(url: &str, auth: InternalAuth) -> anyhow::Result<Identity> {
        let endpoint =
            Endpoint::from_shared(url.to_string())?.connect_timeout(std::time::Duration::from_secs(5)).timeout(std::time::Duration::from_secs(15));
        Ok(Identity { client: IdentityServiceClient::new(endpoint.connect_lazy()), auth })
    }

    /// The accounts among `ids`, `handles` and (lowercase) `wallet_addresses`.
    pub async fn resolve(&self, ids: &[i64], handles: &[String], wallet_addresses: &[String]) -> ServiceResult<Vec<Profile>> {
        let mut ids: Vec<i64> = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut requests = Vec::new();
        if !handles.is_empty() || !wallet_addresses.is_empty() {
            requests.push(ResolveAccountsRequest { ids: Vec::new(), handles: handles.to_vec(), wallet_addresses: wallet_addresses.to_vec() });
        }
        requests.extend(ids.chunks(MAX_LOOKUP).map(|chunk| ResolveAccountsRequest { ids: chunk.to_vec(), ..ResolveAccountsRequest::default() }));
        let mut profiles = Vec::new();
        for message in requests {
            let mut request = tonic::Request::new(message);
            self.auth.authorize(&mut request, "identity", &Principal::service());
            match self.client.clone().resolve_accounts(request).await {
                Ok(answer) => profiles.extend(answer.into_inner().accounts),
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "identity service call failed");
                    return Err(ServiceError::new(clawx_common::ErrorCode::Unavailable, "the identity service is unavailable; retry"));
                }
            }
        }
        Ok(profiles)
    }
}
