//! oEmbed: `GET /oembed?url=https://twitter.com/i/status/{id}`. Its answer has the author's
//! username (in `author_url`) and the tweet's text (in the `html` blockquote), but neither the
//! author's stable id nor the time; the time comes from the id. A missing tweet is a `404`, a
//! protected one a `403`.

use serde::Deserialize;

use super::{
    Lookup, SourceFailure, Tweet, TweetSource,
    http::{self, Answer},
    snowflake_time_ms,
};

#[derive(Debug)]
pub(super) struct OEmbed {
    client: reqwest::Client,
    base: url::Url,
}

impl OEmbed {
    pub fn new(client: reqwest::Client, base: &str) -> anyhow::Result<OEmbed> {
        Ok(OEmbed { client, base: http::base_url(base)? })
    }
}

#[derive(Deserialize)]
struct Reply {
    author_url: String,
    html: String,
}

/// Decodes the HTML character references oEmbed uses.
fn decode_entities(text: &str) -> String {
    let mut decoded = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('&') {
        decoded.push_str(&rest[..start]);
        let after = &rest[start..];
        let Some(end) = after.find(';').filter(|&end| end <= 10) else {
            decoded.push('&');
            rest = &after[1..];
            continue;
        };
        let entity = &after[1..end];
        let character = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            "mdash" => Some('\u{2014}'),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|decimal| decimal.parse().ok()))
                .and_then(char::from_u32),
        };
        match character {
            Some(character) => {
                decoded.push(character);
                rest = &after[end + 1..];
            }
            None => {
                decoded.push('&');
                rest = &after[1..];
            }
        }
    }
    decoded.push_str(rest);
    decoded
}

/// The tweet's text: the first `<p>` of the blockquote, tags dropped, `<br>` as newlines.
fn tweet_text(html: &str) -> Option<String> {
    let start = html.find("<p")?;
    let open_end = start + html[start..].find('>')? + 1;
    let close = open_end + html[open_end..].find("</p>")?;
    let inner = &html[open_end..close];
    let mut text = String::with_capacity(inner.len());
    let mut rest = inner;
    while let Some(tag_start) = rest.find('<') {
        text.push_str(&rest[..tag_start]);
        let tag_end = tag_start + rest[tag_start..].find('>')? + 1;
        let tag = rest[tag_start + 1..tag_end - 1].trim().to_ascii_lowercase();
        if tag == "br" || tag.starts_with("br ") || tag.starts_with("br/") {
            text.push('\n');
        }
        rest = &rest[tag_end..];
    }
    text.push_str(rest);
    Some(decode_entities(&text))
}

/// The username at the end of `https://twitter.com/{username}`.
fn username_of(author_url: &str) -> Option<String> {
    let url = url::Url::parse(author_url).ok()?;
    let username = url.path_segments()?.find(|segment| !segment.is_empty())?;
    let valid = !username.is_empty() && username.len() <= 15 && username.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| username.to_string())
}

fn read(answer: &Answer, tweet_id: u64) -> Result<Lookup, SourceFailure> {
    if let Some(failure) = answer.failed() {
        return Err(failure);
    }
    match answer.status {
        200 => {}
        404 => return Ok(Lookup::Missing("the tweet was not found: it was deleted or never existed".to_string())),
        403 => return Ok(Lookup::Missing("the tweet is not public (its account is protected)".to_string())),
        status => return Err(SourceFailure(format!("unexpected HTTP {status}"))),
    }
    let reply: Reply = serde_json::from_slice(&answer.body).map_err(|error| SourceFailure(format!("unreadable answer: {error}")))?;
    let username = username_of(&reply.author_url).ok_or_else(|| SourceFailure("answer without a readable author_url".to_string()))?;
    let text = tweet_text(&reply.html).ok_or_else(|| SourceFailure("answer without the tweet's text".to_string()))?;
    Ok(Lookup::Found(Tweet { id: tweet_id.to_string(), text, author_id: None, username, created_at_ms: snowflake_time_ms(tweet_id), retweet: false }))
}

#[async_trait::async_trait]
impl TweetSource for OEmbed {
    fn name(&self) -> &'static str {
        "oembed"
    }

    async fn fetch(&self, tweet_id: u64) -> Result<Lookup, SourceFailure> {
        let mut url = http::join(&self.base, "oembed");
        url.query_pairs_mut()
            .append_pair("url", &format!("https://twitter.com/i/status/{tweet_id}"))
            .append_pair("omit_script", "true")
            .append_pair("dnt", "true");
        let answer = http::get(&self.client, url, None).await?;
        read(&answer, tweet_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_blockquote() {
        let html = "<blockquote class=\"twitter-tweet\"><p lang=\"en\" dir=\"ltr\">I&#39;m verifying my <a href=\"https://twitter.com/claw_mail?ref_src=twsrc%5Etfw\">@claw_mail</a> email address!<br><br>Verification code: CLAW-ABC234 &amp; more</p>&mdash; Alice (@alice) <a href=\"https://twitter.com/alice/status/20\">January 1, 2024</a></blockquote>\n";
        assert_eq!(tweet_text(html).unwrap(), "I'm verifying my @claw_mail email address!\n\nVerification code: CLAW-ABC234 & more");
        assert_eq!(username_of("https://twitter.com/alice").as_deref(), Some("alice"));
        assert_eq!(username_of("https://twitter.com/"), None);
        assert_eq!(decode_entities("a &unknown; &#x41; &#66; &"), "a &unknown; A B &");
    }
}
