//! Ordered groups ([`RedisConsumerBuilder::ordered`](super::RedisConsumerBuilder::ordered)):
//! each partition is owned by one member of the group at a time, so the events of one key
//! (which all live in one partition) are handled by one consumer at a time, in order.
//!
//! Every `lease_ttl / 3` a member renews its membership (`members.lua`: a sorted set scored by
//! expiry, on the server's clock) and reads the live members; partition `p` is assigned to the
//! `p % m`-th of the `m` members sorted by id. For each partition assigned to it, a member takes
//! the partition's lease (`SET … NX PX lease_ttl`), claims every entry pending in the partition
//! (`XAUTOCLAIM … 0 … JUSTID`: what the previous owner left) and starts the partition's tasks,
//! which read those pending entries first, in stream order, then new ones. A partition no longer
//! assigned to it is stopped gracefully (the events in hand finish and are acknowledged) and only
//! then is its lease released, so the next owner starts where it stopped. A member that dies
//! stops renewing: its membership and leases expire after `lease_ttl` and the others take over.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backbone_core::{Error, EventHandler, StreamAddress};
use redis::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Part, RedisConsumerBuilder};
use crate::connection::{redis_error, Connection};
use crate::layout::Layout;
use crate::lua::{LEASE, MEMBERS};
use crate::retry::classify;

/// One member of an ordered group and what it needs to start a partition's tasks.
pub(super) struct Ordered {
    pub builder: RedisConsumerBuilder,
    pub layout: Layout,
    pub address: StreamAddress,
    /// The consumer's name in the Redis group.
    pub name: String,
    /// This member's id: the name and a per-start suffix, unique in the group.
    pub member: String,
    pub handler: Arc<dyn EventHandler>,
    pub commands: Connection,
    pub lease_ttl: Duration,
    pub health: Arc<super::health::Tracker>,
}

/// A partition this member owns (or is leaving).
struct Owned {
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), Error>>>,
    /// When the lease was last renewed (or taken).
    renewed: Instant,
    /// Being stopped: its lease is released once its tasks end.
    leaving: bool,
}

