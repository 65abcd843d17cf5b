//! [`RedisCluster`]: a Redis Cluster of [`RedisServer`] nodes on loopback, joined by hand
//! (`CLUSTER ADDSLOTSRANGE`, `CLUSTER MEET`, `CLUSTER REPLICATE`); its slots can be moved
//! between masters (`migrate`), the admin commands are in `admin`.

use std::collections::HashSet;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use backbone_core::Error;

use super::server::{free_port, RedisServer, ServerOptions};
use admin::{cmd, field, owners, parse_nodes, query, run, wait_for, NodeLine, SlotRange};

mod admin;
mod migrate;

/// The number of hash slots of a Redis Cluster.
const SLOTS: u16 = 16384;
/// The cluster bus of a node listens on its port plus this.
const BUS_OFFSET: u16 = 10000;
/// How long [`RedisCluster::start`] waits for the nodes to join and the cluster to be healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A Redis Cluster for tests: `masters` masters, each with `replicas_per_master` replicas, every
/// node a [`RedisServer`] on a free loopback port (below 55536, with port + 10000, its cluster
/// bus, free too) in its own temporary directory, started with `--cluster-enabled yes
/// --cluster-config-file nodes.conf --cluster-node-timeout 1000
/// --cluster-replica-validity-factor 0` and no persistence. Master `i` first serves the `i`-th
/// of `masters` equal slot ranges. Dropping the cluster kills every node.
///
/// ```no_run
/// # fn f() -> Result<(), backbone_core::Error> {
/// use std::time::Duration;
/// use backbone_redis::testing::RedisCluster;
/// let mut cluster = RedisCluster::start(3, 1)?;
/// let client = redis::Client::open(cluster.seed_urls()[0].as_str()).unwrap();
/// let owner = cluster.master_for_key("{orders}.events")?.expect("a healthy cluster serves every slot");
/// cluster.kill_master(0)?; // its replica takes over
/// cluster.wait_healthy(Duration::from_secs(20))?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Spawns `masters * (1 + replicas_per_master)` nodes, gives each master its slot range,
    /// joins them, makes the replicas replicate their masters, and waits (at most 30 s in all)
    /// until the cluster is healthy ([`wait_healthy`](Self::wait_healthy)). Blocking: from an
    /// async test, call it through `tokio::task::spawn_blocking`.
    ///
    /// ```no_run
    /// let cluster = backbone_redis::testing::RedisCluster::start(3, 1).unwrap();
    /// assert_eq!(cluster.seed_urls().len(), 6);
    /// ```
    pub fn start(masters: usize, replicas_per_master: usize) -> Result<RedisCluster, Error> {
        if masters == 0 || masters > usize::from(SLOTS) {
            let what = format!("a cluster needs 1 to {SLOTS} masters, not {masters}");
            return Err(Error::Config(what));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let options = ServerOptions {
            extra_args: [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--cluster-replica-validity-factor",
                "0",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        };
        let total = masters * (1 + replicas_per_master);
        let nodes = (0..total)
            .map(|_| RedisServer::spawn_with_ports(options.clone(), cluster_port))
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = RedisCluster { nodes };
        let nodes = &cluster.nodes;
        let mut ids = Vec::with_capacity(total);
        for (i, node) in nodes.iter().enumerate() {
            ids.push(run::<String>(node, cmd(&["MYID"]))?);
            // Distinct epochs, as redis-cli sets them: no epoch collisions to resolve.
            run::<()>(node, cmd(&["SET-CONFIG-EPOCH", &(i + 1).to_string()]))?;
        }
        for (i, node) in nodes[..masters].iter().enumerate() {
            let (first, last) = slot_range(i, masters);
            let range = cmd(&["ADDSLOTSRANGE", &first.to_string(), &last.to_string()]);
            run::<()>(node, range)?;
        }
        for node in &nodes[1..] {
            let meet = cmd(&["MEET", "127.0.0.1", &node.port().to_string()]);
            run::<()>(&nodes[0], meet)?;
        }
        wait_for(deadline, "every node to know every other", || {
            for node in nodes {
                let known = parse_nodes(&query::<String>(node, cmd(&["NODES"]))?).len();
                if known < total {
                    return Err(format!("{} knows {known} of {total} nodes", node.url()));
                }
            }
            Ok(())
        })?;
        for (k, node) in nodes.iter().enumerate().skip(masters) {
            let master = (k - masters) / replicas_per_master;
            run::<()>(node, cmd(&["REPLICATE", &ids[master]]))?;
        }
        cluster.wait_healthy(deadline.saturating_duration_since(Instant::now()))?;
        Ok(cluster)
    }

    /// The url, `redis://127.0.0.1:PORT/`, of every node (masters first, in the order of their
    /// first slot ranges, then the replicas), killed or not; a node keeps its url for life.
    ///
    /// ```no_run
    /// # let cluster: backbone_redis::testing::RedisCluster = todo!();
    /// let seeds = cluster.seed_urls(); // e.g. for redis::cluster::ClusterClient::new(seeds)
    /// ```
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url().to_owned()).collect()
    }

    /// Every node's url, comma-separated: the seeds for `REDIS_URL` with `REDIS_CLUSTER=1`.
    ///
    /// ```no_run
    /// # let cluster: backbone_redis::testing::RedisCluster = todo!();
    /// assert!(cluster.url().contains(','));
    /// ```
    pub fn url(&self) -> String {
        self.seed_urls().join(",")
    }

    /// Connection settings that reach this cluster through every node as a seed.
    ///
    /// ```no_run
    /// # let cluster: backbone_redis::testing::RedisCluster = todo!();
    /// let producer = backbone_redis::RedisProducerBuilder::new()
    ///     .settings(cluster.settings().uri("orders"));
    /// ```
    pub fn settings(&self) -> crate::settings::RedisSettings {
        crate::settings::RedisSettings::new()
            .url(self.url())
            .cluster(true)
    }

    /// The urls of the masters now serving slots, as the first running node sees them, in the
    /// order of their first slots (so index `i` names who serves the `i`-th initial range).
    ///
    /// ```no_run
    /// # let cluster: backbone_redis::testing::RedisCluster = todo!();
    /// assert_eq!(cluster.master_urls()?.len(), 3);
    /// # Ok::<(), backbone_core::Error>(())
    /// ```
    pub fn master_urls(&self) -> Result<Vec<String>, Error> {
        let mut ports = Vec::new();
        for (_, _, port) in owners(&self.view()?) {
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        Ok(ports.into_iter().map(loopback_url).collect())
    }

    /// The url of the running, not failed master that serves `slot`, as the first running node
    /// sees it; `None` while no such master serves it (e.g. during a failover), or for a slot
    /// of 16384 or more.
    ///
    /// ```no_run
    /// # let cluster: backbone_redis::testing::RedisCluster = todo!();
    /// let owner = cluster.master_for_slot(0)?.expect("slot 0 is served");
    /// # Ok::<(), backbone_core::Error>(())
    /// ```
    pub fn master_for_slot(&self, slot: u16) -> Result<Option<String>, Error> {
        let view = self.view()?;
        let owner = view.iter().find(|line| {
            line.is_master() && line.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
        });
        Ok(owner
            .filter(|line| !line.is_failing() && self.is_running(line.port))
            .map(|line| loopback_url(line.port)))
    }

    /// [`master_for_slot`](Self::master_for_slot) of the key's slot ([`key_slot`](Self::key_slot)).
    ///
    /// ```no_run
    /// # let cluster: backbone_redis::testing::RedisCluster = todo!();
    /// let owner = cluster.master_for_key("{orders}.events")?;
    /// # Ok::<(), backbone_core::Error>(())
    /// ```
    pub fn master_for_key(&self, key: &str) -> Result<Option<String>, Error> {
        self.master_for_slot(RedisCluster::key_slot(key))
    }

    /// The hash slot of `key`, as `CLUSTER KEYSLOT` computes it: CRC16 (XMODEM) of the key, or
    /// of its `{hash tag}` when it has a non-empty one, modulo 16384.
    ///
    /// ```
    /// use backbone_redis::testing::RedisCluster;
    /// assert_eq!(RedisCluster::key_slot("foo"), 12182);
    /// assert_eq!(RedisCluster::key_slot("{foo}.bar"), RedisCluster::key_slot("foo"));
    /// ```
    pub fn key_slot(key: &str) -> u16 {
        let key = key.as_bytes();
        let hashed = match key.iter().position(|&b| b == b'{') {
            Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
                Some(len) if len > 0 => &key[open + 1..open + 1 + len],
                _ => key,
            },
            None => key,
        };
        crc16(hashed) % SLOTS
    }

    /// Kills with SIGKILL the node that now serves the `i`-th initial slot range (the `i`-th of
    /// [`master_urls`](Self::master_urls)) and returns its index in
    /// [`seed_urls`](Self::seed_urls), for [`restart_node`](Self::restart_node).
    ///
    /// ```no_run
    /// # let mut cluster: backbone_redis::testing::RedisCluster = todo!();
    /// let killed = cluster.kill_master(0)?;
    /// # Ok::<(), backbone_core::Error>(())
    /// ```
    pub fn kill_master(&mut self, i: usize) -> Result<usize, Error> {
        let masters = self.master_urls()?;
        let url = masters.get(i).ok_or_else(|| {
            Error::Config(format!("no master {i}: the cluster has {}", masters.len()))
        })?;
        let node = self.nodes.iter().position(|n| n.url() == url);
        let node = node.ok_or_else(|| Error::Config(format!("{url} is not a node of ours")))?;
        self.nodes[node].kill();
        Ok(node)
    }

    /// Starts the `node`-th node of [`seed_urls`](Self::seed_urls) again, on its port and in
    /// its directory (so with its `nodes.conf`): an old master whose slots were taken over
    /// rejoins as a replica. Does nothing if it runs; does not wait for the cluster to be
    /// healthy ([`wait_healthy`](Self::wait_healthy) does).
    ///
    /// ```no_run
    /// # let mut cluster: backbone_redis::testing::RedisCluster = todo!();
    /// let killed = cluster.kill_master(0)?;
    /// cluster.wait_healthy(std::time::Duration::from_secs(20))?;
    /// cluster.restart_node(killed)?;
    /// cluster.wait_healthy(std::time::Duration::from_secs(20))?;
    /// # Ok::<(), backbone_core::Error>(())
    /// ```
    pub fn restart_node(&mut self, node: usize) -> Result<(), Error> {
        let count = self.nodes.len();
        let server = self.nodes.get_mut(node);
        let what = || Error::Config(format!("no node {node}: the cluster has {count}"));
        server.ok_or_else(what)?.start()
    }

    /// Waits at most `timeout` until the cluster is healthy: every running node says
    /// `cluster_state:ok`, sees every running node and none as failing, and agrees with the
    /// others on who serves which slot; every slot is served by a running master; every
    /// running replica's `master_link_status` is `up`. The error names what was not ready.
    ///
    /// ```no_run
    /// # let cluster: backbone_redis::testing::RedisCluster = todo!();
    /// cluster.wait_healthy(std::time::Duration::from_secs(20))?;
    /// # Ok::<(), backbone_core::Error>(())
    /// ```
    pub fn wait_healthy(&self, timeout: Duration) -> Result<(), Error> {
        wait_for(Instant::now() + timeout, "a healthy cluster", || {
            self.health()
        })
    }

    /// `Ok` if the cluster is healthy (see [`wait_healthy`](Self::wait_healthy)), else why not.
    fn health(&self) -> Result<(), String> {
        let live: Vec<&RedisServer> = self.nodes.iter().filter(|n| n.is_running()).collect();
        let live_ports: HashSet<u16> = live.iter().map(|n| n.port()).collect();
        let mut agreed: Option<(&str, Vec<SlotRange>)> = None;
        if live.is_empty() {
            return Err("no node is running".into());
        }
        for node in &live {
            let url = node.url();
            let info: String = query(node, cmd(&["INFO"]))?;
            if !info.contains("cluster_state:ok") {
                let state = field(&info, "cluster_state").unwrap_or("?");
                return Err(format!("{url} says cluster_state:{state}"));
            }
            let view = parse_nodes(&query::<String>(node, cmd(&["NODES"]))?);
            for &port in &live_ports {
                match view.iter().find(|line| line.port == port) {
                    None => return Err(format!("{url} does not know 127.0.0.1:{port}")),
                    Some(line) if line.is_failing() || line.has_flag("handshake") => {
                        let flags = line.flags.join(",");
                        return Err(format!("{url} sees 127.0.0.1:{port} as {flags}"));
                    }
                    Some(_) => {}
                }
            }
            let owners = owners(&view);
            let mut next = 0;
            for &(first, last, port) in &owners {
                if first != next {
                    return Err(format!("{url} sees slots {next}-{} unserved", first - 1));
                }
                if !live_ports.contains(&port) {
                    let what = format!("{url} sees slots {first}-{last} served by {port}");
                    return Err(format!("{what}, which is not running"));
                }
                next = last + 1;
            }
            if next != SLOTS {
                return Err(format!("{url} sees slots {next}-{} unserved", SLOTS - 1));
            }
            let serves = owners.iter().any(|&(_, _, port)| port == node.port());
            match &agreed {
                Some((other, theirs)) if *theirs != owners => {
                    return Err(format!(
                        "{url} and {other} disagree on who serves which slots"
                    ));
                }
                Some(_) => {}
                None => agreed = Some((url, owners)),
            }
            let mut info_replication = redis::cmd("INFO");
            info_replication.arg("replication");
            let replication: String = query(node, info_replication)?;
            match field(&replication, "role") {
                Some("master") if !serves => {
                    return Err(format!("{url} is a master that serves no slots"));
                }
                Some("master") => {}
                Some("slave") => {
                    if let Some((_, owners)) = &agreed {
                        if owners.iter().any(|&(_, _, port)| port == node.port()) {
                            return Err(format!("{url} is a replica but is seen serving slots"));
                        }
                    }
                    let link = field(&replication, "master_link_status").unwrap_or("?");
                    if link != "up" {
                        return Err(format!("{url} is a replica with master_link_status:{link}"));
                    }
                }
                role => return Err(format!("{url} has role {role:?}")),
            }
        }
        Ok(())
    }

    /// `CLUSTER NODES` of the first running node that answers.
    fn view(&self) -> Result<Vec<NodeLine>, Error> {
        let mut last = "no node is running".to_owned();
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            match query::<String>(node, cmd(&["NODES"])) {
                Ok(text) => return Ok(parse_nodes(&text)),
                Err(e) => last = e,
            }
        }
        Err(Error::Config(format!(
            "no node answered CLUSTER NODES: {last}"
        )))
    }

    fn is_running(&self, port: u16) -> bool {
        self.nodes
            .iter()
            .any(|n| n.port() == port && n.is_running())
    }
}

