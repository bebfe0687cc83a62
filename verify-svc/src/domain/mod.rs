//! The verification rules: issuing codes, checking the tweet, binding the X account, and the
//! status an account sees. No transport or SQL here: the gRPC adapter calls in, the store is a
//! trait, tweets come through [`TweetLookup`].

pub mod rules;

use std::{sync::Arc, time::Duration};

use clawx_common::{ErrorCode, RateLimiter, ServiceError, ServiceResult};
use clawx_proto::identity::Profile;

use crate::{
    accounts::Accounts,
    clock::Clock,
    store::{CodeRecord, StoreError, VerificationRecord, VerifyStore},
    tweets::{Lookup, SourceSettings, TweetLookup},
};

/// Settings of the verification rules.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The X account the tweet mentions, without `@` (`CLAWX_VERIFY_MENTION`).
    pub mention_handle: String,
    /// How long a code stays valid.
    pub code_ttl: Duration,
    /// How long after creation an account may stay unverified when verification is required.
    pub window: Duration,
    /// Whether verification is required (`CLAWX_REQUIRE_VERIFICATION`): accounts past their
    /// window cannot verify any more and are deleted by the expiry sweep.
    pub require_verification: bool,
    /// Starts and completes each account may make per hour (`CLAWX_VERIFY_ATTEMPTS_PER_HOUR`).
    pub attempts_per_hour: u32,
    /// How often the expiry sweep runs (when verification is required).
    pub sweep_interval: Duration,
    pub sources: SourceSettings,
    pub clock: Clock,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mention_handle: "claw_mail".to_string(),
            code_ttl: Duration::from_secs(15 * 60),
            window: Duration::from_secs(24 * 3600),
            require_verification: false,
            attempts_per_hour: 20,
            sweep_interval: Duration::from_secs(60),
            sources: SourceSettings::default(),
            clock: Clock::system(),
        }
    }
}

/// A code just issued and the tweet to post.
#[derive(Clone, Debug)]
pub struct Started {
    pub code: String,
    pub expires_at_ms: i64,
    pub tweet_text: String,
    pub intent_url: String,
}

/// A completed verification.
#[derive(Clone, Debug)]
pub struct Completed {
    pub verified_at_ms: i64,
    pub twitter_username: String,
}

/// Where an account stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub verified: bool,
    pub verified_at_ms: Option<i64>,
    pub twitter_username: Option<String>,
    pub has_active_code: bool,
    pub code_expires_at_ms: Option<i64>,
}

fn internal(error: StoreError) -> ServiceError {
    ServiceError::internal(error)
}

fn invalid_tweet(reason: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorCode::InvalidTweet, reason)
}

/// The verify service's rules over its store, the identity service and the tweet sources.
#[derive(Clone, Debug)]
pub struct Verify {
    store: Arc<dyn VerifyStore>,
    accounts: Accounts,
    lookup: TweetLookup,
    limiter: RateLimiter,
    settings: Settings,
}

impl Verify {
    pub fn new(store: Arc<dyn VerifyStore>, accounts: Accounts, lookup: TweetLookup, limiter: RateLimiter, settings: Settings) -> Verify {
        Verify { store, accounts, lookup, limiter, settings }
    }

    fn now(&self) -> i64 {
        self.settings.clock.now_ms()
    }

    /// Counts one `what` attempt of the account against its hourly budget.
    async fn limit(&self, what: &str, account_id: i64) -> ServiceResult<()> {
        if self.settings.attempts_per_hour == 0 {
            return Ok(());
        }
        let key = format!("verify:{what}:{account_id}");
        match self.limiter.check(&key, self.settings.attempts_per_hour, Duration::from_secs(3600)).await {
            Ok(decision) if decision.allowed => Ok(()),
            Ok(decision) => Err(ServiceError::rate_limited(decision.retry_after.as_secs_f64().ceil() as u64)),
            Err(error) => {
                // The limiter guards against abuse; an outage of it does not lock users out.
                tracing::warn!(%error, "verification rate limiter unavailable");
                Ok(())
            }
        }
    }

    /// The account, which must exist, and must not be verified or past its window.
    async fn unverified_account(&self, account_id: i64, now: i64) -> ServiceResult<Profile> {
        let profile = self.accounts.profile(account_id).await?.ok_or_else(|| ServiceError::unauthorized("the account no longer exists"))?;
        if profile.verified || self.store.verification(account_id).await.map_err(internal)?.is_some() {
            return Err(ServiceError::new(ErrorCode::AlreadyVerified, "this account is already verified"));
        }
        let window_ms = self.settings.window.as_millis() as i64;
        if self.settings.require_verification && now >= profile.created_at_ms.saturating_add(window_ms) {
            return Err(ServiceError::new(
                ErrorCode::VerificationExpired,
                format!("this account was not verified within {} hours of its creation; create a new one", self.settings.window.as_secs() / 3600),
            ));
        }
        Ok(profile)
    }

    /// Issues a code (replacing an earlier one) and the tweet to post.
    pub async fn start(&self, account_id: i64) -> ServiceResult<Started> {
        self.limit("start", account_id).await?;
        let now = self.now();
        self.unverified_account(account_id, now).await?;
        let code = rules::new_code();
        let expires_at_ms = now + self.settings.code_ttl.as_millis() as i64;
        let record = CodeRecord { account_id, code: code.clone(), issued_at: now, expires_at: expires_at_ms };
        self.store.issue_code(&record).await.map_err(internal)?;
        tracing::info!(account.id = account_id, "verification code issued");
        let tweet_text = rules::tweet_text(&self.settings.mention_handle, &code);
        let intent_url = rules::intent_url(&tweet_text);
        Ok(Started { code, expires_at_ms, tweet_text, intent_url })
    }

