//! The verification rules that need no I/O: codes, the tweet to post, tweet URLs, mentions.

use rand::{Rng, rngs::OsRng};

/// Code characters: no 0/O, 1/I/L or other look-alikes.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
const CODE_PREFIX: &str = "CLAW-";
const CODE_LENGTH: usize = 6;
/// Longest tweet URL accepted.
pub const MAX_TWEET_URL_CHARS: usize = 512;

/// A fresh code, `CLAW-` and six characters drawn uniformly from the operating system's CSPRNG.
pub fn new_code() -> String {
    let mut code = String::with_capacity(CODE_PREFIX.len() + CODE_LENGTH);
    code.push_str(CODE_PREFIX);
    for _ in 0..CODE_LENGTH {
        code.push(CODE_ALPHABET[OsRng.gen_range(0..CODE_ALPHABET.len())] as char);
    }
    code
}

/// The tweet the operator posts.
pub fn tweet_text(mention_handle: &str, code: &str) -> String {
    format!("I'm verifying my @{mention_handle} email address!\n\nVerification code: {code}")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A link that opens X's composer with the tweet filled in.
pub fn intent_url(text: &str) -> String {
    format!("https://twitter.com/intent/tweet?text={}", percent_encode(text))
}

/// The tweet id of an X status URL: `twitter.com` or `x.com` (with or without `www.` or
/// `mobile.`), `/{user}/status/{id}`, `/i/status/{id}` or `/i/web/status/{id}`, with any query
/// or fragment. `Err` says what is wrong.
pub fn tweet_id_of(url: &str) -> Result<u64, &'static str> {
    let url = url.trim();
    if url.len() > MAX_TWEET_URL_CHARS {
        return Err("the tweet URL is too long");
    }
    let parsed = url::Url::parse(url).map_err(|_| "the tweet URL is not a URL")?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err("the tweet URL must be an http(s) link to x.com or twitter.com");
    }
    let host = parsed.host_str().unwrap_or("").to_ascii_lowercase();
    let site = host.strip_prefix("www.").or_else(|| host.strip_prefix("mobile.")).unwrap_or(&host);
    if site != "twitter.com" && site != "x.com" {
        return Err("the tweet URL must point to x.com or twitter.com");
    }
    if parsed.port().is_some() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("the tweet URL must point to x.com or twitter.com");
    }
    let segments: Vec<&str> = parsed.path().trim_end_matches('/').trim_start_matches('/').split('/').collect();
    let id = match segments.as_slice() {
        ["i", "web", "status", id] | ["i", "status", id] => id,
        [user, "status" | "statuses", id] if valid_username(user) => id,
        _ => return Err("the tweet URL must look like https://x.com/{user}/status/{id}"),
    };
    if id.is_empty() || id.len() > 20 || !id.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err("the tweet URL does not end in a tweet id");
    }
    id.parse::<u64>().ok().filter(|&id| id > 0).ok_or("the tweet URL does not end in a tweet id")
}

