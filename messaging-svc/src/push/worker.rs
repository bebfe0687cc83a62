//! The push worker: one task per messaging replica. Each tick it claims at most
//! `CLAWX_PUSH_BATCH` due notifications (replicas never claim the same one; at most a quarter
//! of the concurrency per target), delivers at most
//! `CLAWX_PUSH_CONCURRENCY` at once, and records each outcome: delivered ones are removed,
//! failed ones retried after an exponential backoff with jitter until `CLAWX_PUSH_MAX_ATTEMPTS`,
//! then kept as failed; a target that says it is gone is unregistered with its topics and jobs.

use std::{sync::Arc, time::Duration};

use clawx_common::time::now_ms;
use futures::StreamExt;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::{
    MAX_WEBHOOK_ENVELOPE_BYTES, Notification, Outcome, Providers, PushConfig,
    store::{ClaimedJob, PushStore},
};
use crate::dm::{Handles, identity::Identity};

/// How long failed notifications are kept for inspection.
const KEEP_FAILED_MS: i64 = 7 * 24 * 60 * 60 * 1000;
/// How often failed notifications past that age are deleted.
const CLEANUP_EVERY: Duration = Duration::from_secs(600);

/// What one tick did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    pub claimed: usize,
    pub delivered: usize,
    pub retried: usize,
    pub failed: usize,
    pub unregistered: usize,
}

fn lease_of(config: &PushConfig) -> Duration {
    let rounds = (config.batch as usize).div_ceil(config.concurrency.max(1)) as u32;
    config.timeout * 2 * rounds + Duration::from_secs(30)
}

/// Delivers queued notifications.
#[derive(Clone, Debug)]
pub struct Worker {
    store: Arc<dyn PushStore>,
    providers: Providers,
    identity: Option<Identity>,
    config: PushConfig,
}

enum Done {
    Delivered,
    Retried,
    Failed,
    Unregistered,
    Skipped,
}

impl Worker {
    /// A worker; `identity` (when given) adds handles to message notifications.
    pub fn new(store: Arc<dyn PushStore>, providers: Providers, identity: Option<Identity>, config: PushConfig) -> Worker {
        Worker { store, providers, identity, config: config.bounded() }
    }

