//! Values parsed at the edge of the identity domain: once built, they are valid.

use std::fmt;

use alloy_primitives::Address;
use clawx_common::{ServiceError, ServiceResult};

/// A handle: 2-32 of lowercase letters, digits, `-` and `_`; accepted in any case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Handle(String);

impl Handle {
    pub fn parse(field: &str, text: &str) -> ServiceResult<Handle> {
        let lower = text.to_ascii_lowercase();
        let length = lower.chars().count();
        if !(2..=32).contains(&length) {
            return Err(ServiceError::invalid(field, format!("{field} must be 2 to 32 characters")));
        }
        if !lower.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_') {
            return Err(ServiceError::invalid(field, format!("{field} may contain only letters, digits, - and _")));
        }
        Ok(Handle(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An Ethereum address, `0x` and 40 hex digits in any case (the EIP-55 form is what Clawx
/// shows; flows that matter prove the address with a signature).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalletAddress(pub Address);

impl WalletAddress {
    pub fn parse(field: &str, text: &str) -> ServiceResult<WalletAddress> {
        let invalid = || ServiceError::invalid(field, format!("{field} must be 0x followed by 40 hex digits"));
        let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).ok_or_else(invalid)?;
        if digits.len() != 40 || !digits.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let bytes = hex::decode(digits).map_err(|_| invalid())?;
        Ok(WalletAddress(Address::from_slice(&bytes)))
    }

    /// EIP-55 form.
    pub fn checksummed(&self) -> String {
        self.0.to_checksum(None)
    }

    pub fn lower(&self) -> String {
        format!("{:#x}", self.0)
    }
}

/// A domain name an account may claim: dot-separated labels of lowercase letters, digits and
/// `-`, 3-253 characters, with at least one dot (so it never collides with a handle).
pub fn parse_domain(field: &str, text: &str) -> ServiceResult<String> {
    if text.len() > 253 {
        return Err(ServiceError::invalid(field, format!("{field} must be at most 253 characters")));
    }
    let lower = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let valid_label = |label: &str| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if !(3..=253).contains(&lower.len()) || !lower.contains('.') || !lower.split('.').all(valid_label) {
        return Err(ServiceError::invalid(field, format!("{field} must be a domain name such as alice.crypto")));
    }
    Ok(lower)
}

/// Whether a character is a control character (C0, DEL or C1).
fn is_control(character: char) -> bool {
    character.is_control()
}

/// Whether a character is an invisible formatting character that can disguise text: the
/// Arabic letter mark, zero-width space, non-joiner and joiner, left-to-right and right-to-left
/// marks, bidi embeddings and overrides (U+202A-U+202E), the word joiner and invisible
/// operators, bidi isolates (U+2066-U+2069) and the zero-width no-break space (BOM). The
/// OpenAPI document refuses the same set.
pub fn is_invisible_format(character: char) -> bool {
    matches!(character, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// A required single-line text: 1..=`max` characters, not only whitespace, no control
/// characters; stored trimmed.
pub fn parse_name(field: &str, text: &str, max: usize) -> ServiceResult<String> {
    if text.chars().count() > max {
        return Err(ServiceError::invalid(field, format!("{field} must be at most {max} characters")));
    }
    if text.chars().any(is_control) {
        return Err(ServiceError::invalid(field, format!("{field} must not contain control characters")));
    }
    if text.chars().any(is_invisible_format) {
        return Err(ServiceError::invalid(field, format!("{field} must not contain bidi controls or zero-width characters")));
    }
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ServiceError::invalid(field, format!("{field} must not be empty")));
    }
    Ok(trimmed.to_string())
}

/// An optional free text of at most `max` characters (line breaks and tabs allowed); empty or
/// blank clears it.
pub fn parse_text(field: &str, text: &str, max: usize) -> ServiceResult<Option<String>> {
    if text.chars().count() > max {
        return Err(ServiceError::invalid(field, format!("{field} must be at most {max} characters")));
    }
    if text.chars().any(|character| is_control(character) && !matches!(character, '\n' | '\r' | '\t')) {
        return Err(ServiceError::invalid(field, format!("{field} must not contain control characters")));
    }
    if text.chars().any(is_invisible_format) {
        return Err(ServiceError::invalid(field, format!("{field} must not contain bidi controls or zero-width characters")));
    }
    let trimmed = text.trim();
    Ok((!trimmed.is_empty()).then(|| trimmed.to_string()))
}

/// Largest URL accepted in a profile.
pub const MAX_URL_LENGTH: usize = 2048;

fn is_host_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes.iter().all(|byte| byte.is_ascii_alphanumeric() || *byte == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Whether every character of a URL path, query or fragment is allowed by RFC 3986: unreserved
/// characters, `%` followed by two hex digits, the delimiters `! $ & ( ) * + , ; = : @` and `/`,
/// and `?` in the query and fragment. The single quote, a sub-delimiter in RFC 3986, is refused
/// as well, so a stored URL never needs escaping inside an HTML attribute.
fn is_url_component(text: &str, question_mark_allowed: bool) -> bool {
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%' {
            let escaped = bytes.get(index + 1..index + 3);
            if !escaped.is_some_and(|digits| digits.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            index += 3;
            continue;
        }
        let allowed = byte.is_ascii_alphanumeric() || b"-._~!$&()*+,;=:@/".contains(&byte) || (question_mark_allowed && byte == b'?');
        if !allowed {
            return false;
        }
        index += 1;
    }
    true
}

/// Whether `text` is `http(s)://host[:port]` followed by an RFC 3986 path, query and fragment:
/// host labels of letters, digits and `-`, a port of 1-65535 without leading zeros, and no
/// quote, angle bracket, space, control or non-ASCII character anywhere. The OpenAPI document
/// states the same grammar as a pattern.
pub fn is_profile_url(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("https://").or_else(|| text.strip_prefix("http://")) else { return false };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after_authority) = rest.split_at(authority_end);
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let port_ok = port.is_none_or(|port| {
        (1..=5).contains(&port.len())
            && port.bytes().all(|byte| byte.is_ascii_digit())
            && !port.starts_with('0')
            && port.parse::<u32>().is_ok_and(|number| number <= 65_535)
    });
    if !port_ok || !host.split('.').all(is_host_label) {
        return false;
    }
    let (before_fragment, fragment) = match after_authority.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (after_authority, None),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (before_fragment, None),
    };
    is_url_component(path, false)
        && query.is_none_or(|query| is_url_component(query, true))
        && fragment.is_none_or(|fragment| is_url_component(fragment, true))
}

/// An optional http(s) URL; empty clears it.
pub fn parse_url(field: &str, text: &str) -> ServiceResult<Option<String>> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > MAX_URL_LENGTH {
        return Err(ServiceError::invalid(field, format!("{field} must be at most {MAX_URL_LENGTH} characters")));
    }
    if !is_profile_url(text) {
        return Err(ServiceError::invalid(field, format!("{field} must be an http or https URL such as https://example.com/me")));
    }
    Ok(Some(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles() {
        assert_eq!(Handle::parse("handle", "Claude-Bot_2").unwrap().as_str(), "claude-bot_2");
        for bad in ["a", &"x".repeat(33), "has space", "dot.ted", "émile", ""] {
            let error = Handle::parse("handle", bad).unwrap_err();
            assert_eq!(error.field.as_deref(), Some("handle"), "{bad}");
        }
    }

    #[test]
    fn addresses() {
        let checksummed = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        assert_eq!(WalletAddress::parse("a", checksummed).unwrap().checksummed(), checksummed);
        assert!(WalletAddress::parse("a", &checksummed.to_lowercase()).is_ok());
        assert_eq!(WalletAddress::parse("a", "0X5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED").unwrap().checksummed(), checksummed);
        assert!(WalletAddress::parse("a", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
        assert!(WalletAddress::parse("a", "0x1234").is_err());
    }

    #[test]
    fn urls_and_texts() {
        assert_eq!(parse_url("x_url", "https://x.com/a").unwrap().as_deref(), Some("https://x.com/a"));
        assert_eq!(parse_url("x_url", "").unwrap(), None);
        for bad in [
            "ftp://x.com",
            "javascript:alert(1)",
            "x.com",
            "http://",
            " https://x.com",
            "https://x.com/a b",
            "https://-x.com",
            "https://x..com",
            "https://x.com:0",
            "https://x.com:65536",
            "https://x.com:080",
            "https://x_y.com",
        ] {
            assert!(parse_url("x_url", bad).is_err(), "{bad}");
        }
        for bad in [
            "https://x.com/\"",
            "https://x.com/<a>",
            "https://x.com/'",
            "https://x.com/%g0",
            "https://x.com/%",
            "https://x.com/#a#b",
            "https://x.com/\u{e9}",
            "https://x.com/{}",
        ] {
            assert!(parse_url("x_url", bad).is_err(), "{bad}");
        }
        for good in [
            "http://localhost",
            "https://a-b.c.d:8443/p?q=1#f",
            "https://x.com?x",
            "https://1.2.3.4",
            "https://example.com:44300/x",
            "http://h:65535",
            "https://x.com/a%2Fb?c=d/e?f#g?h/i",
            "https://x.com/(a)",
        ] {
            assert!(parse_url("x_url", good).is_ok(), "{good}");
        }
        assert!(parse_name("name", "  ", 10).is_err());
        assert!(parse_name("name", "a\u{7}b", 10).is_err());
        for invisible in ['\u{202e}', '\u{200b}', '\u{200d}', '\u{2066}', '\u{2060}', '\u{feff}'] {
            assert!(parse_name("name", &format!("a{invisible}b"), 10).is_err(), "{invisible:?}");
            assert!(parse_text("description", &format!("a{invisible}b"), 10).is_err(), "{invisible:?}");
        }
        assert_eq!(parse_text("description", "a\nb", 10).unwrap().as_deref(), Some("a\nb"));
        assert_eq!(parse_name("name", " Ann ", 10).unwrap(), "Ann");
        assert!(parse_text("description", &"x".repeat(11), 10).is_err());
        assert_eq!(parse_domain("domain", "Alice.Crypto").unwrap(), "alice.crypto");
        assert!(parse_domain("domain", "alice").is_err());
        assert!(parse_domain("domain", "-a.b").is_err());
    }
}
