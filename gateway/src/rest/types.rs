//! What REST bodies are made of: the text formats declared once (a pattern and length limits
//! that make both a field's OpenAPI schema and, for the formats a request is parsed with, the
//! check its value goes through), and the ClawXmtp success envelope `{"ok": true, ...}`.
//!
//! The patterns are the ones the services enforce, so a request the document calls valid is
//! never refused as malformed, and one it calls invalid is always refused.

use std::{borrow::Cow, sync::OnceLock};

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{Object, ObjectBuilder, Schema, Type},
    },
};

use crate::error::ApiError;

/// Handles: 2-32 letters, digits, `-` or `_` (any case; stored lower-case).
pub const HANDLE_PATTERN: &str = "^[A-Za-z0-9_-]{2,32}$";
/// Invisible formatting characters refused in names and texts (as a character-class body):
/// the Arabic letter mark, zero-width space/non-joiner/joiner, left-to-right and right-to-left
/// marks, bidi embeddings and overrides, the word joiner and invisible operators, bidi isolates,
/// and the zero-width no-break space (BOM).
macro_rules! invisible_characters {
    () => {
        r"\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff"
    };
}
/// One line of text that is not only whitespace, without control or invisible formatting
/// characters.
pub const NAME_PATTERN: &str = concat!(
    r"^[^\x00-\x1f\x7f-\x9f",
    invisible_characters!(),
    r"]*[^\s\x00-\x1f\x7f-\x9f",
    invisible_characters!(),
    r"][^\x00-\x1f\x7f-\x9f",
    invisible_characters!(),
    r"]*$"
);
/// Free text: no control characters except tab, line feed and carriage return, no invisible
/// formatting characters.
pub const TEXT_PATTERN: &str = concat!(r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f", invisible_characters!(), r"]*$");
/// Free text with at least one character that is not whitespace (a group's description).
pub const REQUIRED_TEXT_PATTERN: &str = concat!(
    r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f",
    invisible_characters!(),
    r"]*[^\s\x00-\x1f\x7f-\x9f",
    invisible_characters!(),
    r"][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f",
    invisible_characters!(),
    r"]*$"
);
/// `http(s)://host[:port]`, then an RFC 3986 path, query and fragment: unreserved characters,
/// `%` and two hex digits, and the delimiters `! $ & ( ) * + , ; = : @ /` (`?` in the query and
/// fragment), so never a quote, `<`, `>`, `\`, `^`, `` ` ``, `{`, `|`, `}`, space, control or
/// non-ASCII character. Port 1-65535. Empty clears the field.
pub const URL_PATTERN: &str = concat!(
    r"^(|https?://[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
    r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?",
    r"(/([A-Za-z0-9._~!$&()*+,;=:@/-]|%[0-9A-Fa-f]{2})*)?",
    r"(\?([A-Za-z0-9._~!$&()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?",
    r"(#([A-Za-z0-9._~!$&()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?)$"
);
/// `0x` and 40 hex digits, any case.
pub const ADDRESS_PATTERN: &str = "^0[xX][0-9a-fA-F]{40}$";
/// `0x` and 40 hex digits: a message peer's wallet (mixed case must be EIP-55, which no
/// pattern states).
pub const PEER_ADDRESS_PATTERN: &str = "^0x[0-9a-fA-F]{40}$";
/// A domain name with at least one dot (3-253 characters, stated with min/maxLength).
pub const DOMAIN_PATTERN: &str = r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$";
/// Idempotency keys: 1 to 128 letters, digits, `.`, `_`, `:` or `-` (as request ids).
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[A-Za-z0-9._:-]{1,128}$";
/// A message id in a header: 1 to 18 decimal digits (always within an `i64`).
pub const EVENT_ID_PATTERN: &str = "^[0-9]{1,18}$";
/// 65 bytes of hex, with or without `0x`.
pub const SIGNATURE_PATTERN: &str = "^(0x)?[0-9a-fA-F]{130}$";

/// A text format: its pattern and length limits, in characters as JSON Schema counts them.
#[derive(Clone, Copy, Debug)]
pub struct Format {
    pub pattern: &'static str,
    pub min_length: Option<usize>,
    pub max_length: usize,
    /// Why a value was refused, after the field name: `must be ...` (the body parser puts the
    /// field name in front of messages that start so).
    pub rule: &'static str,
}

