//! Reading token balances on EVM chains: one alloy JSON-RPC provider per configured chain id
//! (`CLAWX_CHAIN_RPC_<chainId>`), every call bounded by a timeout, results cached briefly.
//!
//! A chain that cannot be asked (connection refused, timeout, an RPC error other than a revert,
//! an answer that does not decode) is [`ChainError::Unavailable`]: the caller answers 503
//! `CHAIN_UNAVAILABLE` and never guesses a balance. A revert of `ownerOf` is an answer: the token
//! does not exist (or was burned), so nobody owns it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use alloy_network::Ethereum;
use alloy_primitives::{Address, Bytes, U256};
use alloy_provider::{Provider, RootProvider};
use alloy_rpc_client::RpcClient;
use alloy_rpc_types_eth::{BlockId, TransactionInput, TransactionRequest};
use alloy_sol_types::{SolCall, sol};
use alloy_transport::{RpcError, TransportErrorKind};

use super::rules::{HoldingRule, Standard};

sol! {
    interface IERC20 {
        function balanceOf(address owner) external view returns (uint256);
    }
    interface IERC721 {
        function balanceOf(address owner) external view returns (uint256);
        function ownerOf(uint256 tokenId) external view returns (address);
    }
    interface IERC1155 {
        function balanceOf(address account, uint256 id) external view returns (uint256);
    }
}

/// Most cached balances per replica.
const CACHE_CAPACITY: usize = 10_000;

/// Why a balance could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// No RPC is configured for the chain id.
    #[error("no RPC is configured for chain {0}")]
    NotConfigured(u64),
    /// The chain did not answer usefully in time.
    #[error("chain {chain_id} is unavailable: {reason}")]
    Unavailable { chain_id: u64, reason: String },
}

/// What a call answered.
enum CallOutcome {
    Returned(Bytes),
    Reverted,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    rule: HoldingRule,
    holder: Address,
}

/// The configured chains and the balance cache.
#[derive(Clone)]
pub struct Chains {
    providers: Arc<HashMap<u64, RootProvider<Ethereum>>>,
    timeout: Duration,
    cache_ttl: Duration,
    cache: Arc<Mutex<HashMap<CacheKey, (Instant, U256)>>>,
}

