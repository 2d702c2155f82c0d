//! Handles as they travel in a child's spawn arguments: a [`Token`] names
//! the object and carries the secret that proves the sender held it
//! ([`random_u64`] draws it), and [`handed_ids`] finds the tokens in
//! encoded arguments.

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

/// 64 random bits, for the secrets of tokens.
pub(crate) fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    #[cfg(unix)]
    {
        // SAFETY: the kernel writes at most `bytes.len()` bytes into `bytes`
        // (nix has no getrandom).
        let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if got == bytes.len() as isize {
            return u64::from_le_bytes(bytes);
        }
    }
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    bytes = hasher.finish().to_le_bytes();
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_in_a_childs_arguments() {
        let token = |id| Token { kind: Kind::Queue, id, secret: 0xabc }.encode();
        let input = format!("[\"{}\",3,[\"{}\",\"mp-sync:nonsense\"],\"{}\"]", token(7), token(9), token(7));
        assert_eq!(handed_ids(input.as_bytes()), vec![7, 9, 7]);
        assert_eq!(handed_ids(b"null"), Vec::<u64>::new());
        // In MessagePack a token is followed by whatever the next value is.
        let packed = crate::codec::encode(&(token(7), 51u8, token(9), "abc", token(8))).unwrap();
        assert_eq!(handed_ids(&packed), vec![7, 9, 8]);
        let mut glued = token(3).into_bytes();
        glued.extend_from_slice(b"3f");
        assert_eq!(handed_ids(&glued), vec![3]);
    }

    #[test]
    fn tokens_round_trip_and_refuse_garbage() {
        let token = Token { kind: Kind::Connection, id: 42, secret: 0xdead_beef };
        assert_eq!(Token::parse(&token.encode()), Ok(token));
        for bad in ["", "mp-sync:", "mp-sync:queue:1", "mp-sync:frob:1:2", "mp-sync:queue:x:2", "mp-sync:queue:1:2:3"] {
            assert!(matches!(Token::parse(bad), Err(Error::UnknownObject(_))), "{bad}");
        }
    }
}
