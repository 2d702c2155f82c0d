//! Handles as they travel in a child's spawn arguments: a [`Token`] names
//! the object and carries the secret that proves the sender held it, and
//! [`handed_ids`] finds the tokens in encoded arguments.

use super::{Error, Kind};
use serde::{Deserialize, Serialize};

/// A handle as it travels in spawn arguments: which object, and the secret
/// that proves the sender held it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    pub(crate) id: u64,
    pub(crate) secret: u64,
}

const TOKEN_PREFIX: &str = "mp-sync:";

impl Token {
    /// `mp-sync:<kind>:<id>:<secret in hex>`.
    pub(crate) fn encode(&self) -> String {
        format!("{TOKEN_PREFIX}{}:{}:{:016x}", self.kind.name(), self.id, self.secret)
    }

    pub(crate) fn parse(text: &str) -> Result<Token, Error> {
        let bad = || Error::UnknownObject(format!("`{}` is not a token", text.chars().take(80).collect::<String>()));
        let mut parts = text.strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?.split(':');
        let kind = parts.next().and_then(|k| Kind::ALL.into_iter().find(|kind| kind.name() == k));
        let id = parts.next().and_then(|id| id.parse().ok());
        let secret = parts.next().and_then(|s| u64::from_str_radix(s, 16).ok());
        match (kind, id, secret, parts.next()) {
            (Some(kind), Some(id), Some(secret), None) => Ok(Token { kind, id, secret }),
            _ => Err(bad()),
        }
    }
}

/// The object ids of the tokens in a child's arguments, once per token.
/// A token is found by its exact shape (`mp-sync:`, a kind, an id, 16 hex
/// digits), whatever bytes surround it: in MessagePack a string is followed
/// by the next value's bytes, which may be letters or digits.
pub(crate) fn handed_ids(input: &[u8]) -> Vec<u64> {
    let prefix = TOKEN_PREFIX.as_bytes();
    let mut ids = Vec::new();
    let mut rest = input;
    while let Some(at) = rest.windows(prefix.len()).position(|w| w == prefix) {
        let token = &rest[at..];
        if let Some(len) = token_length(token)
            && let Ok(parsed) = Token::parse(&String::from_utf8_lossy(&token[..len]))
        {
            ids.push(parsed.id);
            rest = &token[len..];
        } else {
            rest = &token[prefix.len()..];
        }
    }
    ids
}

/// The length of the token `bytes` start with (after its prefix: a kind in
/// lower case, `:`, decimal digits, `:`, 16 hex digits), if they do.
fn token_length(bytes: &[u8]) -> Option<usize> {
    let mut at = TOKEN_PREFIX.len();
    let kind = bytes.get(at..)?.iter().take_while(|b| b.is_ascii_lowercase()).count();
    at += kind;
    (kind > 0 && bytes.get(at) == Some(&b':')).then_some(())?;
    at += 1;
    let id = bytes.get(at..)?.iter().take_while(|b| b.is_ascii_digit()).count();
    at += id;
    (id > 0 && bytes.get(at) == Some(&b':')).then_some(())?;
    at += 1;
    let secret = bytes.get(at..at + 16)?;
    secret.iter().all(u8::is_ascii_hexdigit).then_some(at + 16)
}
