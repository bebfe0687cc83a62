//! What badges are made of, parsed at the edge of the domain: badge codes, holding rules
//! (standard, contract, token id, minimum balance), wallet addresses, signatures and the texts
//! wallets sign to join and leave a gated group.
//!
//! Signed texts (EIP-191 `personal_sign`, UTF-8):
//! - join: the badge code itself (as the Push-style peer API describes), or `Join <code>`;
//! - leave: `Leave <code>` only.
//!
//! A badge code has no spaces, so no code is ever `Leave <code>` of another: a join signature
//! cannot be replayed as a leave, nor a leave signature as a join.

use std::{fmt, str::FromStr};

use alloy_primitives::{Address, Signature, U256};
use clawx_common::{ServiceError, ServiceResult};

/// Longest badge code.
pub const MAX_CODE_CHARS: usize = 64;
/// Longest badge name.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest decimal uint256 (2^256 - 1 has 78 digits).
const MAX_DECIMAL_DIGITS: usize = 78;

/// A token standard a badge's rule reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Standard {
    Erc20,
    Erc721,
    Erc1155,
}

impl Standard {
    pub fn as_str(self) -> &'static str {
        match self {
            Standard::Erc20 => "erc20",
            Standard::Erc721 => "erc721",
            Standard::Erc1155 => "erc1155",
        }
    }
}

impl FromStr for Standard {
    type Err = ServiceError;

    fn from_str(text: &str) -> Result<Standard, ServiceError> {
        match text {
            "erc20" => Ok(Standard::Erc20),
            "erc721" => Ok(Standard::Erc721),
            "erc1155" => Ok(Standard::Erc1155),
            _ => Err(ServiceError::invalid("standard", "standard must be erc20, erc721 or erc1155")),
        }
    }
}

impl fmt::Display for Standard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an address must hold to satisfy a badge.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HoldingRule {
    pub chain_id: u64,
    pub contract: Address,
    pub standard: Standard,
    /// ERC-1155 always; ERC-721 when one token is required (then the owner holds "1").
    pub token_id: Option<U256>,
    pub min_balance: U256,
}

impl HoldingRule {
    /// Checks a rule as a creator wrote it; `min_balance` defaults to 1.
    pub fn parse(chain_id: u64, contract: &str, standard: &str, token_id: Option<&str>, min_balance: Option<&str>) -> ServiceResult<HoldingRule> {
        if chain_id == 0 {
            return Err(ServiceError::invalid("chainId", "chainId must be a positive number"));
        }
        let contract = parse_address("contract", contract)?;
        let standard: Standard = standard.parse()?;
        let token_id = token_id.map(|text| parse_decimal("tokenId", text)).transpose()?;
        let min_balance = match min_balance {
            Some(text) => parse_decimal("minBalance", text)?,
            None => U256::from(1),
        };
        if min_balance.is_zero() {
            return Err(ServiceError::invalid("minBalance", "minBalance must be at least 1"));
        }
        match standard {
            Standard::Erc20 if token_id.is_some() => return Err(ServiceError::invalid("tokenId", "an erc20 badge has no tokenId")),
            Standard::Erc1155 if token_id.is_none() => return Err(ServiceError::invalid("tokenId", "an erc1155 badge needs tokenId")),
            Standard::Erc721 if token_id.is_some() && min_balance != U256::from(1) => {
                return Err(ServiceError::invalid("minBalance", "an erc721 badge for one tokenId has minBalance 1"));
            }
            _ => {}
        }
        Ok(HoldingRule { chain_id, contract, standard, token_id, min_balance })
    }

    /// Whether `balance` satisfies the rule.
    pub fn satisfied_by(&self, balance: U256) -> bool {
        balance >= self.min_balance
    }