impl Ordered {
    /// Runs the member until `stop` is cancelled or an error ends it; then stops every owned
    /// partition gracefully, releases their leases and leaves the group.
    pub(super) async fn run(mut self, stop: CancellationToken) -> Result<(), Error> {
        let mut owned: BTreeMap<u16, Owned> = BTreeMap::new();
        let every = (self.lease_ttl / 3).max(Duration::from_millis(10));
        let outcome = loop {
            if let Err(e) = self.round(&mut owned).await {
                break Err(e);
            }
            tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                _ = tokio::time::sleep(every) => {}
            }
        };
        for partition in owned.values() {
            partition.stop.cancel();
        }
        let mut outcome = outcome;
        for (p, mut partition) in std::mem::take(&mut owned) {
            if let Some(task) = partition.task.take() {
                if let Err(e) = joined(task.await) {
                    outcome = outcome.and(Err(e));
                }
            }
            let _ = self.release(p).await;
        }
        let _ = self.members("leave").await;
        outcome
    }

    /// One round: ends on a partition's error, keeps the membership, gives up partitions
    /// assigned elsewhere, takes those assigned here, renews the leases held.
    async fn round(&mut self, owned: &mut BTreeMap<u16, Owned>) -> Result<(), Error> {
        // Partitions whose tasks ended: a left one's lease goes; an error ends the member.
        let ended: Vec<u16> = owned
            .iter()
            .filter(|(_, o)| o.task.as_ref().is_some_and(JoinHandle::is_finished))
            .map(|(p, _)| *p)
            .collect();
        for p in ended {
            let mut partition = owned.remove(&p).expect("listed above");
            let result = joined(partition.task.take().expect("finished").await);
            self.release(p).await.map_err(|e| self.fatal_only(e)).ok();
            if !partition.leaving {
                result?;
            }
        }
        match self.members("join").await {
            Ok(members) => {
                let assigned = assignment(&members, &self.member, self.layout.count());
                for (p, partition) in owned.iter_mut() {
                    if !assigned.contains(p) && !partition.leaving {
                        tracing::info!(stream = self.layout.partition(*p).stream(), member = %self.member,
                            "partition assigned to another member; stopping it");
                        partition.leaving = true;
                        partition.stop.cancel();
                    }
                }
                for p in assigned {
                    if let std::collections::btree_map::Entry::Vacant(free) = owned.entry(p) {
                        if let Some(partition) = self.take(p).await? {
                            free.insert(partition);
                        }
                    }
                }
            }
            Err(e) => {
                let e = self.fatal_only(e)?;
                tracing::warn!(member = %self.member, error = %e, "ordered group: membership not renewed; will try again");
            }
        }
        for (p, partition) in owned.iter_mut() {
            match self.renew(*p).await {
                Ok(true) => partition.renewed = Instant::now(),
                Ok(false) if partition.leaving => {}
                Ok(false) => {
                    tracing::warn!(stream = self.layout.partition(*p).stream(), member = %self.member,
                        "lease lost (not renewed within lease_ttl); stopping the partition");
                    partition.leaving = true;
                    partition.stop.cancel();
                }
                Err(e) => {
                    let e = self.fatal_only(e)?;
                    if partition.renewed.elapsed() >= self.lease_ttl * 2 / 3 && !partition.leaving {
                        tracing::warn!(stream = self.layout.partition(*p).stream(), error = %e,
                            "lease not renewed and about to expire; stopping the partition");
                        partition.leaving = true;
                        partition.stop.cancel();
                    }
                }
            }
        }
        Ok(())
    }

    /// An error that ends the member, else the error to log and retry.
    fn fatal_only(&self, e: Error) -> Result<Error, Error> {
        if classify(&e).is_transient() {
            Ok(e)
        } else {
            Err(e)
        }
    }

    /// Takes partition `p` if its lease is free: the lease, then everything pending in the
    /// partition, then its tasks. `None` when another member still holds the lease.
    async fn take(&mut self, p: u16) -> Result<Option<Owned>, Error> {
        let keys = self.layout.partition(p).clone();
        let lease = keys.lease(&self.builder.group);
        let taken: Option<String> = redis::cmd("SET")
            .arg(&lease)
            .arg(&self.member)
            .arg("NX")
            .arg("PX")
            .arg(self.lease_ttl.as_millis() as u64)
            .query_async(&mut self.commands)
            .await
            .map_err(|e| redis_error(format!("take the lease {lease}"), e))
            .or_else(|e| {
                self.fatal_only(e).map(|e| {
                    tracing::warn!(lease, error = %e, "could not take the lease; will try again");
                    None
                })
            })?;
        if taken.is_none() {
            return Ok(None);
        }
        let renewed = Instant::now();
        match self.start(p).await {
            Ok((stop, task)) => {
                tracing::info!(stream = keys.stream(), member = %self.member, "partition taken");
                Ok(Some(Owned {
                    stop,
                    task: Some(task),
                    renewed,
                    leaving: false,
                }))
            }
            Err(e) => {
                let _ = self.release(p).await;
                let e = self.fatal_only(e)?;
                tracing::warn!(stream = keys.stream(), error = %e, "could not start the partition; will try again");
                Ok(None)
            }
        }
    }

    /// With partition `p`'s lease held: claims what is pending there and starts its tasks.
    async fn start(
        &mut self,
        p: u16,
    ) -> Result<(CancellationToken, JoinHandle<Result<(), Error>>), Error> {
        let keys = self.layout.partition(p).clone();
        self.claim_pending(keys.stream()).await?;
        let who = [self.builder.group.as_str(), self.name.as_str()];
        let reader = self
            .builder
            .settings
            .connect_blocking("reader", &who, self.builder.block)
            .await?;
        let stop = CancellationToken::new();
        let task = self.builder.start_partition(
            Part {
                health: self.health.clone(),
                partition: (self.layout.count() > 1).then_some(u32::from(p)),
                keys,
                address: self.address.clone(),
                name: self.name.clone(),
                handler: self.handler.clone(),
                commands: self.commands.clone(),
                reader,
            },
            stop.clone(),
        );
        Ok((stop, task))
    }

    /// Moves every entry pending in `stream` (whoever holds it) to this consumer, without
    /// counting a delivery, so that its reader handles them first, in stream order.
    async fn claim_pending(&mut self, stream: &str) -> Result<(), Error> {
        let mut cursor = "0-0".to_owned();
        loop {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(stream)
                .arg(&self.builder.group)
                .arg(&self.name)
                .arg(0)
                .arg(&cursor)
                .arg("COUNT")
                .arg(1000)
                .arg("JUSTID")
                .query_async(&mut self.commands)
                .await
                .map_err(|e| {
                    redis_error(format!("XAUTOCLAIM the pending entries of {stream}"), e)
                })?;
            let next = match &reply {
                Value::Array(parts) => match parts.first() {
                    Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(Value::SimpleString(s)) => s.clone(),
                    _ => "0-0".to_owned(),
                },
                _ => "0-0".to_owned(),
            };
            if next == "0-0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Renews partition `p`'s lease: `false` when this member no longer holds it.
    async fn renew(&mut self, p: u16) -> Result<bool, Error> {
        self.lease_script(p, "renew").await
    }

    /// Releases partition `p`'s lease if this member holds it.
    async fn release(&mut self, p: u16) -> Result<bool, Error> {
        self.lease_script(p, "release").await
    }

    async fn lease_script(&mut self, p: u16, op: &str) -> Result<bool, Error> {
        let lease = self.layout.partition(p).lease(&self.builder.group);
        let done: i64 = LEASE
            .key(&lease)
            .arg(op)
            .arg(&self.member)
            .arg(self.lease_ttl.as_millis() as u64)
            .invoke_async(&mut self.commands)
            .await
            .map_err(|e| redis_error(format!("{op} the lease {lease}"), e))?;
        Ok(done == 1)
    }

    /// Joins (or stays in) or leaves the group; the live members.
    async fn members(&mut self, op: &str) -> Result<Vec<String>, Error> {
        let key = crate::keys::StreamKeys::new(&self.address).members(&self.builder.group);
        MEMBERS
            .key(&key)
            .arg(op)
            .arg(&self.member)
            .arg(self.lease_ttl.as_millis() as u64)
            .invoke_async(&mut self.commands)
            .await
            .map_err(|e| redis_error(format!("{op} the ordered group in {key}"), e))
    }
}

/// The partitions assigned to `member`: partition `p` goes to the `p % m`-th of the `m`
/// members sorted by id (none while `member` is not among them).
fn assignment(members: &[String], member: &str, partitions: u16) -> Vec<u16> {
    let mut sorted: Vec<&str> = members.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let Some(index) = sorted.iter().position(|m| *m == member) else {
        return Vec::new();
    };
    (0..partitions)
        .filter(|p| usize::from(*p) % sorted.len() == index)
        .collect()
}

fn joined(result: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), Error> {
    result.unwrap_or_else(|e| {
        Err(Error::Stopped(format!(
            "consumer stopped: a partition's task failed: {e}"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::assignment;

    #[test]
    fn partitions_are_dealt_round_the_sorted_members() {
        let members = ["c".to_owned(), "a".to_owned(), "b".to_owned()];
        assert_eq!(assignment(&members, "a", 6), [0, 3]);
        assert_eq!(assignment(&members, "b", 6), [1, 4]);
        assert_eq!(assignment(&members, "c", 6), [2, 5]);
        assert_eq!(assignment(&members, "d", 6), Vec::<u16>::new());
        assert_eq!(assignment(&members[..1], "c", 2), [0, 1]);
    }
}
