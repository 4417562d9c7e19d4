//! Compact byte encodings of the store's values: block summaries, transaction-id lists and totals.
//!
//! Hand-written rather than JSON because every list page and header request decodes one meta per
//! row: fixed-width little-endian integers and length-prefixed UTF-8 strings decode with no
//! parsing. Each encoding starts with a version byte so that it can evolve with
//! [`super::FORMAT_VERSION`].

use super::{BlockMeta, StoreError, Totals};

const META_ENCODING: u8 = 1;
const TX_IDS_ENCODING: u8 = 1;

/// Encodes `meta` without its height, which is the row's key.
pub(super) fn encode_meta(meta: &BlockMeta) -> Vec<u8> {
    let strings = [
        &meta.hash,
        &meta.previous_hash,
        &meta.merkle_root,
        &meta.timestamp,
        &meta.producer,
    ];
    let text: usize = strings.iter().map(|s| 4 + s.len()).sum();
    let mut out = Vec::with_capacity(1 + 8 + 4 + 8 + text);
    out.push(META_ENCODING);
    out.extend_from_slice(&meta.timestamp_micros.to_le_bytes());
    out.extend_from_slice(&meta.transaction_count.to_le_bytes());
    out.extend_from_slice(&meta.block_size_bytes.to_le_bytes());
    for s in strings {
        put_str(&mut out, s);
    }
    out
}

/// Decodes a meta row stored under `height`.
pub(super) fn decode_meta(height: u64, bytes: &[u8]) -> Result<BlockMeta, StoreError> {
    let mut r = Reader::new(bytes, "block meta");
    r.version(META_ENCODING)?;
    let timestamp_micros = i64::from_le_bytes(r.array()?);
    let transaction_count = u32::from_le_bytes(r.array()?);
    let block_size_bytes = u64::from_le_bytes(r.array()?);
    let meta = BlockMeta {
        height,
        hash: r.string()?,
        previous_hash: r.string()?,
        merkle_root: r.string()?,
        timestamp: r.string()?,
        timestamp_micros,
        producer: r.string()?,
        transaction_count,
        block_size_bytes,
    };
    r.finish()?;
    Ok(meta)
}

/// Reads only the timestamp of an encoded meta: sorting a window by time needs no more.
pub(super) fn meta_timestamp(bytes: &[u8]) -> Result<i64, StoreError> {
    let mut r = Reader::new(bytes, "block meta");
    r.version(META_ENCODING)?;
    Ok(i64::from_le_bytes(r.array()?))
}

/// Encodes a block's transaction ids, kept so that a rollback can remove their index entries.
pub(super) fn encode_tx_ids(ids: &[String]) -> Vec<u8> {
    let text: usize = ids.iter().map(|s| 4 + s.len()).sum();
    let mut out = Vec::with_capacity(1 + 4 + text);
    out.push(TX_IDS_ENCODING);
    out.extend_from_slice(&len_u32(ids.len()).to_le_bytes());
    for id in ids {
        put_str(&mut out, id);
    }
    out
}

/// Decodes [`encode_tx_ids`].
pub(super) fn decode_tx_ids(bytes: &[u8]) -> Result<Vec<String>, StoreError> {
    let mut r = Reader::new(bytes, "transaction ids");
    r.version(TX_IDS_ENCODING)?;
    let count = u32::from_le_bytes(r.array()?) as usize;
    // Bounded by what the bytes could hold, so a corrupt count cannot demand a huge allocation
    let mut ids = Vec::with_capacity(count.min(bytes.len() / 4));
    for _ in 0..count {
        ids.push(r.string()?);
    }
    r.finish()?;
    Ok(ids)
}

/// Encodes totals as three little-endian u64.
pub(super) fn encode_totals(t: &Totals) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..8].copy_from_slice(&t.blocks.to_le_bytes());
    out[8..16].copy_from_slice(&t.transactions.to_le_bytes());
    out[16..].copy_from_slice(&t.bytes.to_le_bytes());
    out
}

