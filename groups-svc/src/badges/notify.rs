//! Delivery of partner notifications: a worker in every groups replica claims due deliveries
//! from the database under a lease and sends each as a direct message from the partner's
//! account to the member's address through the messaging service.
//!
//! Exactly once: the message's idempotency key is `badge-notification:<id>:<address>`, scoped
//! to the partner's account. A worker that stops after sending and before recording leaves the
//! delivery claimed; its lease runs out, another worker sends again with the same key, and the
//! messaging service answers the first message instead of storing a second one (keys are kept 24
//! hours; a delivery is given up well before that).

use std::{sync::Arc, time::Duration};

use clawx_common::{ErrorCode, ServiceError, time::now_ms};
use futures::future::join_all;
use tokio_util::sync::CancellationToken;

use super::{
    BadgeSettings,
    services::Services,
    store::{BadgeStore, ClaimedDelivery, StoreError},
};

/// The idempotency key of one delivery.
pub fn idempotency_key(notification_id: &str, address: &str) -> String {
    format!("badge-notification:{notification_id}:{address}")
}

/// What a tick did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: usize,
    pub retried: usize,
    pub failed: usize,
}

/// One replica's delivery worker.
#[derive(Clone, Debug)]
pub struct Deliverer {
    store: Arc<dyn BadgeStore>,
    services: Services,
    settings: BadgeSettings,
}

enum Outcome {
    Delivered,
    Retry(String),
    Fail(String),
}

/// Whether a refusal will not change on a retry (the address is not a valid recipient, the
/// content is refused): given up at once.
fn is_permanent(error: &ServiceError) -> bool {
    matches!(
        error.code,
        ErrorCode::ValidationFailed | ErrorCode::NotFound | ErrorCode::Forbidden | ErrorCode::IdempotencyKeyReused | ErrorCode::PayloadTooLarge
    )
}

impl Deliverer {
    pub fn new(store: Arc<dyn BadgeStore>, services: Services, settings: BadgeSettings) -> Deliverer {
        Deliverer { store, services, settings }
    }

    /// Delivers the deliveries that are due now.
    pub async fn tick(&self) -> Result<DeliveryReport, StoreError> {
        let now = now_ms();
        let lease_until = now + self.settings.delivery_lease.as_millis() as i64;
        let claimed = self.store.claim_deliveries(now, lease_until, self.settings.delivery_batch.max(1)).await?;
        let outcomes = join_all(claimed.iter().map(|delivery| self.deliver(delivery))).await;
        let mut report = DeliveryReport::default();
        for (delivery, outcome) in claimed.iter().zip(outcomes) {
            match outcome {
                Outcome::Delivered => {
                    self.store.delivered(delivery.id, delivery.attempts).await?;
                    report.delivered += 1;
                }
                Outcome::Retry(error) if delivery.attempts < self.settings.delivery_max_attempts => {
                    let exponent = u32::try_from(delivery.attempts.saturating_sub(1)).unwrap_or(u32::MAX).min(10);
                    let delay = self.settings.delivery_retry_base.saturating_mul(1 << exponent).min(Duration::from_secs(3600));
                    self.store.retry_delivery(delivery.id, delivery.attempts, now_ms() + delay.as_millis() as i64, &error).await?;
                    report.retried += 1;
                }
                Outcome::Retry(error) | Outcome::Fail(error) => {
                    tracing::warn!(notification.id = %delivery.notification_id, error = %error, "partner notification delivery failed for good");
                    self.store.fail_delivery(delivery.id, delivery.attempts, &error).await?;
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    async fn deliver(&self, delivery: &ClaimedDelivery) -> Outcome {
        let key = idempotency_key(&delivery.notification_id, &delivery.address);
        match self.services.send_direct_message(delivery.partner_account_id, &delivery.address, &delivery.content, &key).await {
            Ok(()) => Outcome::Delivered,
            Err(status) => {
                let error = ServiceError::from_status(&status);
                let text = format!("{}: {}", error.code, error.message);
                if is_permanent(&error) { Outcome::Fail(text) } else { Outcome::Retry(text) }
            }
        }
    }

    /// Runs until `shutdown`: a tick every poll interval, at once again after a full batch.
    pub fn spawn(self, shutdown: CancellationToken) {
        tokio::spawn(async move {
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                let full = match self.tick().await {
                    Ok(report) => report.delivered + report.retried + report.failed >= self.settings.delivery_batch.max(1) as usize,
                    Err(error) => {
                        tracing::warn!(%error, "partner notification tick failed");
                        false
                    }
                };
                if full {
                    continue;
                }
                tokio::select! {
                    () = tokio::time::sleep(self.settings.delivery_poll_interval) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        });
    }
}