    /// Runs ticks until `shutdown` fires: at once again after a full batch, after the poll
    /// interval otherwise.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last_cleanup = tokio::time::Instant::now();
        loop {
            let tick = match self.tick().await {
                Ok(tick) => tick,
                Err(error) => {
                    tracing::warn!(%error, "push worker could not claim notifications");
                    Tick::default()
                }
            };
            if tick.claimed > 0 {
                tracing::debug!(?tick, "push tick");
            }
            if last_cleanup.elapsed() >= CLEANUP_EVERY {
                last_cleanup = tokio::time::Instant::now();
                if let Err(error) = self.store.delete_failed_before(now_ms() - KEEP_FAILED_MS).await {
                    tracing::warn!(%error, "could not delete old failed notifications");
                }
            }
            let pause = if tick.claimed >= self.config.batch as usize { Duration::ZERO } else { self.config.poll_interval };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// How long a claimed job stays hidden from other replicas: past the latest a job of the
    /// batch can finish. Jobs go out `concurrency` at a time, so the last starts after
    /// `ceil(batch / concurrency) - 1` rounds; each delivery takes at most one token fetch and
    /// one send (FCM deliveries waiting for a failed token fetch fail at once with it), each
    /// bounded by the timeout; 30 s cover the database and the handle lookup.
    pub fn lease(&self) -> Duration {
        lease_of(&self.config)
    }

    /// How many jobs of one target a tick claims at most: a quarter of the delivery slots (at
    /// least one), so a slow or failing target cannot take every slot from other users.
    pub fn per_target(&self) -> u32 {
        (self.config.concurrency / 4).max(1) as u32
    }

    /// Claims due notifications and delivers them.
    pub async fn tick(&self) -> Result<Tick, sqlx::Error> {
        let now = now_ms();
        let lease = self.lease().as_millis() as i64;
        let jobs = self.store.claim(now, now + lease, self.config.batch, self.per_target()).await?;
        let mut tick = Tick { claimed: jobs.len(), ..Tick::default() };
        let results: Vec<Done> = futures::stream::iter(jobs).map(|job| self.deliver(job)).buffer_unordered(self.config.concurrency).collect().await;
        for done in results {
            match done {
                Done::Delivered => tick.delivered += 1,
                Done::Retried => tick.retried += 1,
                Done::Failed => tick.failed += 1,
                Done::Unregistered => tick.unregistered += 1,
                Done::Skipped => {}
            }
        }
        Ok(tick)
    }

    async fn notification(&self, job: &ClaimedJob) -> Result<Option<Notification>, sqlx::Error> {
        let id = format!("push_{}", job.id);
        match job.kind.as_str() {
            "dm" => {
                let Some(message) = self.store.message(job.ref_id).await? else { return Ok(None) };
                let mut handles = Handles::new();
                if let Some(identity) = &self.identity {
                    let ids: Vec<i64> = message.accounts().collect();
                    // Handles are a courtesy: a notification goes out without them rather than late.
                    if let Ok(profiles) = identity.resolve(&ids, &[], &[]).await {
                        handles = profiles.into_iter().map(|profile| (profile.id, profile.handle)).collect();
                    }
                }
                Ok(Some(Notification::message(id, &message, &handles)))
            }
            kind => {
                let Some(envelope) = self.store.envelope(kind, job.ref_id, MAX_WEBHOOK_ENVELOPE_BYTES).await? else { return Ok(None) };
                Ok(Some(Notification::envelope(id, &job.topic, &envelope)))
            }
        }
    }

    #[tracing::instrument(name = "push.deliver", skip_all, fields(push.job = job.id, push.target = job.target_id, push.attempt = job.attempt))]
    async fn deliver(&self, job: ClaimedJob) -> Done {
        match self.attempt(&job).await {
            Ok(done) => done,
            Err(error) => {
                // The job stays leased and is tried again when the lease ends.
                tracing::warn!(%error, "push job could not be recorded");
                Done::Skipped
            }
        }
    }

    async fn attempt(&self, job: &ClaimedJob) -> Result<Done, sqlx::Error> {
        let Some(notification) = self.notification(job).await? else {
            self.store.drop_job(job.id).await?;
            return Ok(Done::Skipped);
        };
        let outcome = match self.providers.of(&job.platform) {
            Some(provider) => provider.deliver(job.account_id, &job.address, &notification).await,
            None => Outcome::Retry(format!("no {} provider is configured", job.platform)),
        };
        match outcome {
            Outcome::Delivered => {
                self.store.delivered(job.id, job.attempt).await?;
                tracing::debug!("push notification delivered");
                Ok(Done::Delivered)
            }
            Outcome::Gone(reason) => {
                self.store.unregister_target(job.target_id).await?;
                tracing::info!(reason, "push target gone; unregistered");
                Ok(Done::Unregistered)
            }
            Outcome::Rejected(reason) => {
                self.store.fail(job.id, job.attempt, &reason).await?;
                tracing::warn!(reason, "push notification rejected");
                Ok(Done::Failed)
            }
            Outcome::Retry(reason) if job.attempt >= i64::from(self.config.max_attempts) => {
                self.store.fail(job.id, job.attempt, &reason).await?;
                tracing::warn!(reason, "push notification failed; out of attempts");
                Ok(Done::Failed)
            }
            Outcome::Retry(reason) => {
                let delay = self.config.backoff(job.attempt as u32, rand::thread_rng().r#gen::<f64>());
                self.store.retry(job.id, job.attempt, now_ms() + delay.as_millis() as i64, &reason).await?;
                tracing::info!(reason, delay_ms = delay.as_millis() as u64, "push notification will be retried");
                Ok(Done::Retried)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_outlasts_the_last_delivery_of_a_batch() {
        // 64 jobs, 16 at once: the last starts after 3 rounds of a token fetch and a send.
        let config = PushConfig { batch: 64, concurrency: 16, timeout: Duration::from_secs(10), ..PushConfig::default() };
        assert_eq!(lease_of(&config), Duration::from_secs(4 * 20 + 30));
        let config = PushConfig { batch: 7, concurrency: 4, timeout: Duration::from_secs(5), ..PushConfig::default() };
        assert_eq!(lease_of(&config), Duration::from_secs(2 * 10 + 30));
        let config = PushConfig { batch: 1000, concurrency: 1, timeout: Duration::from_secs(1), ..PushConfig::default() };
        assert!(lease_of(&config) > Duration::from_secs(1000 * 2), "one at a time: every job's worst case in turn");
    }
}