/// Decodes [`encode_totals`].
pub(super) fn decode_totals(bytes: &[u8]) -> Result<Totals, StoreError> {
    let mut r = Reader::new(bytes, "totals");
    let totals = Totals {
        blocks: u64::from_le_bytes(r.array()?),
        transactions: u64::from_le_bytes(r.array()?),
        bytes: u64::from_le_bytes(r.array()?),
    };
    r.finish()?;
    Ok(totals)
}

/// Decodes a little-endian u32 value of the meta table.
pub(super) fn decode_u32(bytes: &[u8], what: &'static str) -> Result<u32, StoreError> {
    let mut r = Reader::new(bytes, what);
    let value = u32::from_le_bytes(r.array()?);
    r.finish()?;
    Ok(value)
}

/// Decodes a little-endian u64 value of the meta table.
pub(super) fn decode_u64(bytes: &[u8], what: &'static str) -> Result<u64, StoreError> {
    let mut r = Reader::new(bytes, what);
    let value = u64::from_le_bytes(r.array()?);
    r.finish()?;
    Ok(value)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&len_u32(s.len()).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn len_u32(len: usize) -> u32 {
    // Values are bounded far below 4 GiB by the block size limit; saturating keeps a bogus
    // length detectable on decode instead of wrapping silently
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// A cursor over an encoded value that reports truncation as corruption.
struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    fn corrupt(&self, why: &str) -> StoreError {
        StoreError::Corrupt(format!("{} record: {why}", self.what))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(self.corrupt("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn version(&mut self, expected: u8) -> Result<(), StoreError> {
        let [found] = self.array::<1>()?;
        if found == expected {
            Ok(())
        } else {
            Err(self.corrupt(&format!("unknown encoding {found}")))
        }
    }

    fn string(&mut self) -> Result<String, StoreError> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.corrupt("invalid UTF-8"))
    }

    fn finish(&self) -> Result<(), StoreError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.corrupt("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> BlockMeta {
        BlockMeta {
            height: 7,
            hash: "ab".repeat(32),
            previous_hash: "0".repeat(64),
            merkle_root: "cd".repeat(32),
            timestamp: "2024-01-01T00:00:10.500000+00:00".into(),
            timestamp_micros: 1_704_067_210_500_000,
            producer: "node-é".into(),
            transaction_count: 3,
            block_size_bytes: 2048,
        }
    }

    #[test]
    fn meta_survives_an_encode_decode_round_trip() {
        let m = meta();
        assert_eq!(decode_meta(7, &encode_meta(&m)).unwrap(), m);
        assert_eq!(
            meta_timestamp(&encode_meta(&m)).unwrap(),
            m.timestamp_micros
        );
    }

    #[test]
    fn truncated_meta_is_reported_as_corrupt() {
        let bytes = encode_meta(&meta());
        for cut in [0, 1, 10, bytes.len() - 1] {
            assert!(matches!(
                decode_meta(7, &bytes[..cut]),
                Err(StoreError::Corrupt(_))
            ));
        }
    }

    #[test]
    fn tx_ids_and_totals_survive_round_trips() {
        let ids = vec!["a".to_string(), String::new(), "tx-ü".to_string()];
        assert_eq!(decode_tx_ids(&encode_tx_ids(&ids)).unwrap(), ids);
        assert_eq!(
            decode_tx_ids(&encode_tx_ids(&[])).unwrap(),
            Vec::<String>::new()
        );
        let t = Totals {
            blocks: 1,
            transactions: u64::MAX,
            bytes: 42,
        };
        assert_eq!(decode_totals(&encode_totals(&t)).unwrap(), t);
    }

    #[test]
    fn a_huge_corrupt_tx_count_fails_without_allocating_it() {
        let mut bytes = vec![TX_IDS_ENCODING];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_tx_ids(&bytes), Err(StoreError::Corrupt(_))));
    }
}
