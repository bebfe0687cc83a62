//! XMTP identity-update texts, as the messaging service asks an account's wallet to sign them.
//!
//! XMTP clients sign one text per identity update (libxmtp `unsigned_actions.rs`):
//!
//! ```text
//! XMTP : Authenticate to inbox
//!
//! Inbox ID: <inbox id>
//! Current time: <RFC 3339, whole seconds, Z>
//!
//! <one action per two lines>
//!
//! For more info: https://xmtp.org/signatures
//! ```
//!
//! The wallet signs only texts for the account's own inbox whose actions are creating that
//! inbox (owned by the account's own wallet) and granting or revoking messaging access of
//! installations. Linking or unlinking other wallets and changing the recovery address are
//! refused: they would hand the inbox to someone else.

use time::{OffsetDateTime, PrimitiveDateTime, format_description::FormatItem, macros::format_description};

const HEADER: &str = "XMTP : Authenticate to inbox\n\nInbox ID: ";
const TIME_LINE: &str = "\nCurrent time: ";
const FOOTER: &str = "\n\nFor more info: https://xmtp.org/signatures";
const CREATE_INBOX: &str = "- Create inbox";
const GRANT_INSTALLATION: &str = "- Grant messaging access to app";
const REVOKE_INSTALLATION: &str = "- Revoke messaging access from app";
const TIMESTAMP: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// Longest text signed: the header, footer and [`MAX_ACTIONS`] actions fit well within it.
pub const MAX_TEXT_BYTES: usize = 2048;
/// Most actions in one signed update.
pub const MAX_ACTIONS: usize = 8;
/// How far the text's time may be from the signer's clock, in seconds.
pub const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;

/// One action an account's wallet agrees to sign for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XmtpAction {
    /// Creates the inbox, owned by the account's wallet.
    CreateInbox,
    /// Lets an installation (Ed25519 public key, 64 lowercase hex digits) use the inbox.
    GrantInstallation(String),
    /// Takes the inbox away from an installation.
    RevokeInstallation(String),
}

/// Why a text is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TextProblem {
    #[error("the text is longer than {MAX_TEXT_BYTES} bytes")]
    TooLong,
    #[error("the text is not an XMTP identity-update text")]
    NotIdentityUpdate,
    #[error("the text is for inbox {0}, not this account's inbox")]
    OtherInbox(String),
    #[error("the text's time is missing or more than {MAX_CLOCK_SKEW_SECS} seconds from now")]
    Time,
    #[error("the text names no action")]
    NoAction,
    #[error("the text names more than {MAX_ACTIONS} actions")]
    TooManyActions,
    #[error("the action {0:?} is not one the account's wallet signs for")]
    ActionRefused(String),
    #[error("the inbox may only be created for the account's own wallet, as the text's first action")]
    CreateInboxRefused,
    #[error("an installation must be named by 64 lowercase hex digits")]
    InstallationMalformed,
}

fn installation_key(line: &str) -> Result<String, TextProblem> {
    let key = line.strip_prefix("  (ID: ").and_then(|rest| rest.strip_suffix(')')).ok_or(TextProblem::NotIdentityUpdate)?;
    if key.len() != 64 || !key.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)) {
        return Err(TextProblem::InstallationMalformed);
    }
    Ok(key.to_string())
}

