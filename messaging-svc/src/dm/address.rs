//! Wallet addresses as callers write them.

use alloy_primitives::Address;
use clawx_common::{ServiceError, ServiceResult};

/// Parses `0x` + 40 hex digits, all lowercase or in EIP-55 mixed case (whose checksum must
/// hold); returns the lowercase form.
pub fn parse_wallet_address(field: &str, text: &str) -> ServiceResult<String> {
    let invalid = || ServiceError::invalid(field, format!("{field} must be 0x followed by 40 hex digits, lowercase or EIP-55 checksummed"));
    let digits = text.strip_prefix("0x").ok_or_else(invalid)?;
    if digits.len() != 40 || !digits.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let bytes = hex::decode(digits).map_err(|_| invalid())?;
    let address = Address::from_slice(&bytes);
    if digits.bytes().any(|byte| byte.is_ascii_uppercase()) && address.to_checksum(None) != text {
        return Err(ServiceError::invalid(field, format!("{field} has a wrong EIP-55 checksum")));
    }
    Ok(format!("0x{}", digits.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercase_and_checksummed_addresses_pass_and_bad_checksums_fail() {
        let checksummed = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        assert_eq!(parse_wallet_address("a", checksummed).unwrap(), checksummed.to_ascii_lowercase());
        assert_eq!(parse_wallet_address("a", &checksummed.to_ascii_lowercase()).unwrap(), checksummed.to_ascii_lowercase());
        let wrong = "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        assert_eq!(parse_wallet_address("a", wrong).unwrap_err().field.as_deref(), Some("a"));
        for bad in [
            "",
            "0x",
            "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae",
            "0xzaaeb6053f3e94c9b9a09f33669435e7ef1beaed",
        ] {
            assert!(parse_wallet_address("a", bad).is_err(), "{bad}");
        }
    }
}