    /// Checks the tweet at `tweet_url` against the account's code and, if every rule holds,
    /// binds its author to the account and marks the account verified. Any failure keeps the
    /// code for another try.
    pub async fn complete(&self, account_id: i64, tweet_url: &str) -> ServiceResult<Completed> {
        self.limit("complete", account_id).await?;
        let tweet_id = rules::tweet_id_of(tweet_url).map_err(|reason| ServiceError { field: Some("tweetUrl".into()), ..invalid_tweet(reason) })?;
        let now = self.now();
        self.unverified_account(account_id, now).await?;
        let code = self
            .store
            .code(account_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| ServiceError::new(ErrorCode::NoVerificationCode, "no verification code found: call POST /verify/start first"))?;
        if code.expires_at <= now {
            return Err(ServiceError::new(ErrorCode::VerificationExpired, "the verification code expired: call POST /verify/start for a new one"));
        }
        let tweet = match self.lookup.find(tweet_id).await? {
            Lookup::Found(tweet) => tweet,
            Lookup::Missing(reason) => return Err(invalid_tweet(format!("{reason}; the tweet must be public"))),
        };
        if tweet.retweet || rules::is_retweet(&tweet.text) {
            return Err(invalid_tweet("the tweet is a retweet: retweets do not count; post the verification tweet from your own account"));
        }
        let handle = &self.settings.mention_handle;
        if !rules::mentions(&tweet.text, handle) {
            return Err(invalid_tweet(format!("the tweet does not mention @{handle}")));
        }
        if !rules::contains_code(&tweet.text, &code.code) {
            return Err(invalid_tweet(format!("the tweet does not contain the verification code {}", code.code)));
        }
        // X shows times to the second; a tweet posted in the second the code was issued counts.
        if tweet.created_at_ms.div_euclid(1000) < code.issued_at.div_euclid(1000) {
            return Err(invalid_tweet("the tweet was posted before the verification code was issued: post a new one"));
        }
        if !rules::valid_username(&tweet.username) {
            return Err(invalid_tweet("the tweet's author has no valid X username"));
        }
        let record = VerificationRecord {
            account_id,
            twitter_user_id: tweet.author_id.clone(),
            twitter_username: tweet.username.clone(),
            tweet_id: tweet.id.clone(),
            verified_at: now,
        };
        match self.store.record_verification(&record).await {
            Ok(()) => {}
            Err(StoreError::TwitterAlreadyUsed) => {
                return Err(ServiceError::new(
                    ErrorCode::TwitterAlreadyUsed,
                    "this X account already verified another agent; each X account verifies one",
                ));
            }
            Err(StoreError::AlreadyVerified) => return Err(ServiceError::new(ErrorCode::AlreadyVerified, "this account is already verified")),
            Err(error) => return Err(internal(error)),
        }
        if let Err(error) = self.tell_identity(account_id, &tweet.username).await {
            // Nothing stays half done: the binding is undone and the code given back.
            if let Err(undo) = self.store.remove_verification(account_id).await {
                tracing::error!(error = %undo, account.id = account_id, "could not undo a verification the identity service did not record");
            }
            if let Err(undo) = self.store.issue_code(&code).await {
                tracing::error!(error = %undo, account.id = account_id, "could not restore a verification code");
            }
            return Err(error);
        }
        tracing::info!(account.id = account_id, "account verified");
        Ok(Completed { verified_at_ms: now, twitter_username: tweet.username })
    }

    /// Marks the account verified in the identity service. Setting it is idempotent, so a call
    /// that failed on the way (an answer lost after identity recorded it) is repeated a few
    /// times before the caller undoes the binding: an undo after identity did record it would
    /// leave the profile verified with its X account free to verify another agent.
    async fn tell_identity(&self, account_id: i64, twitter_username: &str) -> ServiceResult<()> {
        let mut delay = Duration::from_millis(200);
        let mut attempts_left = 3;
        loop {
            match self.accounts.set_verified(account_id, twitter_username).await {
                Ok(()) => return Ok(()),
                Err(error)
                    if attempts_left > 1 && !matches!(error.code, ErrorCode::NotFound | ErrorCode::Forbidden | ErrorCode::ValidationFailed) =>
                {
                    attempts_left -= 1;
                    tracing::warn!(account.id = account_id, error = %error, "identity did not confirm a verification; asking again");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Whether the account is verified and whether it holds an unexpired code.
    pub async fn status(&self, account_id: i64) -> ServiceResult<Status> {
        let now = self.now();
        let verification = self.store.verification(account_id).await.map_err(internal)?;
        let code = match &verification {
            Some(_) => None,
            None => self.store.code(account_id).await.map_err(internal)?.filter(|code| code.expires_at > now),
        };
        Ok(Status {
            verified: verification.is_some(),
            verified_at_ms: verification.as_ref().map(|verification| verification.verified_at),
            twitter_username: verification.map(|verification| verification.twitter_username),
            has_active_code: code.is_some(),
            code_expires_at_ms: code.map(|code| code.expires_at),
        })
    }
}