/// Checks that `text` is an XMTP identity-update text for `inbox_id`, owned by
/// `wallet_address_lower`, within [`MAX_CLOCK_SKEW_SECS`] of `now`, naming only actions the
/// wallet signs for; returns them.
pub fn check_identity_update_text(
    text: &str,
    inbox_id: &str,
    wallet_address_lower: &str,
    now: OffsetDateTime,
) -> Result<Vec<XmtpAction>, TextProblem> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(TextProblem::TooLong);
    }
    let body = text.strip_prefix(HEADER).and_then(|rest| rest.strip_suffix(FOOTER)).ok_or(TextProblem::NotIdentityUpdate)?;
    let (text_inbox, rest) = body.split_once(TIME_LINE).ok_or(TextProblem::NotIdentityUpdate)?;
    if text_inbox != inbox_id {
        return Err(TextProblem::OtherInbox(text_inbox.chars().take(80).collect()));
    }
    let (time_text, actions_text) = rest.split_once("\n\n").ok_or(TextProblem::NotIdentityUpdate)?;
    let time = PrimitiveDateTime::parse(time_text, TIMESTAMP).map_err(|_| TextProblem::Time)?.assume_utc();
    if (time - now).whole_seconds().abs() > MAX_CLOCK_SKEW_SECS {
        return Err(TextProblem::Time);
    }
    if actions_text.is_empty() {
        return Err(TextProblem::NoAction);
    }
    let lines: Vec<&str> = actions_text.split('\n').collect();
    if !lines.len().is_multiple_of(2) {
        return Err(TextProblem::NotIdentityUpdate);
    }
    if lines.len() / 2 > MAX_ACTIONS {
        return Err(TextProblem::TooManyActions);
    }
    let mut actions = Vec::with_capacity(lines.len() / 2);
    for (index, pair) in lines.chunks(2).enumerate() {
        let action = match pair[0] {
            CREATE_INBOX => {
                if index != 0 || pair[1] != format!("  (Owner: {wallet_address_lower})") {
                    return Err(TextProblem::CreateInboxRefused);
                }
                XmtpAction::CreateInbox
            }
            GRANT_INSTALLATION => XmtpAction::GrantInstallation(installation_key(pair[1])?),
            REVOKE_INSTALLATION => XmtpAction::RevokeInstallation(installation_key(pair[1])?),
            other => return Err(TextProblem::ActionRefused(other.trim_start_matches("- ").chars().take(80).collect())),
        };
        actions.push(action);
    }
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INBOX: &str = "5e9b9a6e8b0ad6c9b6d4cdbf8ebf7e9d1a1e2b3c4d5e6f708192a3b4c5d6e7f8";
    const WALLET: &str = "0x00000000000000000000000000000000000000aa";
    const KEY: &str = "0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a090807060504030201000";

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_764_500_000).unwrap()
    }

    fn text(inbox: &str, time: &str, actions: &[&str]) -> String {
        format!(
            "XMTP : Authenticate to inbox\n\nInbox ID: {inbox}\nCurrent time: {time}\n\n{}\n\nFor more info: https://xmtp.org/signatures",
            actions.join("\n")
        )
    }

    fn time_at(offset_secs: i64) -> String {
        (now() + time::Duration::seconds(offset_secs)).format(TIMESTAMP).unwrap()
    }

    #[test]
    fn accepts_creating_the_own_inbox_and_managing_installations() {
        let create = format!("- Create inbox\n  (Owner: {WALLET})");
        let grant = format!("- Grant messaging access to app\n  (ID: {KEY})");
        let revoke = format!("- Revoke messaging access from app\n  (ID: {KEY})");
        let actions = check_identity_update_text(&text(INBOX, &time_at(0), &[&create, &grant]), INBOX, WALLET, now()).unwrap();
        assert_eq!(actions, vec![XmtpAction::CreateInbox, XmtpAction::GrantInstallation(KEY.into())]);
        let actions = check_identity_update_text(&text(INBOX, &time_at(-600), &[&revoke, &grant]), INBOX, WALLET, now()).unwrap();
        assert_eq!(actions, vec![XmtpAction::RevokeInstallation(KEY.into()), XmtpAction::GrantInstallation(KEY.into())]);
    }

    #[test]
    fn refuses_everything_else() {
        let grant = format!("- Grant messaging access to app\n  (ID: {KEY})");
        let check = |text: &str| check_identity_update_text(text, INBOX, WALLET, now()).unwrap_err();
        assert_eq!(check("hello"), TextProblem::NotIdentityUpdate);
        assert_eq!(check(&format!("{}\n", text(INBOX, &time_at(0), &[&grant]))), TextProblem::NotIdentityUpdate, "trailing bytes");
        assert_eq!(check(&text("other", &time_at(0), &[&grant])), TextProblem::OtherInbox("other".into()));
        assert_eq!(check(&text(INBOX, &time_at(3600), &[&grant])), TextProblem::Time, "too far ahead");
        assert_eq!(check(&text(INBOX, &time_at(-3600), &[&grant])), TextProblem::Time, "too old");
        assert_eq!(check(&text(INBOX, "yesterday", &[&grant])), TextProblem::Time);
        assert_eq!(check(&text(INBOX, &time_at(0), &[])), TextProblem::NoAction);
        let link = "- Link address to inbox\n  (Address: 0x00000000000000000000000000000000000000bb)";
        assert_eq!(check(&text(INBOX, &time_at(0), &[&grant, link])), TextProblem::ActionRefused("Link address to inbox".into()));
        let recovery = "- Change inbox recovery address\n  (Address: 0x00000000000000000000000000000000000000bb)";
        assert_eq!(check(&text(INBOX, &time_at(0), &[recovery])), TextProblem::ActionRefused("Change inbox recovery address".into()));
        let unlink = format!("- Unlink address from inbox\n  (Address: {WALLET})");
        assert_eq!(check(&text(INBOX, &time_at(0), &[&unlink])), TextProblem::ActionRefused("Unlink address from inbox".into()));
        let foreign_owner = "- Create inbox\n  (Owner: 0x00000000000000000000000000000000000000bb)";
        assert_eq!(check(&text(INBOX, &time_at(0), &[foreign_owner, &grant])), TextProblem::CreateInboxRefused);
        let create = format!("- Create inbox\n  (Owner: {WALLET})");
        assert_eq!(check(&text(INBOX, &time_at(0), &[&grant, &create])), TextProblem::CreateInboxRefused, "create must come first");
        assert_eq!(check(&text(INBOX, &time_at(0), &["- Grant messaging access to app\n  (ID: 00ff)"])), TextProblem::InstallationMalformed);
        let upper = format!("- Grant messaging access to app\n  (ID: {})", KEY.to_uppercase());
        assert_eq!(check(&text(INBOX, &time_at(0), &[&upper])), TextProblem::InstallationMalformed);
        let many: Vec<&str> = std::iter::repeat_n(grant.as_str(), MAX_ACTIONS + 1).collect();
        assert_eq!(check(&text(INBOX, &time_at(0), &many)), TextProblem::TooManyActions);
        assert_eq!(check(&"x".repeat(MAX_TEXT_BYTES + 1)), TextProblem::TooLong);
    }
}