impl Format {
    /// The format's string schema.
    pub fn schema(&self) -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(self.pattern))
            .min_length(self.min_length)
            .max_length(Some(self.max_length))
            .build()
    }

    /// The format's string schema in JSON Schema, for MCP tool inputs.
    pub fn json_schema(&self) -> schemars::Schema {
        let mut schema = schemars::json_schema!({"type": "string", "pattern": self.pattern, "maxLength": self.max_length});
        if let Some(min_length) = self.min_length {
            schema.insert("minLength".to_string(), min_length.into());
        }
        schema
    }

    /// Whether `text` is in the format.
    pub fn accepts(&self, regex: &Regex, text: &str) -> bool {
        let length = text.chars().count();
        length <= self.max_length && self.min_length.is_none_or(|min| length >= min) && regex.is_match(text)
    }
}

/// A string in a [`Format`]: `$name` has `$format` as its schema; with `checked`, a request
/// body's value is refused (400 `VALIDATION_FAILED` naming the field) unless it matches.
macro_rules! formatted_string {
    ($(#[$doc:meta])* $name:ident, $format:expr, checked) => {
        formatted_string!(@type $(#[$doc])* $name, $format);

        impl $name {
            fn is_valid(text: &str) -> bool {
                static REGEX: OnceLock<Regex> = OnceLock::new();
                let regex = REGEX.get_or_init(|| Regex::new(Self::FORMAT.pattern).expect("a valid pattern"));
                Self::FORMAT.accepts(regex, text)
            }

            /// `text` as the value of `field` (a query parameter, say): 400 `VALIDATION_FAILED`
            /// naming the field unless it is in the format.
            pub fn parse(field: &str, text: String) -> Result<Self, ApiError> {
                if Self::is_valid(&text) { Ok($name(text)) } else { Err(ApiError::invalid(field, format!("{field} {}", Self::FORMAT.rule))) }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                if Self::is_valid(&text) { Ok($name(text)) } else { Err(D::Error::custom(Self::FORMAT.rule)) }
            }
        }
    };
    ($(#[$doc:meta])* $name:ident, $format:expr) => {
        formatted_string!(@type $(#[$doc])* $name, $format);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map($name)
            }
        }
    };
    (@type $(#[$doc:meta])* $name:ident, $format:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name(pub String);

        impl $name {
            pub const FORMAT: Format = $format;
        }

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                RefOr::T(Schema::Object(Self::FORMAT.schema()))
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }
        }

        /// The same schema for MCP tool inputs (JSON Schema 2020-12), inlined where it is used.
        impl schemars::JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }

            fn json_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                Self::FORMAT.json_schema()
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}

formatted_string!(
    /// A handle as sent (any case).
    Handle,
    Format { pattern: HANDLE_PATTERN, min_length: None, max_length: 32, rule: "must be 2 to 32 letters, digits, - or _" },
    checked
);
formatted_string!(
    /// A profile URL; empty clears it.
    ProfileUrl,
    Format { pattern: URL_PATTERN, min_length: None, max_length: 2048, rule: "must be an http(s) URL of at most 2048 characters, without quotes, spaces, <, > or non-ASCII characters" },
    checked
);
formatted_string!(
    /// An Ethereum address.
    WalletAddress,
    Format { pattern: ADDRESS_PATTERN, min_length: None, max_length: 42, rule: "must be 0x followed by 40 hex digits" },
    checked
);
formatted_string!(
    /// Any wallet a message goes to or comes from: `0x` and 40 hex digits, all lowercase or in
    /// EIP-55 mixed case (the messaging service checks the checksum).
    PeerAddress,
    Format { pattern: PEER_ADDRESS_PATTERN, min_length: None, max_length: 42, rule: "must be 0x followed by 40 hex digits, lowercase or EIP-55 checksummed" },
    checked
);
formatted_string!(
    /// A 65-byte ECDSA signature in hex.
    WalletSignature,
    Format { pattern: SIGNATURE_PATTERN, min_length: None, max_length: 132, rule: "must be 65 bytes of hex (0x optional)" },
    checked
);
formatted_string!(
    /// An `Idempotency-Key` header: a retried send with the same key answers the first result.
    IdempotencyKey,
    Format { pattern: IDEMPOTENCY_KEY_PATTERN, min_length: Some(1), max_length: 128, rule: "must be 1 to 128 letters, digits, ., _, : or -" },
    checked
);
formatted_string!(
    /// A message id as a header carries it (`Last-Event-ID`): decimal digits.
    EventId,
    Format { pattern: EVENT_ID_PATTERN, min_length: Some(1), max_length: 18, rule: "must be a message id (1 to 18 decimal digits)" },
    checked
);
formatted_string!(
    /// A profile name (the service checks it).
    Name,
    Format { pattern: NAME_PATTERN, min_length: None, max_length: 100, rule: "" }
);
formatted_string!(
    /// An API key's name (the service checks it).
    KeyName,
    Format { pattern: NAME_PATTERN, min_length: None, max_length: 64, rule: "" }
);
formatted_string!(
    /// A profile description (the service checks it).
    Text,
    Format { pattern: TEXT_PATTERN, min_length: None, max_length: 1000, rule: "" }
);
formatted_string!(
    /// A group's title (the service checks it).
    GroupTitle,
    Format { pattern: NAME_PATTERN, min_length: Some(1), max_length: 200, rule: "" }
);
formatted_string!(
    /// A group's description (the service checks it).
    GroupDescription,
    Format { pattern: REQUIRED_TEXT_PATTERN, min_length: Some(1), max_length: 10_000, rule: "" }
);
formatted_string!(
    /// A domain name (the service checks it).
    DomainName,
    Format { pattern: DOMAIN_PATTERN, min_length: Some(3), max_length: 253, rule: "" }
);

/// The ClawXmtp success envelope: `{"ok": true}` and the fields of `T`, in one flat object.
#[derive(Clone, Debug)]
pub struct Envelope<T>(pub T);

impl<T: Serialize> Serialize for Envelope<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Envelope<'a, T> {
            ok: bool,
            #[serde(flatten)]
            body: &'a T,
        }
        Envelope { ok: true, body: &self.0 }.serialize(serializer)
    }
}

