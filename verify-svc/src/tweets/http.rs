//! Bounded HTTP GETs to tweet sources: a deadline per request, no redirects, and a cap on the
//! bytes read.

use std::time::Duration;

use super::SourceFailure;

/// Most bytes read of one answer; tweet JSON and oEmbed HTML are a few kilobytes.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// The client every source shares.
pub(super) fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    // reqwest is built without a default TLS provider; every Clawx process uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("clawx/", env!("CARGO_PKG_VERSION")))
        .build()?;
    Ok(client)
}

/// A base URL as configured, checked once.
pub(super) fn base_url(url: &str) -> anyhow::Result<url::Url> {
    let parsed = url::Url::parse(url).map_err(|error| anyhow::anyhow!("invalid tweet source URL {url:?}: {error}"))?;
    anyhow::ensure!(matches!(parsed.scheme(), "http" | "https"), "tweet source URL {url:?} must be http or https");
    Ok(parsed)
}

/// `base` with `path` appended to its own path.
pub(super) fn join(base: &url::Url, path: &str) -> url::Url {
    let mut url = base.clone();
    let joined = format!("{}/{}", base.path().trim_end_matches('/'), path.trim_start_matches('/'));
    url.set_path(&joined);
    url
}

/// A source's answer: its status and (bounded) body.
pub(super) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// 5xx and 429 mean the source could not answer now.
    pub fn failed(&self) -> Option<SourceFailure> {
        (self.status >= 500 || self.status == 429).then(|| SourceFailure(format!("answered HTTP {}", self.status)))
    }
}

/// GETs `url`, with a bearer token if given; transport errors, timeouts and oversized bodies
/// are failures.
pub(super) async fn get(client: &reqwest::Client, url: url::Url, bearer: Option<&str>) -> Result<Answer, SourceFailure> {
    let mut request = client.get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let mut response = request.send().await.map_err(|error| SourceFailure(describe(&error)))?;
    let status = response.status().as_u16();
    if response.content_length().is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(SourceFailure(format!("answer larger than {MAX_BODY_BYTES} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| SourceFailure(describe(&error)))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(SourceFailure(format!("answer larger than {MAX_BODY_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { status, body })
}

fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    match std::error::Error::source(error) {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_string(),
    }
}
