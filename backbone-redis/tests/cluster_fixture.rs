//! `RedisCluster` against real `redis-server` nodes: slots, `MOVED`, failover, and isolation.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use backbone_redis::testing::RedisCluster;
use redis::{ErrorKind, ServerErrorKind};

fn conn(url: &str) -> redis::Connection {
    let conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    conn
}

fn port_of(url: &str) -> u16 {
    let rest = url.strip_prefix("redis://127.0.0.1:").unwrap();
    rest.trim_end_matches('/').parse().unwrap()
}

/// The port of the master that serves `slot`, according to `CLUSTER SHARDS` on `url`.
fn shard_owner(url: &str, slot: u16) -> u16 {
    let shards: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SHARDS")
        .query(&mut conn(url))
        .unwrap();
    for shard in shards {
        let shard: Vec<(String, redis::Value)> = redis::from_redis_value(shard).unwrap();
        let field = |name: &str| shard.iter().find(|(k, _)| k == name).unwrap().1.clone();
        let slots: Vec<u16> = redis::from_redis_value(field("slots")).unwrap();
        if !slots.chunks(2).any(|r| (r[0]..=r[1]).contains(&slot)) {
            continue;
        }
        let nodes: Vec<Vec<(String, redis::Value)>> =
            redis::from_redis_value(field("nodes")).unwrap();
        for node in nodes {
            let get = |name: &str| node.iter().find(|(k, _)| k == name).unwrap().1.clone();
            let role: String = redis::from_redis_value(get("role")).unwrap();
            if role == "master" {
                return redis::from_redis_value(get("port")).unwrap();
            }
        }
    }
    panic!("no master serves slot {slot} according to {url}");
}

#[test]
fn a_three_master_cluster_starts_healthy_and_routes_by_slot() {
    let started = Instant::now();
    let cluster = RedisCluster::start(3, 1).unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    let seeds = cluster.seed_urls();
    assert_eq!(seeds.len(), 6);
    let masters = cluster.master_urls().unwrap();
    assert_eq!(masters.len(), 3);
    cluster.wait_healthy(Duration::from_secs(1)).unwrap();
    for url in &seeds {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut conn(url))
            .unwrap();
        assert!(info.contains("cluster_state:ok"), "{url}: {info}");
        let port = port_of(url);
        assert!(port < 55536 && port != 6379, "{url}");
    }

    // Found by hand: these three hash tags fall in the three equal thirds of the slots.
    let keys = ["{a}.events", "{b}.events", "{c}.events"];
    let mut owners = HashSet::new();
    for key in keys {
        let slot = RedisCluster::key_slot(key);
        let asked: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn(&seeds[5]))
            .unwrap();
        assert_eq!(slot, asked, "{key}");
        let owner = cluster.master_for_key(key).unwrap().unwrap();
        assert_eq!(
            cluster.master_for_slot(slot).unwrap().as_ref(),
            Some(&owner)
        );
        assert!(masters.contains(&owner), "{owner} not in {masters:?}");
        assert_eq!(shard_owner(&seeds[3], slot), port_of(&owner), "{key}");
        owners.insert(owner.clone());

        let () = redis::cmd("SET")
            .arg(key)
            .arg("v")
            .query(&mut conn(&owner))
            .unwrap();
        let other = masters.iter().find(|m| **m != owner).unwrap();
        let err = redis::cmd("SET")
            .arg(key)
            .arg("v")
            .query::<()>(&mut conn(other))
            .unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Server(ServerErrorKind::Moved),
            "{err}"
        );
        let (to, moved_slot) = err.redirect_node().unwrap();
        assert_eq!(moved_slot, slot);
        assert_eq!(format!("redis://{to}/"), owner);
    }
    assert_eq!(owners.len(), 3, "{owners:?}");
    assert_eq!(cluster.master_for_slot(16384).unwrap(), None);
}

#[test]
fn a_killed_master_is_replaced_by_its_replica_and_rejoins_as_a_replica() {
    let mut cluster = RedisCluster::start(3, 1).unwrap();
    let masters = cluster.master_urls().unwrap();
    let old = cluster.master_for_slot(0).unwrap().unwrap();
    assert_eq!(old, masters[0]);

    let started = Instant::now();
    let killed = cluster.kill_master(0).unwrap();
    assert_eq!(cluster.seed_urls()[killed], old);
    assert!(redis::Client::open(old.as_str())
        .unwrap()
        .get_connection()
        .is_err());
    cluster.wait_healthy(Duration::from_secs(20)).unwrap();
    let failover = started.elapsed();

    let new = cluster.master_for_slot(0).unwrap().unwrap();
    assert_ne!(new, old);
    assert!(!masters.contains(&new), "{new} was a master already");
    let now = cluster.master_urls().unwrap();
    assert_eq!(now.len(), 3);
    assert_eq!(now[0], new);
    assert_eq!(shard_owner(&now[1], 0), port_of(&new));
    let () = redis::cmd("SET")
        .arg("{a}.after-failover")
        .arg("v")
        .query(&mut conn(
            &cluster
                .master_for_key("{a}.after-failover")
                .unwrap()
                .unwrap(),
        ))
        .unwrap();

    cluster.restart_node(killed).unwrap();
    cluster.wait_healthy(Duration::from_secs(20)).unwrap();
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut conn(&old))
        .unwrap();
    assert!(info.contains("role:slave"), "{info}");
    assert!(
        info.contains(&format!("master_port:{}", port_of(&new))),
        "{info}"
    );
    assert_eq!(cluster.master_for_slot(0).unwrap(), Some(new));
    eprintln!("failover took {failover:?}");
}

#[test]
fn two_clusters_started_at_once_use_different_ports() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| RedisCluster::start(3, 1).unwrap());
        let b = s.spawn(|| RedisCluster::start(3, 1).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    let ports: HashSet<u16> = a.seed_urls().iter().map(|u| port_of(u)).collect();
    let others: HashSet<u16> = b.seed_urls().iter().map(|u| port_of(u)).collect();
    assert_eq!(ports.len(), 6);
    assert_eq!(others.len(), 6);
    assert!(ports.is_disjoint(&others), "{ports:?} {others:?}");
    let buses: HashSet<u16> = ports.iter().map(|p| p + 10000).collect();
    assert!(buses.is_disjoint(&others) && buses.is_disjoint(&ports));
    a.wait_healthy(Duration::from_secs(1)).unwrap();
    b.wait_healthy(Duration::from_secs(1)).unwrap();
    let known: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut conn(&a.seed_urls()[0]))
        .unwrap();
    assert_eq!(known.lines().count(), 6, "{known}");
}