/// `YYYY-MM-DD HH:MM:SS`, UTC: how the ClawXmtp family shows times.
pub fn sql_datetime() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("UTC, YYYY-MM-DD HH:MM:SS"))
        .pattern(Some("^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"))
        .build()
}

/// `true`, as the only value.
pub fn always_true() -> Object {
    ObjectBuilder::new().schema_type(Type::Boolean).enum_values(Some([true])).build()
}

impl<T: ToSchema> PartialSchema for Envelope<T> {
    fn schema() -> RefOr<Schema> {
        let RefOr::T(Schema::Object(mut object)) = T::schema() else { unreachable!("the envelope wraps an object schema") };
        object.properties.insert("ok".to_string(), RefOr::T(Schema::Object(always_true())));
        object.required.insert(0, "ok".to_string());
        RefOr::T(Schema::Object(object))
    }
}

impl<T: ToSchema> ToSchema for Envelope<T> {
    fn name() -> Cow<'static, str> {
        Cow::Owned(format!("{}Response", T::name()))
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        T::schemas(schemas);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_formats_refuse_what_their_pattern_refuses() {
        let parse = |json: &str| serde_json::from_str::<Handle>(json);
        assert_eq!(parse("\"Alice_2\"").unwrap(), Handle("Alice_2".into()));
        assert!(parse("\"a\"").is_err() && parse("\"al ice\"").is_err() && parse(&format!("\"{}\"", "a".repeat(33))).is_err());
        assert!(serde_json::from_str::<ProfileUrl>("\"\"").is_ok());
        assert!(serde_json::from_str::<ProfileUrl>("\"https://x.com/<script>\"").is_err());
        assert!(serde_json::from_str::<WalletAddress>("\"0x0000000000000000000000000000000000000000\"").is_ok());
        assert!(serde_json::from_str::<WalletSignature>("\"0x12\"").is_err());
        let refused = WalletAddress::parse("address", "0x12".into()).unwrap_err();
        assert_eq!((refused.field.as_deref(), refused.message.as_str()), (Some("address"), "address must be 0x followed by 40 hex digits"));
    }
}
