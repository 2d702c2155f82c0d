//! The one place where values become bytes and back on the host's side: the
//! arguments, results and messages it exchanges with guests.
//!
//! The format is MessagePack (`rmp-serde`), written exactly as the guest
//! SDK's `codec` module writes it (see the `entries` interface of
//! `wit/mp.wit`): structs as maps with their field names, enums as in JSON,
//! `None` as nil, and byte strings (`Vec<u8>`, `&[u8]`, `serde_bytes`) as
//! raw `bin`, never as an array of numbers. It describes itself, so the host
//! can turn JSON into it and back without knowing the guest's types: what
//! `host map` and `--entry` arguments do ([`from_json`], [`to_json`]).
//!
//! [`Batch`] carries many encoded values back to back in one buffer, for a
//! pool's chunks.

use rmp_serde::config::BytesMode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The encoding of nil: `()`, `None`, JSON's `null`.
pub(crate) const NIL: &[u8] = &[0xc0];

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

/// The encoding of the JSON text `json`.
pub(crate) fn from_json(json: &[u8]) -> Result<Vec<u8>, String> {
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    encode(&value)
}

/// An encoded value as JSON: byte strings become arrays of numbers, map
/// keys that are not strings their JSON text.
pub(crate) fn to_json(bytes: &[u8]) -> Result<serde_json::Value, String> {
    decode::<Json>(bytes).map(|json| json.0)
}

/// Any value, as JSON.
struct Json(serde_json::Value);

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor).map(Json)
    }
}

struct JsonVisitor;

impl<'de> serde::de::Visitor<'de> for JsonVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(v.iter().map(|&b| serde_json::Value::from(b)).collect())
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Json::deserialize(d).map(|json| json.0)
    }

    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Json::deserialize(d).map(|json| json.0)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Json(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some((Json(key), Json(value))) = map.next_entry()? {
            let key = match key {
                serde_json::Value::String(key) => key,
                other => other.to_string(),
            };
            object.insert(key, value);
        }
        Ok(serde_json::Value::Object(object))
    }
}

/// Encoded values back to back: item `i` is `data[ends[i - 1]..ends[i]]`
/// (from 0 for the first). The WIT `batch` record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Batch {
    #[serde(with = "serde_bytes")]
    pub(crate) data: Vec<u8>,
    pub(crate) ends: Vec<u32>,
}

impl Batch {
    /// A batch with room for `items` items of `bytes` bytes in all.
    pub(crate) fn with_capacity(items: usize, bytes: usize) -> Batch {
        Batch { data: Vec::with_capacity(bytes), ends: Vec::with_capacity(items) }
    }

    /// A batch of the one item `bytes`.
    pub(crate) fn one(bytes: Vec<u8>) -> Batch {
        let ends = vec![bytes.len() as u32];
        Batch { data: bytes, ends }
    }

    /// How many items it holds.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Item `index`'s bytes (empty for an index past the end or a batch
    /// whose ends are out of order: a peer's batch is not trusted).
    pub(crate) fn get(&self, index: usize) -> &[u8] {
        let start = if index == 0 { 0 } else { self.ends.get(index - 1).map_or(0, |&e| e as usize) };
        let end = self.ends.get(index).map_or(0, |&e| e as usize);
        self.data.get(start..end).unwrap_or(&[])
    }

    /// Appends an item already encoded.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.ends.push(self.data.len() as u32);
    }

    /// Encodes `value` as the next item.
    pub(crate) fn push_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), String> {
        let mark = self.data.len();
        if let Err(why) = encode_into(&mut self.data, value) {
            self.data.truncate(mark);
            return Err(why);
        }
        self.ends.push(self.data.len() as u32);
        Ok(())
    }

    /// A copy of items `from..to` (clamped to the batch), as a batch of
    /// their own.
    pub(crate) fn part(&self, from: usize, to: usize) -> Batch {
        let to = to.min(self.len());
        let from = from.min(to);
        let base = if from == 0 { 0 } else { self.ends[from - 1] };
        let end = if to == 0 { 0 } else { self.ends[to - 1] };
        let data = self.data.get(base as usize..end as usize).unwrap_or(&[]).to_vec();
        let ends = self.ends[from..to].iter().map(|e| e.saturating_sub(base)).collect();
        Batch { data, ends }
    }

    /// Copies of its items in consecutive batches of `size` (at least one),
    /// the last one shorter.
    pub(crate) fn chunks(&self, size: usize) -> impl Iterator<Item = Batch> + '_ {
        let size = size.max(1);
        (0..self.len()).step_by(size).map(move |from| self.part(from, from + size))
    }
}

/// The results of a batch of calls: one per item, in order, in `results`;
/// an item that failed has no bytes there and its index and message in
/// `failed` (in order of index). The WIT `batch-results` record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BatchResults {
    pub(crate) results: Batch,
    pub(crate) failed: Vec<(u32, String)>,
}

