//! The one place where values become bytes and back: every argument, result
//! and message this SDK exchanges with the host is encoded here.
//!
//! The format is MessagePack (`rmp-serde`), configured as the host's
//! `codec` module is: structs as maps (field names kept, so that the host
//! can show a value as JSON), enums as in JSON (a unit variant is its name,
//! another a one-entry map), and a `Vec<u8>` or `&[u8]` (as well as
//! `serde_bytes` types) as raw MessagePack `bin`, never an array of numbers.
//! The format is self-describing, so the host can turn a value into JSON
//! and back (`host map`, `--entry` arguments) without knowing its type.

use rmp_serde::config::BytesMode;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Appends `value`'s encoding to `out`.
pub(crate) fn encode_into<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), String> {
    let mut serializer = rmp_serde::Serializer::new(out).with_struct_map().with_bytes(BytesMode::ForceIterables);
    value.serialize(&mut serializer).map_err(|e| e.to_string())
}

/// `value`'s encoding.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(16);
    encode_into(&mut out, value)?;
    Ok(out)
}

/// The value `bytes` encode.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
}

/// The encoding of `()`, what an entry without a result returns.
pub(crate) const UNIT: &[u8] = &[0xc0];