/// A free loopback port below 65536 - 10000 whose cluster bus port is free too (for now: a
/// port taken before redis-server binds it makes [`RedisServer`] try another).
fn cluster_port() -> Result<u16, Error> {
    for _ in 0..1000 {
        let port = free_port()?;
        if port < u16::MAX - BUS_OFFSET + 1
            && TcpListener::bind(("127.0.0.1", port + BUS_OFFSET)).is_ok()
        {
            return Ok(port);
        }
    }
    let what = "no free port below 55536 with its port + 10000 free too";
    Err(Error::Config(what.into()))
}

/// The `i`-th of `masters` equal slot ranges, first and last slot.
fn slot_range(i: usize, masters: usize) -> (usize, usize) {
    let slots = usize::from(SLOTS);
    (i * slots / masters, (i + 1) * slots / masters - 1)
}

fn loopback_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

/// CRC16/XMODEM (polynomial 0x1021, initial 0), the hash of Redis Cluster.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_xmodem_and_hash_tags_are_honoured() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(RedisCluster::key_slot("foo"), 12182);
        assert_eq!(RedisCluster::key_slot("a{}b"), crc16(b"a{}b") % SLOTS);
        assert_eq!(
            RedisCluster::key_slot("a{b}{c}"),
            RedisCluster::key_slot("b")
        );
    }
}