/// X usernames: 1 to 15 letters, digits and underscores.
pub fn valid_username(username: &str) -> bool {
    (1..=15).contains(&username.len()) && username.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// Whether `text` is a retweet as X writes one (`RT @user: ...`).
pub fn is_retweet(text: &str) -> bool {
    text.trim_start().starts_with("RT @")
}

/// Whether `text` mentions `@handle` as a mention of its own: any case, not inside a word
/// (`x@handle`) or a longer handle (`@handle_2`).
pub fn mentions(text: &str, handle: &str) -> bool {
    let needle = format!("@{}", handle.to_ascii_lowercase());
    let haystack = text.to_ascii_lowercase();
    let bytes = haystack.as_bytes();
    haystack.match_indices(&needle).any(|(start, _)| {
        let end = start + needle.len();
        let before_ok = start == 0 || !is_word_byte(bytes[start - 1]);
        let after_ok = end == bytes.len() || !is_word_byte(bytes[end]);
        before_ok && after_ok
    })
}

/// Whether `text` contains `code` (any case), not as part of a longer code.
pub fn contains_code(text: &str, code: &str) -> bool {
    let needle = code.to_ascii_uppercase();
    let haystack = text.to_ascii_uppercase();
    let bytes = haystack.as_bytes();
    haystack.match_indices(&needle).any(|(start, _)| {
        let end = start + needle.len();
        end == bytes.len() || !bytes[end].is_ascii_alphanumeric()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_use_the_unambiguous_alphabet() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let code = new_code();
            assert_eq!(code.len(), 11);
            assert!(code.starts_with("CLAW-"));
            assert!(code[5..].bytes().all(|byte| CODE_ALPHABET.contains(&byte)), "{code}");
            assert!(!code[5..].contains(['0', 'O', '1', 'I', 'L']));
            seen.insert(code);
        }
        assert!(seen.len() > 190, "codes repeat too often");
    }

    #[test]
    fn the_intent_url_is_the_seed_one() {
        let text = tweet_text("claw_mail", "CLAW-ABC123");
        assert_eq!(text, "I'm verifying my @claw_mail email address!\n\nVerification code: CLAW-ABC123");
        assert_eq!(
            intent_url(&text),
            "https://twitter.com/intent/tweet?text=I%27m%20verifying%20my%20%40claw_mail%20email%20address%21%0A%0AVerification%20code%3A%20CLAW-ABC123"
        );
    }

    #[test]
    fn every_tweet_url_form_is_read() {
        for url in [
            "https://x.com/alice/status/1234567890",
            "https://twitter.com/alice/status/1234567890",
            "https://www.twitter.com/alice/status/1234567890?s=20&t=abc",
            "https://mobile.x.com/alice/status/1234567890/",
            "http://mobile.twitter.com/alice/status/1234567890#frag",
            "https://x.com/i/status/1234567890",
            "https://twitter.com/i/web/status/1234567890?ref=1",
            "  https://X.COM/Alice/status/1234567890  ",
        ] {
            assert_eq!(tweet_id_of(url), Ok(1_234_567_890), "{url}");
        }
        for url in [
            "",
            "not a url",
            "ftp://x.com/alice/status/1",
            "https://evil.com/alice/status/1",
            "https://x.com.evil.com/alice/status/1",
            "https://api.x.com/alice/status/1",
            "https://x.com/alice/status/",
            "https://x.com/alice/status/12ab",
            "https://x.com/alice/likes/1",
            "https://x.com/alice/status/1/photo/1",
            "https://x.com:8443/alice/status/1",
            "https://x.com/alice/status/99999999999999999999999",
            "https://x.com/al-ice/status/1",
        ] {
            assert!(tweet_id_of(url).is_err(), "{url}");
        }
    }

    #[test]
    fn retweets_are_recognized() {
        assert!(is_retweet("RT @someone: I'm verifying my @claw_mail email address!"));
        assert!(!is_retweet("I'm verifying my @claw_mail email address! RT @someone"));
        assert!(!is_retweet("RTX @claw_mail"));
    }

    #[test]
    fn mentions_are_whole_and_any_case() {
        assert!(mentions("hello @Claw_Mail!", "claw_mail"));
        assert!(mentions("@CLAW_MAIL", "claw_mail"));
        assert!(mentions("(@claw_mail)", "claw_mail"));
        assert!(!mentions("hello @claw_mailer", "claw_mail"));
        assert!(!mentions("mail me x@claw_mail", "claw_mail"));
        assert!(!mentions("claw_mail", "claw_mail"));
        assert!(contains_code("code: claw-abc234.", "CLAW-ABC234"));
        assert!(!contains_code("code: CLAW-ABC2345", "CLAW-ABC234"));
        assert!(!contains_code("code: CLAW-ABC23", "CLAW-ABC234"));
    }
}