impl std::fmt::Debug for Chains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&u64> = self.providers.keys().collect();
        ids.sort();
        f.debug_struct("Chains").field("chain_ids", &ids).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Chains {
    /// Providers for `rpc_urls` (chain id → URL); nothing connects until the first call.
    pub fn new(rpc_urls: &BTreeMap<u64, String>, timeout: Duration, cache_ttl: Duration) -> anyhow::Result<Chains> {
        let mut providers = HashMap::new();
        for (chain_id, url) in rpc_urls {
            let parsed: url::Url = url.parse().map_err(|error| anyhow::anyhow!("CLAWX_CHAIN_RPC_{chain_id}: invalid URL: {error}"))?;
            anyhow::ensure!(matches!(parsed.scheme(), "http" | "https"), "CLAWX_CHAIN_RPC_{chain_id}: the URL must be http or https");
            let client = reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|error| anyhow::anyhow!("cannot build the HTTP client of chain {chain_id}: {error}"))?;
            let transport = alloy_transport_http::Http::with_client(client, parsed);
            let provider = RootProvider::<Ethereum>::new(RpcClient::new(transport, false));
            providers.insert(*chain_id, provider);
        }
        Ok(Chains { providers: Arc::new(providers), timeout, cache_ttl, cache: Arc::new(Mutex::new(HashMap::new())) })
    }

    /// Whether an RPC is configured for `chain_id`.
    pub fn is_configured(&self, chain_id: u64) -> bool {
        self.providers.contains_key(&chain_id)
    }

    /// The balance the rule compares for `holder` (for ERC-721 with a token id: 1 if `holder`
    /// owns it, else 0). `fresh` skips the cache (the re-check reads the chain every time).
    pub async fn balance(&self, rule: &HoldingRule, holder: Address, fresh: bool) -> Result<U256, ChainError> {
        let key = CacheKey { rule: rule.clone(), holder };
        if !fresh && let Some(balance) = self.cached(&key) {
            return Ok(balance);
        }
        let balance = self.read_balance(rule, holder).await?;
        self.remember(key, balance);
        Ok(balance)
    }

    fn cached(&self, key: &CacheKey) -> Option<U256> {
        let cache = self.cache.lock().expect("balance cache lock");
        cache.get(key).filter(|(at, _)| at.elapsed() < self.cache_ttl).map(|(_, balance)| *balance)
    }

    fn remember(&self, key: CacheKey, balance: U256) {
        if self.cache_ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().expect("balance cache lock");
        if cache.len() >= CACHE_CAPACITY {
            let ttl = self.cache_ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), balance));
    }

    async fn read_balance(&self, rule: &HoldingRule, holder: Address) -> Result<U256, ChainError> {
        let unavailable = |reason: String| ChainError::Unavailable { chain_id: rule.chain_id, reason };
        let undecodable = |_| unavailable("the contract's answer could not be decoded (is it a token of this standard?)".to_string());
        match (rule.standard, rule.token_id) {
            (Standard::Erc721, Some(token_id)) => match self.call(rule, IERC721::ownerOfCall { tokenId: token_id }.abi_encode()).await? {
                CallOutcome::Reverted => Ok(U256::ZERO),
                CallOutcome::Returned(data) => {
                    let owner = IERC721::ownerOfCall::abi_decode_returns(&data).map_err(undecodable)?;
                    Ok(if owner == holder { U256::from(1) } else { U256::ZERO })
                }
            },
            (Standard::Erc1155, Some(token_id)) => {
                let data = self.returned(rule, IERC1155::balanceOfCall { account: holder, id: token_id }.abi_encode()).await?;
                IERC1155::balanceOfCall::abi_decode_returns(&data).map_err(undecodable)
            }
            (Standard::Erc1155, None) => Err(unavailable("an erc1155 rule needs a token id".to_string())),
            (Standard::Erc20 | Standard::Erc721, _) => {
                let data = self.returned(rule, IERC20::balanceOfCall { owner: holder }.abi_encode()).await?;
                IERC20::balanceOfCall::abi_decode_returns(&data).map_err(undecodable)
            }
        }
    }

    /// A call that must return (a revert means the chain cannot answer the question).
    async fn returned(&self, rule: &HoldingRule, input: Vec<u8>) -> Result<Bytes, ChainError> {
        match self.call(rule, input).await? {
            CallOutcome::Returned(data) => Ok(data),
            CallOutcome::Reverted => Err(ChainError::Unavailable { chain_id: rule.chain_id, reason: "the contract reverted balanceOf".to_string() }),
        }
    }

    async fn call(&self, rule: &HoldingRule, input: Vec<u8>) -> Result<CallOutcome, ChainError> {
        let provider = self.providers.get(&rule.chain_id).ok_or(ChainError::NotConfigured(rule.chain_id))?;
        let request = TransactionRequest::default().to(rule.contract).input(TransactionInput::new(Bytes::from(input)));
        let unavailable = |reason: String| ChainError::Unavailable { chain_id: rule.chain_id, reason };
        let answer = tokio::time::timeout(self.timeout, provider.call(request).block(BlockId::latest())).await;
        match answer {
            Err(_) => Err(unavailable(format!("no answer within {} ms", self.timeout.as_millis()))),
            Ok(Ok(data)) if data.is_empty() => Err(unavailable("the contract returned nothing (is there a contract at that address?)".to_string())),
            Ok(Ok(data)) => Ok(CallOutcome::Returned(data)),
            Ok(Err(RpcError::ErrorResp(payload))) if payload.code == 3 || payload.message.to_ascii_lowercase().contains("revert") => {
                Ok(CallOutcome::Reverted)
            }
            Ok(Err(error)) => {
                let reason = match &error {
                    RpcError::ErrorResp(payload) => format!("RPC error {}", payload.code),
                    RpcError::Transport(TransportErrorKind::HttpError(http)) => format!("HTTP {}", http.status),
                    RpcError::Transport(_) => "the RPC endpoint could not be reached".to_string(),
                    _ => "the RPC endpoint gave an unusable answer".to_string(),
                };
                tracing::warn!(chain.id = rule.chain_id, %error, "chain call failed");
                Err(unavailable(reason))
            }
        }
    }
}
