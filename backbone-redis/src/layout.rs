//! [`Layout`]: how one stream is laid out over its partitions, and the check that every
//! producer, consumer and store of a stream agrees on their number.

use backbone_core::partition::{partition_for, MAX_PARTITIONS};
use backbone_core::{Error, StreamAddress};

use crate::connection::{redis_error, Connection};
use crate::keys::StreamKeys;

/// The partitions of one stream: with one partition (the default), the stream's keys as
/// [`StreamKeys::new`] names them; with `n > 1`, partition `p` under the hash tag
/// `{<env>:<uri>#<p>}`, so that a cluster spreads them over its masters.
///
/// ```
/// use backbone_core::StreamAddress;
/// use backbone_redis::layout::Layout;
///
/// let layout = Layout::new(&StreamAddress::new(None, "orders").unwrap(), 3)?;
/// assert_eq!(layout.count(), 3);
/// assert_eq!(layout.partition(1).stream(), "bb:{orders#1}:events");
/// let p = layout.for_key("order-42");
/// assert_eq!(p, backbone_core::partition::partition_for("order-42", 3));
/// # Ok::<(), backbone_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    address: StreamAddress,
    partitions: Vec<StreamKeys>,
}

impl Layout {
    /// The layout of `address` over `count` partitions (1 to 1024).
    pub fn new(address: &StreamAddress, count: u16) -> Result<Self, Error> {
        if count == 0 || count > MAX_PARTITIONS {
            return Err(Error::Config(format!(
                "partitions must be 1 to {MAX_PARTITIONS}, not {count}"
            )));
        }
        Ok(Layout {
            address: address.clone(),
            partitions: (0..count)
                .map(|p| StreamKeys::partition(address, p, count))
                .collect(),
        })
    }

    /// The stream's address.
    pub fn address(&self) -> &StreamAddress {
        &self.address
    }

    /// How many partitions.
    pub fn count(&self) -> u16 {
        self.partitions.len() as u16
    }

    /// The keys of partition `index` (panics past [`count`](Self::count)).
    pub fn partition(&self, index: u16) -> &StreamKeys {
        &self.partitions[usize::from(index)]
    }

    /// The keys of every partition, in order.
    pub fn partitions(&self) -> &[StreamKeys] {
        &self.partitions
    }

    /// The partition of `key` ([`partition_for`]).
    pub fn for_key(&self, key: &str) -> u16 {
        partition_for(key, self.count())
    }

    /// The key recording the partition count: `bb:{<env>:<uri>}:partitions`.
    pub fn count_key(&self) -> String {
        StreamKeys::new(&self.address).partition_count()
    }

    /// Records the partition count unless one is recorded (`SET … NX`), then checks that the
    /// recorded count is this one: a producer, consumer or store configured otherwise than
    /// the stream refuses to start, with an error saying both numbers.
    pub(crate) async fn check(&self, connection: &mut Connection) -> Result<(), Error> {
        let key = self.count_key();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&key)
            .arg(self.count())
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&key);
        let (recorded,): (Option<String>,) = pipe
            .query_async(connection)
            .await
            .map_err(|e| redis_error(format!("record the partition count in {key}"), e))?;
        let recorded = recorded.unwrap_or_default();
        if recorded.parse::<u16>().ok() != Some(self.count()) {
            return Err(Error::Config(format!(
                "stream {} has {recorded} partition(s) (recorded in {key}) but this one is \
                 configured with {}: set partitions({recorded}) (a stream's partition count \
                 cannot change)",
                self.address,
                self.count()
            )));
        }
        Ok(())
    }
}
