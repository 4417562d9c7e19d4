//! Test support: the shared vectors file, in-memory chain views and a key-order reader.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde_json::Value;

use super::ChainView;

/// `../shared/vectors.json` beside the repository, read once.
pub fn vectors() -> &'static Value {
    static VECTORS: OnceLock<Value> = OnceLock::new();
    VECTORS.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors.json");
        let text = std::fs::read_to_string(path).expect("shared/vectors.json is readable");
        serde_json::from_str(&text).expect("shared/vectors.json is JSON")
    })
}

/// A chain with nothing stored.
pub struct EmptyChain;

impl ChainView for EmptyChain {
    fn hash_at(&self, _height: u64) -> Option<String> {
        None
    }

    fn tx_exists(&self, _tx_id: &str) -> bool {
        false
    }
}

/// A chain holding the given hashes by height and tx ids.
#[derive(Debug, Default)]
pub struct MemoryChain {
    pub hashes: HashMap<u64, String>,
    pub tx_ids: HashSet<String>,
}

impl MemoryChain {
    /// A chain whose block at `height` has `hash`.
    pub fn with_block(height: u64, hash: &str) -> MemoryChain {
        let mut chain = MemoryChain::default();
        chain.hashes.insert(height, hash.to_owned());
        chain
    }
}

impl ChainView for MemoryChain {
    fn hash_at(&self, height: u64) -> Option<String> {
        self.hashes.get(&height).cloned()
    }

    fn tx_exists(&self, tx_id: &str) -> bool {
        self.tx_ids.contains(tx_id)
    }
}

/// The keys of a JSON object in the order the text writes them (a `Value` map may sort them).
pub fn top_level_keys_in_order(json: &str) -> Vec<String> {
    let mut de = serde_json::Deserializer::from_str(json);
    let order: KeyOrder = serde::Deserialize::deserialize(&mut de).expect("a JSON object");
    order.0
}

struct KeyOrder(Vec<String>);

impl<'de> serde::Deserialize<'de> for KeyOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(KeyOrderVisitor)
    }
}

struct KeyOrderVisitor;

impl<'de> serde::de::Visitor<'de> for KeyOrderVisitor {
    type Value = KeyOrder;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<KeyOrder, A::Error> {
        let mut keys = Vec::new();
        while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
            keys.push(key);
        }
        Ok(KeyOrder(keys))
    }
}