impl BatchResults {
    /// How many results it holds.
    pub(crate) fn len(&self) -> usize {
        self.results.len()
    }

    /// Item `index`'s result: its bytes, or why it failed.
    pub(crate) fn get(&self, index: usize) -> Result<&[u8], &str> {
        match self.failed.binary_search_by_key(&(index as u32), |(i, _)| *i) {
            Ok(at) => Err(&self.failed[at].1),
            Err(_) => Ok(self.results.get(index)),
        }
    }

    /// The results of one call.
    pub(crate) fn one(result: Result<Vec<u8>, String>) -> BatchResults {
        match result {
            Ok(bytes) => BatchResults { results: Batch::one(bytes), failed: Vec::new() },
            Err(why) => BatchResults { results: Batch::one(Vec::new()), failed: vec![(0, why)] },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_bytes_stay_bytes() {
        let bytes: Vec<u8> = (0..(3usize << 20)).map(|i| (i * 7 % 256) as u8).collect();
        let encoded = encode(&bytes).unwrap();
        assert!(encoded.len() <= bytes.len() + 5, "raw bytes, not an array of numbers");
        assert_eq!(decode::<Vec<u8>>(&encoded).unwrap(), bytes);
        let buf = serde_bytes::ByteBuf::from(bytes.clone());
        assert_eq!(encode(&buf).unwrap(), encoded);
        assert_eq!(decode::<serde_bytes::ByteBuf>(&encoded).unwrap().into_vec(), bytes);
        assert_eq!(decode::<Vec<u8>>(&encode(&Vec::<u8>::new()).unwrap()).unwrap(), Vec::<u8>::new());

        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        enum E {
            A,
            B(i64),
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct S {
            name: String,
            e: Vec<E>,
            f: Option<f64>,
        }
        let value = (1u8, -7i64, u64::MAX, S { name: "x".into(), e: vec![E::A, E::B(3)], f: None });
        assert_eq!(decode::<(u8, i64, u64, S)>(&encode(&value).unwrap()).unwrap(), value);
    }

    #[test]
    fn json_passes_through_untyped() {
        let packed = from_json(br#"{"name":"x","e":["A",{"B":-3}],"f":2.5}"#).unwrap();
        #[derive(Debug, PartialEq, Deserialize)]
        enum E {
            A,
            B(i64),
        }
        #[derive(Debug, PartialEq, Deserialize)]
        struct S {
            name: String,
            e: Vec<E>,
            f: Option<f64>,
        }
        let s: S = decode(&packed).unwrap();
        assert_eq!(s, S { name: "x".into(), e: vec![E::A, E::B(-3)], f: Some(2.5) });
        assert_eq!(decode::<i64>(&from_json(b"3").unwrap()).unwrap(), 3);
        assert_eq!(decode::<f64>(&from_json(b"3").unwrap()).unwrap(), 3.0);
        let back = to_json(&encode(&(1, "two", [3.5])).unwrap()).unwrap();
        assert_eq!(back, serde_json::json!([1, "two", [3.5]]));
        assert!(from_json(b"{nope").is_err());
        let bytes = encode(&(vec![1u8, 255], std::collections::BTreeMap::from([(7u32, None::<u8>)]))).unwrap();
        assert_eq!(to_json(&bytes).unwrap(), serde_json::json!([[1, 255], {"7": null}]));
    }

    #[test]
    fn batches_hold_items_back_to_back() {
        let mut batch = Batch::default();
        for i in 0..10i64 {
            batch.push_value(&(i * 1000)).unwrap();
        }
        batch.push(&[]);
        assert_eq!(batch.len(), 11);
        assert_eq!(decode::<i64>(batch.get(3)).unwrap(), 3000);
        assert_eq!(batch.get(10), &[] as &[u8]);
        assert_eq!(batch.get(99), &[] as &[u8]);
        let (head, tail) = (batch.part(0, 4), batch.part(4, 99));
        assert_eq!((head.len(), tail.len()), (4, 7));
        assert_eq!(decode::<i64>(tail.get(0)).unwrap(), 4000);
        assert_eq!(decode::<i64>(head.get(3)).unwrap(), 3000);
        assert_eq!(batch.part(5, 2).len(), 0);
        let sizes: Vec<usize> = batch.chunks(4).map(|chunk| chunk.len()).collect();
        assert_eq!(sizes, [4, 4, 3]);
        assert_eq!(decode::<i64>(batch.chunks(4).nth(1).unwrap().get(0)).unwrap(), 4000);
        let results = BatchResults { results: head, failed: vec![(1, "no".into())] };
        assert_eq!(results.get(1), Err("no"));
        assert_eq!(decode::<i64>(results.get(2).unwrap()).unwrap(), 2000);
        assert_eq!(BatchResults::one(Err("x".into())).get(0), Err("x"));
        let hostile = Batch { data: vec![1, 2], ends: vec![5, 1] };
        assert_eq!((hostile.get(0), hostile.get(1)), (&[] as &[u8], &[] as &[u8]));
    }
}