    /// Why `address` with `balance` does not satisfy the rule, in words.
    pub fn shortfall(&self, address: &Address, balance: U256) -> String {
        let holder = lower_hex(address);
        let contract = lower_hex(&self.contract);
        match (self.standard, &self.token_id) {
            (Standard::Erc721, Some(token_id)) => {
                format!("{holder} does not own token {token_id} of the erc721 contract {contract} on chain {}", self.chain_id)
            }
            (Standard::Erc1155, Some(token_id)) => format!(
                "{holder} holds {balance} of token {token_id} of the erc1155 contract {contract} on chain {}; the badge needs at least {}",
                self.chain_id, self.min_balance
            ),
            (standard, _) => format!(
                "{holder} holds {balance} of the {standard} contract {contract} on chain {}; the badge needs at least {}",
                self.chain_id, self.min_balance
            ),
        }
    }
}

/// Lowercase `0x` hex of an address, as Clawx stores and answers addresses.
pub fn lower_hex(address: &Address) -> String {
    format!("{address:#x}")
}

/// A badge code: 1 to 64 of `A-Z a-z 0-9 _ . -`, starting with a letter or digit.
pub fn parse_code(field: &str, code: &str) -> ServiceResult<String> {
    let valid = !code.is_empty()
        && code.chars().count() <= MAX_CODE_CHARS
        && code.chars().next().is_some_and(|first| first.is_ascii_alphanumeric())
        && code.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        return Err(ServiceError::invalid(
            field,
            format!("{field} must be 1 to {MAX_CODE_CHARS} of A-Z a-z 0-9 _ . -, starting with a letter or digit"),
        ));
    }
    Ok(code.to_string())
}

/// A badge name: 1 to 200 characters, no control characters.
pub fn parse_name(name: &str) -> ServiceResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ServiceError::invalid("name", format!("name must be 1 to {MAX_NAME_CHARS} characters without control characters")));
    }
    Ok(name.to_string())
}

/// A `0x` and 40 hex digits wallet or contract address, any case (checksums are not required).
pub fn parse_address(field: &str, text: &str) -> ServiceResult<Address> {
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"));
    match digits {
        Some(digits) if digits.len() == 40 && digits.bytes().all(|byte| byte.is_ascii_hexdigit()) => {
            let bytes = hex::decode(digits).map_err(|_| ServiceError::invalid(field, format!("{field} must be 0x and 40 hex digits")))?;
            Ok(Address::from_slice(&bytes))
        }
        _ => Err(ServiceError::invalid(field, format!("{field} must be 0x and 40 hex digits"))),
    }
}

/// A non-negative decimal integer below 2^256, without sign, spaces or leading zeros.
pub fn parse_decimal(field: &str, text: &str) -> ServiceResult<U256> {
    let invalid = || ServiceError::invalid(field, format!("{field} must be a decimal string of a uint256"));
    if text.is_empty()
        || text.len() > MAX_DECIMAL_DIGITS
        || !text.bytes().all(|byte| byte.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return Err(invalid());
    }
    U256::from_str_radix(text, 10).map_err(|_| invalid())
}

/// Parses a 65-byte `r || s || v` signature, hex with or without `0x`; `v` may be 27/28 or 0/1;
/// a high-s twin is refused.
pub fn parse_signature(text: &str) -> ServiceResult<Signature> {
    let malformed = |why: &str| ServiceError::invalid("signature", why.to_string());
    let digits = text.trim().strip_prefix("0x").unwrap_or(text.trim());
    if digits.len() != 130 {
        return Err(malformed("signature must be 65 bytes of hex"));
    }
    let bytes = hex::decode(digits).map_err(|_| malformed("signature must be 65 bytes of hex"))?;
    let parity = match bytes[64] {
        0 | 27 => false,
        1 | 28 => true,
        _ => return Err(malformed("the signature's v must be 27 or 28")),
    };
    let r = U256::from_be_slice(&bytes[..32]);
    let s = U256::from_be_slice(&bytes[32..64]);
    if r.is_zero() || s.is_zero() {
        return Err(malformed("the signature's r and s must not be zero"));
    }
    let signature = Signature::new(r, s, parity);
    if signature.normalize_s().is_some() {
        return Err(malformed("the signature's s must be in the lower half of the curve order"));
    }
    Ok(signature)
}

/// What a signature is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Join,
    Leave,
}

