//! The webhook provider: a JSON `POST` signed per Standard Webhooks — `webhook-id` (the same
//! on every retry of a notification), `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`. Each registered
//! webhook has its own secret (`whsec_<base64>`), derived from `CLAWX_PUSH_WEBHOOK_SECRET`, the
//! account and the URL, and returned to the account when it registers the URL.

use std::time::Duration;

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{
    Notification, Outcome, Provider,
    target::{PublicResolver, literal_host_allowed},
};

type HmacSha256 = Hmac<Sha256>;

/// The signing secret of one registered webhook: 32 bytes derived from the server's master
/// webhook secret, the account and the URL.
#[derive(Clone)]
pub struct WebhookSecret([u8; 32]);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    pub fn derive(master: &[u8], account_id: i64, url: &str) -> WebhookSecret {
        let mut mac = HmacSha256::new_from_slice(master).expect("HMAC takes any key length");
        mac.update(b"clawx push webhook v1\0");
        mac.update(&account_id.to_be_bytes());
        mac.update(url.as_bytes());
        WebhookSecret(mac.finalize().into_bytes().into())
    }

    /// The secret as receivers configure it: `whsec_<base64>`.
    pub fn encoded(&self) -> String {
        format!("whsec_{}", STANDARD.encode(self.0))
    }

    /// The `webhook-signature` value of `body` sent as `id` at `timestamp`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// Delivers notifications to webhook URLs.
pub struct Webhook {
    client: reqwest::Client,
    master: Vec<u8>,
    allow_private: bool,
}

/// Written by hand: the master secret is never printed.
impl std::fmt::Debug for Webhook {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Webhook").field("allow_private", &self.allow_private).finish_non_exhaustive()
    }
}

impl Webhook {
    /// A provider signing with secrets derived from `master`.
    pub fn new(master: Vec<u8>, timeout: Duration, allow_private: bool) -> anyhow::Result<Webhook> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(PublicResolver { allow_private })
            .user_agent("Clawx-Webhooks/1")
            .build()?;
        Ok(Webhook { client, master, allow_private })
    }

    /// The secret of `url` registered by `account_id`.
    pub fn secret(&self, account_id: i64, url: &str) -> WebhookSecret {
        WebhookSecret::derive(&self.master, account_id, url)
    }
}

#[async_trait]
impl Provider for Webhook {
    async fn deliver(&self, account_id: i64, address: &str, notification: &Notification) -> Outcome {
        let Ok(url) = url::Url::parse(address) else { return Outcome::Rejected("the stored URL is not valid".into()) };
        if !literal_host_allowed(&url, self.allow_private) {
            return Outcome::Rejected("the URL names a private address".into());
        }
        let body = match serde_json::to_vec(&notification.webhook_body()) {
            Ok(body) => body,
            Err(error) => return Outcome::Rejected(format!("cannot encode the notification: {error}")),
        };
        let timestamp = clawx_common::time::now_ms() / 1000;
        let signature = self.secret(account_id, address).sign(&notification.id, timestamp, &body);
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &notification.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                // The answer's body is not read: receivers only need to say yes.
                drop(response);
                if status.is_success() {
                    Outcome::Delivered
                } else if status == reqwest::StatusCode::GONE {
                    // Only 410 Gone unregisters: a 404 is often a deploy in progress or a
                    // proxy's mistake, so it is retried like any other failure.
                    Outcome::Gone(format!("the webhook answered {}", status.as_u16()))
                } else {
                    Outcome::Retry(format!("the webhook answered {}", status.as_u16()))
                }
            }
            Err(error) if error.is_timeout() => Outcome::Retry("the webhook did not answer in time".into()),
            Err(error) if error.is_connect() => Outcome::Retry("the webhook could not be reached".into()),
            Err(_) => Outcome::Retry("the webhook call failed".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification.
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let mut mac = HmacSha256::new_from_slice(&key).unwrap();
        mac.update(b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}");
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        assert_eq!(expected, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");

        let secret = WebhookSecret::derive(b"master", 7, "https://example.com/hook");
        assert_eq!(secret.encoded().len(), "whsec_".len() + 44);
        assert_ne!(secret.encoded(), WebhookSecret::derive(b"master", 8, "https://example.com/hook").encoded(), "per account");
        assert_ne!(secret.encoded(), WebhookSecret::derive(b"master", 7, "https://example.com/other").encoded(), "per URL");
        let signature = secret.sign("push_1", 1_700_000_000, b"{}");
        let mut mac = HmacSha256::new_from_slice(&STANDARD.decode(secret.encoded().trim_start_matches("whsec_")).unwrap()).unwrap();
        mac.update(b"push_1.1700000000.{}");
        assert_eq!(signature, format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())));
    }
}
