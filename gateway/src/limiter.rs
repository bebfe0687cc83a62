//! Rate limits (GCRA, counted in the shared limiter, per replica while it is unreachable) and
//! the per-IP cap on open long-lived streams.

use std::{
    borrow::Cow,
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use clawx_common::{Principal, RateLimiter, ServiceError, cache::RateDecision};

use crate::{config::Limits, context::ip_limit_key};

/// A refused rate-limit check.
pub type Refused = RateDecision;

/// The limiter key for a limit key. Per-IP keys are written `<scope>:<client ip>` by every
/// caller; their address part becomes its [`ip_limit_key`]. Other keys (`acct:<id>`) are kept.
fn limiter_key(key: &str) -> Cow<'_, str> {
    let Some((scope, rest)) = key.split_once(':') else {
        return Cow::Borrowed(key);
    };
    if rest.parse::<IpAddr>().is_err() {
        return Cow::Borrowed(key);
    }
    Cow::Owned(format!("{scope}:{}", ip_limit_key(rest)))
}

/// The error of a refused rate-limit check.
pub fn refused_error(decision: &Refused) -> ServiceError {
    ServiceError::rate_limited(decision.retry_after.as_secs_f64().ceil() as u64)
}

/// Counts requests against the configured limits.
#[derive(Debug)]
pub struct Limiter {
    shared: RateLimiter,
    /// Counts requests when the shared limiter (Redis) is unreachable.
    fallback: RateLimiter,
    pub limits: Limits,
}

impl Limiter {
    pub fn new(shared: RateLimiter, limits: Limits) -> Limiter {
        Limiter { shared, fallback: RateLimiter::memory(), limits }
    }

    /// Counts one request against `key`; refuses past `limit` per minute (0: no limit). Per-IP
    /// keys (`<scope>:<client ip>`) count an IPv6 client by its /64 (see [`ip_limit_key`]). A
    /// limiter outage lets requests through (logged) rather than failing every call.
    pub async fn limit(&self, key: &str, limit: u32) -> Result<Option<RateDecision>, Refused> {
        if limit == 0 {
            return Ok(None);
        }
        let key = limiter_key(key);
        let key = key.as_ref();
        let window = Duration::from_secs(60);
        let decision = match self.shared.check(key, limit, window).await {
            Ok(decision) => decision,
            Err(error) => {
                // Limits stay enforced per replica while the shared limiter is down.
                tracing::warn!(%error, "shared rate limiter unavailable; counting on this replica");
                self.fallback.check(key, limit, window).await.expect("the memory limiter cannot fail")
            }
        };
        if decision.allowed { Ok(Some(decision)) } else { Err(decision) }
    }

    /// The per-account (or, for anonymous calls, per-IP) limit.
    pub async fn limit_principal(&self, principal: &Principal) -> Result<Option<RateDecision>, Refused> {
        match (principal.account_id, &principal.client_ip) {
            (Some(account), _) => self.limit(&format!("acct:{account}"), self.limits.per_account_per_minute).await,
            (None, Some(ip)) => self.limit(&format!("ip:{ip}"), self.limits.per_ip_per_minute).await,
            (None, None) => Ok(None),
        }
    }
}

/// Open long-lived streams per client (an IPv4 address or an IPv6 /64, like every per-IP limit).
#[derive(Debug)]
pub struct StreamSlots {
    open: Mutex<HashMap<String, u32>>,
    per_ip: u32,
}

impl StreamSlots {
    pub fn new(per_ip: u32) -> Arc<StreamSlots> {
        Arc::new(StreamSlots { open: Mutex::default(), per_ip })
    }

    /// A slot for one more stream from `ip`, unless its client has `per_ip` open (0: no limit).
    pub fn acquire(self: &Arc<Self>, ip: &str) -> Option<StreamSlot> {
        let client = ip_limit_key(ip).into_owned();
        let mut open = self.open.lock().expect("stream slots lock");
        let count = open.entry(client.clone()).or_insert(0);
        if self.per_ip != 0 && *count >= self.per_ip {
            return None;
        }
        *count += 1;
        Some(StreamSlot { slots: Arc::clone(self), ip: client })
    }
}

/// Held by a stream's response body; frees the slot when the stream ends or the client leaves.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    ip: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("stream slots lock");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_keys_count_ipv6_clients_by_their_64() {
        assert_eq!(limiter_key("xmtp:2001:db8::7"), "xmtp:2001:db8::/64");
        assert_eq!(limiter_key("create:192.0.2.1"), "create:192.0.2.1");
        assert_eq!(limiter_key("acct:42"), "acct:42");
        assert_eq!(limiter_key("ip:unknown"), "ip:unknown");
    }
}