/// The texts a wallet may sign for `action` on the badge `code`.
pub fn signed_texts(action: Action, code: &str) -> Vec<String> {
    match action {
        Action::Join => vec![code.to_string(), format!("Join {code}")],
        Action::Leave => vec![format!("Leave {code}")],
    }
}

/// Whether `signature` is `address`'s EIP-191 signature of a text for `action` on `code`.
pub fn signed_by(signature: &Signature, address: &Address, action: Action, code: &str) -> bool {
    signed_texts(action, code).iter().any(|text| signature.recover_address_from_msg(text.as_bytes()).is_ok_and(|signer| signer == *address))
}

#[cfg(test)]
mod tests {
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    use super::*;

    fn sign(signer: &PrivateKeySigner, text: &str) -> Signature {
        let signature = signer.sign_message_sync(text.as_bytes()).expect("sign");
        parse_signature(&hex::encode(signature.as_bytes())).expect("canonical")
    }

    #[test]
    fn join_and_leave_signatures_are_bound_to_their_action() {
        let signer = PrivateKeySigner::random();
        let address = signer.address();
        let plain = sign(&signer, "vip-holders");
        assert!(signed_by(&plain, &address, Action::Join, "vip-holders"));
        assert!(!signed_by(&plain, &address, Action::Leave, "vip-holders"), "a join signature is not a leave");
        assert!(!signed_by(&plain, &address, Action::Join, "other"));
        let join = sign(&signer, "Join vip-holders");
        assert!(signed_by(&join, &address, Action::Join, "vip-holders"));
        assert!(!signed_by(&join, &address, Action::Leave, "vip-holders"));
        let leave = sign(&signer, "Leave vip-holders");
        assert!(signed_by(&leave, &address, Action::Leave, "vip-holders"));
        assert!(!signed_by(&leave, &address, Action::Join, "vip-holders"), "a leave signature is not a join");
        assert!(parse_code("code", "Leave vip-holders").is_err(), "no code contains a space");
        let other = PrivateKeySigner::random();
        assert!(!signed_by(&plain, &other.address(), Action::Join, "vip-holders"));
    }

    #[test]
    fn rules_and_amounts_are_checked() {
        let contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
        let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        let rule = HoldingRule::parse(31337, contract, "erc20", None, Some(max)).unwrap();
        assert_eq!(rule.min_balance, U256::MAX);
        assert!(
            HoldingRule::parse(
                31337,
                contract,
                "erc20",
                None,
                Some("115792089237316195423570985008687907853269984665640564039457584007913129639936")
            )
            .is_err()
        );
        assert_eq!(HoldingRule::parse(31337, contract, "erc721", None, None).unwrap().min_balance, U256::from(1));
        assert_eq!(HoldingRule::parse(31337, contract, "erc20", Some("1"), None).unwrap_err().field.as_deref(), Some("tokenId"));
        assert_eq!(HoldingRule::parse(31337, contract, "erc1155", None, None).unwrap_err().field.as_deref(), Some("tokenId"));
        assert_eq!(HoldingRule::parse(31337, contract, "erc721", Some("7"), Some("2")).unwrap_err().field.as_deref(), Some("minBalance"));
        assert_eq!(HoldingRule::parse(31337, contract, "erc20", None, Some("0")).unwrap_err().field.as_deref(), Some("minBalance"));
        assert_eq!(HoldingRule::parse(31337, contract, "erc20", None, Some("01")).unwrap_err().field.as_deref(), Some("minBalance"));
        assert_eq!(HoldingRule::parse(31337, contract, "erc20", None, Some("-1")).unwrap_err().field.as_deref(), Some("minBalance"));
        assert_eq!(HoldingRule::parse(31337, "0x12", "erc20", None, None).unwrap_err().field.as_deref(), Some("contract"));
        assert_eq!(HoldingRule::parse(31337, contract, "erc777", None, None).unwrap_err().field.as_deref(), Some("standard"));
        assert_eq!(HoldingRule::parse(0, contract, "erc20", None, None).unwrap_err().field.as_deref(), Some("chainId"));
        assert!(parse_code("code", "a").is_ok());
        assert!(parse_code("code", "-a").is_err());
        assert!(parse_code("code", &"a".repeat(65)).is_err());
    }
}
