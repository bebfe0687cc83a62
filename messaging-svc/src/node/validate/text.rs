//! Signature text, byte-for-byte with libxmtp v1.9.0 xmtp_id/src/associations/unsigned_actions.rs.

const HEADER: &str = "XMTP : Authenticate to inbox";
const FOOTER: &str = "For more info: https://xmtp.org/signatures";

/// The subject of one action line. Display rules (member.rs / ident/*.rs):
/// Ethereum = the address string exactly as in the proto (no case change),
/// Installation = lowercase hex of the key bytes, Passkey = lowercase hex of the key bytes.
#[derive(Debug, Clone)]
pub enum Subject<'a> {
    Ethereum(&'a str),
    Installation(&'a [u8]),
    Passkey(&'a [u8]),
}

impl Subject<'_> {
    fn label(&self) -> &'static str {
        match self {
            Subject::Ethereum(_) => "Address",
            Subject::Installation(_) => "ID",
            Subject::Passkey(_) => "Passkey",
        }
    }
    fn value(&self) -> String {
        match self {
            Subject::Ethereum(a) => a.to_string(),
            Subject::Installation(k) | Subject::Passkey(k) => hex::encode(k),
        }
    }
}

#[derive(Debug, Clone)]
pub enum ActionText<'a> {
    /// "- Create inbox\n  (Owner: {identifier})" — Owner label for every identifier kind.
    CreateInbox(Subject<'a>),
    Add(Subject<'a>),
    Revoke(Subject<'a>),
    /// "- Change inbox recovery address\n  (Address: {identifier})" — Address label even for passkeys.
    ChangeRecovery(Subject<'a>),
}

impl ActionText<'_> {
    pub fn line(&self) -> String {
        match self {
            ActionText::CreateInbox(s) => format!("- Create inbox\n  (Owner: {})", s.value()),
            ActionText::Add(s) => {
                let prefix = match s {
                    Subject::Installation(_) => "Grant messaging access to app",
                    Subject::Ethereum(_) => "Link address to inbox",
                    Subject::Passkey(_) => "Link passkey to inbox",
                };
                format!("- {prefix}\n  ({}: {})", s.label(), s.value())
            }
            ActionText::Revoke(s) => {
                let prefix = match s {
                    Subject::Installation(_) => "Revoke messaging access from app",
                    Subject::Ethereum(_) => "Unlink address from inbox",
                    Subject::Passkey(_) => "Unlink passkey from inbox",
                };
                format!("- {prefix}\n  ({}: {})", s.label(), s.value())
            }
            ActionText::ChangeRecovery(s) => {
                format!("- Change inbox recovery address\n  (Address: {})", s.value())
            }
        }
    }
}

/// libxmtp `pretty_timestamp`: `DateTime::from_timestamp_nanos(ns as i64)
/// .to_rfc3339_opts(SecondsFormat::Secs, true)` — UTC, whole seconds (floor), "Z".
/// Note the `as i64` cast: values >= 2^63 wrap to dates before 1970; reproduce it.
pub fn pretty_timestamp(client_timestamp_ns: u64) -> String {
    let ns = client_timestamp_ns as i64;
    let secs = ns.div_euclid(1_000_000_000);
    let dt = time::OffsetDateTime::from_unix_timestamp(secs).expect("any i64 ns is in range");
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", dt.year(), dt.month() as u8, dt.day(), dt.hour(), dt.minute(), dt.second())
}

/// The one text every signature of an IdentityUpdate signs.
pub fn signature_text(inbox_id: &str, client_timestamp_ns: u64, actions: &[ActionText<'_>]) -> String {
    let lines: Vec<String> = actions.iter().map(ActionText::line).collect();
    format!("{HEADER}\n\nInbox ID: {inbox_id}\nCurrent time: {}\n\n{}\n\n{FOOTER}", pretty_timestamp(client_timestamp_ns), lines.join("\n"))
}
