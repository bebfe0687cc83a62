//! The re-check: members of gated groups who no longer satisfy their badge's rule are removed.
//!
//! Every replica runs it every `recheck_interval`, and each tick takes at most `recheck_batch`
//! members last checked an interval ago or more, claimed in the database (`FOR UPDATE SKIP
//! LOCKED` on PostgreSQL) and marked checked as they are taken, so replicas never check the
//! same member twice in one round. The chain is always read afresh. A member whose chain
//! cannot be read is kept and made due again, to be tried at the next tick: an unreachable chain
//! never removes anyone. A member who left and joined again while being checked is not removed.

use std::{sync::Arc, time::Duration};

use clawx_common::time::now_ms;
use tokio_util::sync::CancellationToken;

use super::{
    chain::Chains,
    rules::{self, HoldingRule},
    store::{BadgeStore, StoreError},
};

/// What one tick did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecheckReport {
    pub checked: usize,
    pub removed: usize,
    /// Members whose chain could not be read (kept, due again).
    pub deferred: usize,
}

/// One replica's re-check.
#[derive(Clone, Debug)]
pub struct Rechecker {
    store: Arc<dyn BadgeStore>,
    chains: Chains,
    interval: Duration,
    batch: u32,
}

impl Rechecker {
    pub fn new(store: Arc<dyn BadgeStore>, chains: Chains, interval: Duration, batch: u32) -> Rechecker {
        Rechecker { store, chains, interval, batch: batch.max(1) }
    }

    /// Checks the members that are due.
    pub async fn tick(&self) -> Result<RecheckReport, StoreError> {
        let now = now_ms();
        let due_before = now - self.interval.as_millis() as i64;
        let members = self.store.claim_recheck(now, due_before, self.batch).await?;
        let mut report = RecheckReport::default();
        for member in members {
            report.checked += 1;
            let Some(badge) = self.store.badge(&member.badge_code).await? else { continue };
            let rule =
                HoldingRule::parse(badge.chain_id as u64, &badge.contract, &badge.standard, badge.token_id.as_deref(), Some(&badge.min_balance));
            let (Ok(rule), Ok(holder)) = (rule, rules::parse_address("address", &member.address)) else {
                tracing::warn!(badge.code = %member.badge_code, "a stored badge or member cannot be read; skipped");
                continue;
            };
            match self.chains.balance(&rule, holder, true).await {
                Ok(balance) if rule.satisfied_by(balance) => {}
                Ok(_) => {
                    if self.store.remove_stale_member(&member.group_id, &member.address, member.joined_at).await? {
                        report.removed += 1;
                        tracing::info!(badge.code = %member.badge_code, group.id = %member.group_id, "member no longer holds the token; removed");
                    }
                }
                Err(error) => {
                    report.deferred += 1;
                    tracing::warn!(badge.code = %member.badge_code, %error, "re-check could not read the chain; the member stays and is checked again");
                    self.store.recheck_again(&member.group_id, &member.address).await?;
                }
            }
        }
        Ok(report)
    }

    /// Runs a tick every `tick_every` (the re-check interval, at most a minute) until `shutdown`.
    pub fn spawn(self, shutdown: CancellationToken) {
        let tick_every = self.interval.clamp(Duration::from_millis(100), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(tick_every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                match self.tick().await {
                    Ok(report) if report.checked > 0 => tracing::debug!(?report, "gated groups re-checked"),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "re-check tick failed; the next one goes on"),
                }
            }
        });
    }
}
