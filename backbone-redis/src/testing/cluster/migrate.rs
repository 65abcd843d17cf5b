//! Moving a hash slot, keys and all, from its master to another one, the way
//! `redis-cli --cluster reshard` does: `CLUSTER SETSLOT … IMPORTING` / `MIGRATING`, `MIGRATE`
//! the slot's keys in batches, then `CLUSTER SETSLOT … NODE` on every master.

use std::time::{Duration, Instant};

use backbone_core::Error;

use super::admin::{cmd, parse_nodes, query, run, wait_for};
use super::{RedisCluster, RedisServer, SLOTS};

/// Keys moved by one `MIGRATE`, at most.
const KEYS_PER_MIGRATE: usize = 100;
/// `MIGRATE`'s timeout for its own I/O with the target (ms).
const MIGRATE_TIMEOUT_MS: u64 = 1000;
/// How long [`RedisCluster::migrate_slot`] waits for every node to agree on the new owner.
const AGREE_TIMEOUT: Duration = Duration::from_secs(30);

impl RedisCluster {
    /// Moves `slot` and its keys to the master that now serves the `to`-th initial slot range
    /// (the `to`-th of [`master_urls`](Self::master_urls)), and returns how many keys moved:
    /// `CLUSTER SETSLOT slot IMPORTING` on the target and `MIGRATING` on the source, then
    /// `CLUSTER GETKEYSINSLOT` and `MIGRATE … REPLACE KEYS …` in batches of 100 until the
    /// source has none left, then `CLUSTER SETSLOT slot NODE` on the target, the source and
    /// every other master; waits (at most 30 s) until every running node sees the target
    /// serving the slot. Meanwhile clients get `ASK` (a key already moved or new) and
    /// `TRYAGAIN` (a multi-key command whose keys are split), and `MOVED` once it is done.
    /// Does nothing and returns 0 when the target serves the slot already. Blocking, like
    /// the rest of the fixture: from an async test, call it through
    /// `tokio::task::spawn_blocking`.
    ///
    /// ```no_run
    /// # let cluster: backbone_redis::testing::RedisCluster = todo!();
    /// use backbone_redis::testing::RedisCluster;
    /// let slot = RedisCluster::key_slot("{orders}.events");
    /// let to = (0..3).find(|&i| cluster.master_urls().unwrap()[i] != cluster.master_for_slot(slot).unwrap().unwrap()).unwrap();
    /// let moved = cluster.migrate_slot(slot, to)?;
    /// assert_eq!(cluster.master_for_slot(slot)?, Some(cluster.master_urls()?[to].clone()));
    /// # Ok::<(), backbone_core::Error>(())
    /// ```
    pub fn migrate_slot(&self, slot: u16, to: usize) -> Result<usize, Error> {
        if slot >= SLOTS {
            return Err(Error::Config(format!(
                "no slot {slot}: slots end at {SLOTS}"
            )));
        }
        let masters = self.master_urls()?;
        let target_url = masters.get(to).ok_or_else(|| {
            Error::Config(format!("no master {to}: the cluster has {}", masters.len()))
        })?;
        let source_url = self.master_for_slot(slot)?.ok_or_else(|| {
            Error::Config(format!("slot {slot} is not served by a running master now"))
        })?;
        if source_url == *target_url {
            return Ok(0);
        }
        let (source, target) = (self.node_at(&source_url)?, self.node_at(target_url)?);
        let source_id: String = run(source, cmd(&["MYID"]))?;
        let target_id: String = run(target, cmd(&["MYID"]))?;
        let at = slot.to_string();
        run::<()>(target, cmd(&["SETSLOT", &at, "IMPORTING", &source_id]))?;
        run::<()>(source, cmd(&["SETSLOT", &at, "MIGRATING", &target_id]))?;
        let mut moved = 0;
        let batch = KEYS_PER_MIGRATE.to_string();
        loop {
            let keys: Vec<Vec<u8>> = run(source, cmd(&["GETKEYSINSLOT", &at, &batch]))?;
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(target.port())
                .arg("")
                .arg(0)
                .arg(MIGRATE_TIMEOUT_MS)
                .arg("REPLACE")
                .arg("KEYS")
                .arg(&keys);
            run::<()>(source, migrate)?;
            moved += keys.len();
        }
        // The target first: once the source lets go, the target must already own the slot.
        let mut order = vec![target, source];
        for line in self.view()?.iter().filter(|line| line.is_master()) {
            let other = self.nodes.iter().find(|n| n.port() == line.port);
            if let Some(node) =
                other.filter(|n| n.is_running() && !order.iter().any(|o| o.port() == n.port()))
            {
                order.push(node);
            }
        }
        for node in order {
            run::<()>(node, cmd(&["SETSLOT", &at, "NODE", &target_id]))?;
        }
        let deadline = Instant::now() + AGREE_TIMEOUT;
        let what = format!("every node to see slot {slot} served by {target_url}");
        wait_for(deadline, &what, || {
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                let view = parse_nodes(&query::<String>(node, cmd(&["NODES"]))?);
                let owner = view.iter().find(|line| {
                    line.is_master() && line.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
                });
                match owner.map(|line| line.port) {
                    Some(port) if port == target.port() => {}
                    other => return Err(format!("{} sees it served by {other:?}", node.url())),
                }
            }
            Ok(())
        })?;
        Ok(moved)
    }

    /// The node whose url is `url`.
    fn node_at(&self, url: &str) -> Result<&RedisServer, Error> {
        let node = self.nodes.iter().find(|n| n.url() == url);
        node.ok_or_else(|| Error::Config(format!("{url} is not a node of ours")))
    }
}
