//! The Lucid hashing rules (spec §2): BLAKE3 merkle root over tx ids and the block hash preimage.

use std::fmt::{self, Display, Write};

use super::ZERO_HASH;

/// Merkle root of transaction ids, as lowercase hex.
///
/// Empty → 64 `'0'`; leaf = `blake3(tx_id)`; parents hash the concatenated *hex text* of their
/// children, left to right, an odd last node pairing with itself.
pub fn merkle_root(tx_ids: &[&str]) -> String {
    merkle_root_of(tx_ids.iter().copied())
}

/// [`merkle_root`] over any sequence of ids, so callers need not collect a `Vec<&str>` first.
pub fn merkle_root_of<I, S>(tx_ids: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut level: Vec<blake3::Hash> = tx_ids
        .into_iter()
        .map(|id| blake3::hash(id.as_ref().as_bytes()))
        .collect();
    if level.is_empty() {
        return ZERO_HASH.to_owned();
    }
    // Reduce in place: parent i overwrites slot i, which both of its children have already left.
    while level.len() > 1 {
        let parents = level.len().div_ceil(2);
        for i in 0..parents {
            let left = level[2 * i];
            let right = level.get(2 * i + 1).copied().unwrap_or(left);
            let mut hasher = blake3::Hasher::new();
            hasher.update(left.to_hex().as_bytes());
            hasher.update(right.to_hex().as_bytes());
            level[i] = hasher.finalize();
        }
        level.truncate(parents);
    }
    level[0].to_hex().to_string()
}

/// Block hash: `blake3(height + previous_hash + timestamp + merkle_root + producer + tx_count)`,
/// a plain concatenation with height and count in decimal and the timestamp as written on the wire.
pub fn block_hash(
    height: u64,
    previous_hash: &str,
    timestamp: &str,
    merkle_root: &str,
    producer: &str,
    tx_count: usize,
) -> String {
    block_hash_with(
        height,
        previous_hash,
        timestamp,
        merkle_root,
        producer,
        tx_count,
    )
}

/// [`block_hash`] taking any `Display` timestamp (e.g. a [`super::Timestamp`]), streamed into
/// the hasher without building the preimage string.
pub fn block_hash_with(
    height: u64,
    previous_hash: &str,
    timestamp: impl Display,
    merkle_root: &str,
    producer: &str,
    tx_count: usize,
) -> String {
    let mut sink = HashSink(blake3::Hasher::new());
    // HashSink never fails and the Display impls used here (integers, &str, Timestamp) do not
    // either, so an error would be a bug in one of them.
    write!(
        sink,
        "{height}{previous_hash}{timestamp}{merkle_root}{producer}{tx_count}"
    )
    .expect("writing a preimage into a hasher cannot fail");
    sink.0.finalize().to_hex().to_string()
}

/// Lowercase hex of `blake3(text)`: a merkle leaf.
pub fn leaf_hash(tx_id: &str) -> String {
    blake3::hash(tx_id.as_bytes()).to_hex().to_string()
}

/// True when `s` is exactly 64 lowercase hex digits, the shape of every hash on the wire.
pub fn is_hash_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Adapts a BLAKE3 hasher to `fmt::Write` so formatted text feeds it directly.
struct HashSink(blake3::Hasher);

impl Write for HashSink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::fixtures::vectors;

    #[test]
    fn leaf_vectors_match() {
        let leaves = vectors()["leaves"]
            .as_object()
            .expect("leaves object")
            .clone();
        assert!(!leaves.is_empty());
        for (tx_id, expected) in leaves {
            assert_eq!(
                leaf_hash(&tx_id),
                expected.as_str().expect("hex"),
                "{tx_id}"
            );
            assert_eq!(merkle_root(&[&tx_id]), expected.as_str().expect("hex"));
        }
    }

    #[test]
    fn merkle_root_vectors_match() {
        let cases = vectors()["merkle_roots"].as_array().expect("array").clone();
        assert_eq!(cases.len(), 4);
        for case in cases {
            let ids: Vec<&str> = case["tx_ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_str().expect("id"))
                .collect();
            assert_eq!(
                merkle_root(&ids),
                case["root"].as_str().expect("root"),
                "{ids:?}"
            );
        }
    }

    #[test]
    fn block_hash_vectors_match() {
        let cases = vectors()["block_hashes"].as_array().expect("array").clone();
        assert_eq!(cases.len(), 6);
        for case in cases {
            let ids: Vec<&str> = case["tx_ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_str().expect("id"))
                .collect();
            let root = case["merkle_root"].as_str().expect("root");
            assert_eq!(merkle_root(&ids), root);
            let hash = block_hash(
                case["height"].as_u64().expect("height"),
                case["previous_hash"].as_str().expect("previous"),
                case["timestamp"].as_str().expect("timestamp"),
                root,
                case["producer"].as_str().expect("producer"),
                ids.len(),
            );
            assert_eq!(hash, case["hash"].as_str().expect("hash"));
        }
    }

    #[test]
    fn empty_merkle_root_is_sixty_four_zeros() {
        assert_eq!(merkle_root(&[]), "0".repeat(64));
    }

    #[test]
    fn odd_last_node_pairs_with_itself() {
        let (a, b, c) = (leaf_hash("a"), leaf_hash("b"), leaf_hash("c"));
        let parent = |l: &str, r: &str| {
            blake3::hash(format!("{l}{r}").as_bytes())
                .to_hex()
                .to_string()
        };
        let expected = parent(&parent(&a, &b), &parent(&c, &c));
        assert_eq!(merkle_root(&["a", "b", "c"]), expected);
    }

    #[test]
    fn recognises_only_lowercase_sixty_four_hex() {
        assert!(is_hash_hex(&"ab".repeat(32)));
        assert!(!is_hash_hex(&"AB".repeat(32)));
        assert!(!is_hash_hex(&"a".repeat(63)));
        assert!(!is_hash_hex(&"g".repeat(64)));
    }
}
