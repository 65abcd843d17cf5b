//! Partitions: which of a stream's `n` partitions an event with a key (an ordering key, an
//! aggregate id) belongs to. The hash is part of the storage format, fixed for good, so that a
//! program in any language can compute it:
//!
//! ```text
//! hash = 0xcbf29ce484222325                      (FNV-1a, 64 bits)
//! for each byte b of the key's UTF-8:
//!     hash = (hash XOR b) * 0x100000001b3        (wrapping, mod 2^64)
//! partition = hash mod n
//! ```
//!
//! ```
//! use backbone_core::partition::partition_for;
//!
//! assert_eq!(partition_for("", 6), (0xcbf29ce484222325_u64 % 6) as u16);
//! assert_eq!(partition_for("order-42", 1), 0);
//! assert_eq!(partition_for("order-42", 6), partition_for("order-42", 6));
//! ```

/// The most partitions a stream may have.
pub const MAX_PARTITIONS: u16 = 1024;

/// The partition, `0..partitions`, of `key` (see the [module](self) for the hash). With one
/// partition (or zero, treated as one) it is always 0.
///
/// ```
/// use backbone_core::partition::partition_for;
///
/// // A reference value another implementation can check itself against: FNV-1a of "a".
/// assert_eq!(partition_for("a", 1000), (0xaf63dc4c8601ec8c_u64 % 1000) as u16);
/// ```
pub fn partition_for(key: &str, partitions: u16) -> u16 {
    if partitions <= 1 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_every_partition() {
        let mut counts = [0u32; 6];
        for i in 0..6000 {
            counts[usize::from(partition_for(&format!("key-{i}"), 6))] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
