//! The public syndication endpoint that embedded tweets read:
//! `GET /tweet-result?id={id}&token={token}`, where the token is derived from the id as the
//! embed script does. A missing tweet is a `404`; a deleted, protected or restricted one a
//! `TweetTombstone`.

use serde::Deserialize;

use super::{
    Lookup, SourceFailure, Tweet, TweetSource,
    http::{self, Answer},
    parse_time_ms, snowflake_time_ms,
};

#[derive(Debug)]
pub(super) struct Syndication {
    client: reqwest::Client,
    base: url::Url,
}

impl Syndication {
    pub fn new(client: reqwest::Client, base: &str) -> anyhow::Result<Syndication> {
        Ok(Syndication { client, base: http::base_url(base)? })
    }
}

/// `value.toString(radix)` as JavaScript engines print a double: the shortest digits that read
/// back as the same double, rounded half to even (V8's `DoubleToRadixCString`). `value` must be
/// finite, non-negative and below 2^53.
fn javascript_radix_string(value: f64, radix: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let radix_f = f64::from(radix);
    let mut integer = value.floor();
    let mut fraction = value - integer;
    // Fraction digits are computed only up to the input's own precision.
    let next_up = f64::from_bits(value.to_bits() + 1);
    let mut delta = (0.5 * (next_up - value)).max(f64::from_bits(1));
    let mut fraction_digits: Vec<u32> = Vec::new();
    if fraction >= delta {
        loop {
            fraction *= radix_f;
            delta *= radix_f;
            let digit = fraction as u32;
            fraction_digits.push(digit);
            fraction -= f64::from(digit);
            if (fraction > 0.5 || (fraction == 0.5 && digit & 1 == 1)) && fraction + delta > 1.0 {
                // Round up, carrying over digits that overflow (into the integer part if all do).
                loop {
                    match fraction_digits.pop() {
                        None => {
                            integer += 1.0;
                            break;
                        }
                        Some(last) if last + 1 < radix => {
                            fraction_digits.push(last + 1);
                            break;
                        }
                        Some(_) => {}
                    }
                }
                break;
            }
            if fraction < delta {
                break;
            }
        }
    }
    let mut integer_digits = Vec::new();
    loop {
        let remainder = integer % radix_f;
        integer_digits.push(DIGITS[remainder as usize]);
        integer = (integer - remainder) / radix_f;
        if integer <= 0.0 {
            break;
        }
    }
    integer_digits.reverse();
    let mut text = String::from_utf8(integer_digits).expect("ASCII digits");
    if !fraction_digits.is_empty() {
        text.push('.');
        text.extend(fraction_digits.iter().map(|&digit| DIGITS[digit as usize] as char));
    }
    text
}

/// The `token` the syndication endpoint expects with a tweet id: in the embed script,
/// `((Number(id) / 1e15) * Math.PI).toString(36).replace(/(0+|\.)/g, '')`.
pub fn syndication_token(tweet_id: u64) -> String {
    let value = (tweet_id as f64 / 1e15) * std::f64::consts::PI;
    javascript_radix_string(value, 36).chars().filter(|&character| character != '0' && character != '.').collect()
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default, rename = "__typename")]
    typename: Option<String>,
    id_str: Option<String>,
    text: Option<String>,
    created_at: Option<String>,
    user: Option<User>,
}

#[derive(Deserialize)]
struct User {
    id_str: String,
    screen_name: String,
}

fn read(answer: &Answer, tweet_id: u64) -> Result<Lookup, SourceFailure> {
    if let Some(failure) = answer.failed() {
        return Err(failure);
    }
    match answer.status {
        200 => {}
        404 => return Ok(Lookup::Missing("the tweet was not found: it was deleted, never existed or is not public".to_string())),
        status => return Err(SourceFailure(format!("unexpected HTTP {status}"))),
    }
    if answer.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Lookup::Missing("the tweet was not found: it was deleted, never existed or is not public".to_string()));
    }
    let reply: Reply = serde_json::from_slice(&answer.body).map_err(|error| SourceFailure(format!("unreadable answer: {error}")))?;
    if reply.typename.as_deref() == Some("TweetTombstone") {
        return Ok(Lookup::Missing("the tweet is not available: it was deleted or its account is protected".to_string()));
    }
    let (Some(id), Some(text), Some(user)) = (reply.id_str, reply.text, reply.user) else {
        return Ok(Lookup::Missing("the tweet was not found: it was deleted, never existed or is not public".to_string()));
    };
    let created_at_ms = reply.created_at.as_deref().and_then(parse_time_ms).unwrap_or_else(|| snowflake_time_ms(tweet_id));
    Ok(Lookup::Found(Tweet { id, text, author_id: Some(user.id_str), username: user.screen_name, created_at_ms, retweet: false }))
}

#[async_trait::async_trait]
impl TweetSource for Syndication {
    fn name(&self) -> &'static str {
        "syndication"
    }

    async fn fetch(&self, tweet_id: u64) -> Result<Lookup, SourceFailure> {
        let mut url = http::join(&self.base, "tweet-result");
        url.query_pairs_mut().append_pair("id", &tweet_id.to_string()).append_pair("token", &syndication_token(tweet_id)).append_pair("lang", "en");
        let answer = http::get(&self.client, url, None).await?;
        read(&answer, tweet_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_the_embed_script() {
        // Computed with Node.js from the embed script's own expression.
        for (id, token) in [
            (1_234_567_890u64, "6iio5bzbwyw"),
            (20, "6dq1a2xwd93"),
            (1_683_920_951_807_971_329, "42y6zv7ufp"),
            (1_866_412_343_012_999_168, "4ivi9gu8bux"),
            (1, "bhi2ay3f28n"),
        ] {
            assert_eq!(syndication_token(id), token, "id {id}");
        }
    }

    #[test]
    fn radix_strings_match_javascript() {
        assert_eq!(javascript_radix_string(0.5, 2), "0.1");
        assert_eq!(javascript_radix_string(255.0, 16), "ff");
        assert_eq!(javascript_radix_string(0.1, 36), "0.3lllllllllm");
        assert_eq!(javascript_radix_string(0.0, 36), "0");
    }
}
