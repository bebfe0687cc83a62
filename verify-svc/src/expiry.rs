//! The expiry sweep: when verification is required, accounts still unverified a window (24
//! hours) after their creation are deleted with their keys, handle and messages.
//!
//! Every replica sweeps. An account is taken under a lease in this service's database before
//! anything is deleted, so replicas share the work and each account is handled by one at a
//! time; a replica that stops mid-way leaves its lease, which runs out, and the next sweep
//! finishes the account from where it stopped. The steps are each safe to repeat: the identity
//! service deletes the account only if it is still unverified and old enough (and says whether
//! it did), then the messaging service purges its messages, then the lease and this service's
//! rows go.

use std::{sync::Arc, time::Duration};

use clawx_common::ServiceResult;
use tokio_util::sync::CancellationToken;

use crate::{accounts::Accounts, clock::Clock, store::VerifyStore};

/// How long a replica holds an account it is deleting.
pub const LEASE: Duration = Duration::from_secs(5 * 60);
/// Accounts asked for per page.
const PAGE: u32 = 100;
/// Most accounts one sweep handles; the next sweep goes on.
const MAX_PER_SWEEP: usize = 1000;

/// One replica's sweeper.
#[derive(Clone, Debug)]
pub struct Sweeper {
    store: Arc<dyn VerifyStore>,
    accounts: Accounts,
    clock: Clock,
    window: Duration,
    /// This replica's name on its leases.
    owner: String,
}

impl Sweeper {
    pub fn new(store: Arc<dyn VerifyStore>, accounts: Accounts, clock: Clock, window: Duration) -> Sweeper {
        Sweeper { store, accounts, clock, window, owner: uuid::Uuid::new_v4().to_string() }
    }

    /// Runs one sweep; returns the accounts this sweeper deleted.
    pub async fn sweep(&self) -> ServiceResult<Vec<i64>> {
        let now = self.clock.now_ms();
        let created_before = now - self.window.as_millis() as i64;
        let mut deleted = Vec::new();
        let mut handled = 0;
        // First the accounts a stopped replica left half done.
        let stale = self.store.stale_expiry_claims(now, PAGE).await.map_err(clawx_common::ServiceError::internal)?;
        for account_id in stale {
            handled += 1;
            if self.expire_or_log(account_id, created_before, now).await {
                deleted.push(account_id);
            }
        }
        let mut after_id = 0;
        while handled < MAX_PER_SWEEP {
            let page = self.accounts.unverified(created_before, after_id, PAGE).await?;
            let Some(last) = page.last() else { break };
            after_id = last.id;
            for profile in page {
                handled += 1;
                if self.expire_or_log(profile.id, created_before, now).await {
                    deleted.push(profile.id);
                }
            }
        }
        if !deleted.is_empty() {
            tracing::info!(accounts = deleted.len(), "unverified accounts past their window deleted");
        }
        Ok(deleted)
    }

    /// [`Sweeper::expire`], logging a failure rather than stopping the sweep: one account that
    /// keeps failing must not keep every other one from being deleted. Its lease runs out and a
    /// later sweep tries it again.
    async fn expire_or_log(&self, account_id: i64, created_before: i64, now: i64) -> bool {
        match self.expire(account_id, created_before, now).await {
            Ok(deleted) => deleted,
            Err(error) => {
                tracing::warn!(account.id = account_id, %error, "could not expire an unverified account; going on with the others");
                false
            }
        }
    }

    /// Deletes one account under a lease; whether this call deleted it.
    async fn expire(&self, account_id: i64, created_before: i64, now: i64) -> ServiceResult<bool> {
        let lease_until = now + LEASE.as_millis() as i64;
        let claimed = self.store.claim_expiry(account_id, &self.owner, now, lease_until).await.map_err(clawx_common::ServiceError::internal)?;
        if !claimed {
            return Ok(false);
        }
        let deleted = self.accounts.delete_unverified(account_id, created_before).await?;
        if !deleted && self.accounts.profile(account_id).await?.is_some() {
            // Verified or not old enough after all: not ours to delete.
            self.store.release_expiry(account_id, &self.owner).await.map_err(clawx_common::ServiceError::internal)?;
            return Ok(false);
        }
        // Deleted now, or by an earlier sweep that stopped before the messages went.
        self.accounts.purge_messages(account_id).await?;
        self.store.finish_expiry(account_id).await.map_err(clawx_common::ServiceError::internal)?;
        if deleted {
            tracing::info!(account.id = account_id, "unverified account deleted");
        }
        Ok(deleted)
    }

    /// Sweeps every `interval` until `shutdown`.
    pub fn spawn(self, interval: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval.max(Duration::from_secs(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                if let Err(error) = self.sweep().await {
                    tracing::warn!(%error, "expiry sweep stopped early; the next one goes on");
                }
            }
        });
    }
}
