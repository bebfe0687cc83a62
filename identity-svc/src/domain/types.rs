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

/// An Ethereum address; mixed-case input must carry a valid EIP-55 checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalletAddress(pub Address);

impl WalletAddress {
    pub fn parse(field: &str, text: &str) -> ServiceResult<WalletAddress> {
        let invalid = || ServiceError::invalid(field, format!("{field} must be a 0x-prefixed 20-byte hex address"));
        let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).ok_or_else(invalid)?;
        if digits.len() != 40 || !digits.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(invalid());
        }
        let bytes = hex::decode(digits).map_err(|_| invalid())?;
        let address = Address::from_slice(&bytes);
        let has_upper = digits.bytes().any(|byte| byte.is_ascii_uppercase());
        let has_lower = digits.bytes().any(|byte| byte.is_ascii_lowercase());
        if has_upper && has_lower && address.to_checksum(None)[2..] != *digits {
            return Err(ServiceError::invalid(field, format!("{field} has an invalid EIP-55 checksum")));
        }
        Ok(WalletAddress(address))
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
    let lower = text.trim_end_matches('.').to_ascii_lowercase();
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

/// A required single-line text: trimmed, 1..=`max` characters, no control characters.
pub fn parse_name(field: &str, text: &str, max: usize) -> ServiceResult<String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ServiceError::invalid(field, format!("{field} must not be empty")));
    }
    if trimmed.chars().count() > max {
        return Err(ServiceError::invalid(field, format!("{field} must be at most {max} characters")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ServiceError::invalid(field, format!("{field} must not contain control characters")));
    }
    Ok(trimmed.to_string())
}

/// An optional free text of at most `max` characters; empty clears it.
pub fn parse_text(field: &str, text: &str, max: usize) -> ServiceResult<Option<String>> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.chars().count() > max {
        return Err(ServiceError::invalid(field, format!("{field} must be at most {max} characters")));
    }
    if trimmed.chars().any(|character| character.is_control() && character != '\n' && character != '\t') {
        return Err(ServiceError::invalid(field, format!("{field} must not contain control characters")));
    }
    Ok(Some(trimmed.to_string()))
}

/// Largest URL accepted in a profile.
pub const MAX_URL_LENGTH: usize = 2048;

/// An optional http(s) URL; empty clears it.
pub fn parse_url(field: &str, text: &str) -> ServiceResult<Option<String>> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.len() > MAX_URL_LENGTH {
        return Err(ServiceError::invalid(field, format!("{field} must be at most {MAX_URL_LENGTH} characters")));
    }
    let url = url::Url::parse(trimmed)
        .map_err(|_| ServiceError::invalid(field, format!("{field} must be an absolute http or https URL")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(ServiceError::invalid(field, format!("{field} must be an absolute http or https URL")));
    }
    Ok(Some(trimmed.to_string()))
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
        assert!(WalletAddress::parse("a", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD").is_err(), "bad checksum");
        assert!(WalletAddress::parse("a", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
        assert!(WalletAddress::parse("a", "0x1234").is_err());
    }

    #[test]
    fn urls_and_texts() {
        assert_eq!(parse_url("x_url", "https://x.com/a").unwrap().as_deref(), Some("https://x.com/a"));
        assert_eq!(parse_url("x_url", "").unwrap(), None);
        for bad in ["ftp://x.com", "javascript:alert(1)", "x.com", "http://"] {
            assert!(parse_url("x_url", bad).is_err(), "{bad}");
        }
        assert!(parse_name("name", "  ", 10).is_err());
        assert!(parse_name("name", "a\u{7}b", 10).is_err());
        assert_eq!(parse_name("name", " Ann ", 10).unwrap(), "Ann");
        assert!(parse_text("description", &"x".repeat(11), 10).is_err());
        assert_eq!(parse_domain("domain", "Alice.Crypto").unwrap(), "alice.crypto");
        assert!(parse_domain("domain", "alice").is_err());
        assert!(parse_domain("domain", "-a.b").is_err());
    }
}
