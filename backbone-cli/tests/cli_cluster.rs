//! `backbone streams` on a Redis Cluster (`--cluster`): every master is scanned, so a stream's
//! partitions spread over the masters are all listed, each once, with the user's credentials
//! carried to every master.

mod common;

use std::collections::{BTreeSet, HashSet};

use backbone_core::StreamAddress;
use backbone_redis::layout::Layout;
use backbone_redis::testing::{unique_name, RedisCluster};
use backbone_redis::RedisProducerBuilder;
use common::*;
use serde_json::Value;

const PARTITIONS: u16 = 3;

/// A new uri whose partitions are served by 3 different masters.
fn spread_uri(cluster: &RedisCluster, prefix: &str) -> String {
    loop {
        let uri = unique_name(prefix);
        let address = StreamAddress::new(None, &uri).unwrap();
        let layout = Layout::new(&address, PARTITIONS).unwrap();
        let owners: HashSet<String> = layout
            .partitions()
            .iter()
            .map(|keys| cluster.master_for_key(keys.stream()).unwrap().unwrap())
            .collect();
        if owners.len() == PARTITIONS as usize {
            return uri;
        }
    }
}

/// `cmd` on every node of the cluster.
fn on_every_node(cluster: &RedisCluster, cmd: &redis::Cmd) {
    for url in cluster.seed_urls() {
        let mut conn = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let _: () = cmd.query(&mut conn).unwrap();
    }
}

/// The rows of `backbone streams --json` for `uri`.
fn rows_of<'a>(streams: &'a [Value], uri: &str) -> Vec<&'a Value> {
    streams.iter().filter(|s| s["uri"] == uri).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_on_a_cluster_lists_every_partition_of_every_master_once() {
    let (cluster, uri) = tokio::task::spawn_blocking(|| {
        let cluster = RedisCluster::start(3, 0).expect("a 3-master cluster");
        let uri = spread_uri(&cluster, "cli-cluster");
        (cluster, uri)
    })
    .await
    .unwrap();
    let producer = RedisProducerBuilder::new()
        .settings(cluster.settings().uri(&uri).partitions(PARTITIONS))
        .build_orders_producer()
        .await
        .unwrap();
    for order in 0..6 {
        producer.placed(order, "x".into()).await.unwrap();
    }
    let single = unique_name("cli-cluster-qa");
    RedisProducerBuilder::new()
        .settings(cluster.settings().environment("qa").uri(&single))
        .build_orders_producer()
        .await
        .unwrap()
        .placed(1, "y".into())
        .await
        .unwrap();
    let seeds = cluster.url();

    let streams = json_lines(backbone(&seeds).args(["--cluster", "streams"]));
    let mine = rows_of(&streams, &uri);
    let partitions: Vec<&Value> = mine.iter().map(|s| &s["partition"]).collect();
    assert_eq!(partitions, [0, 1, 2], "{streams:?}");
    assert!(mine.iter().all(|s| s["length"] == 2), "{mine:?}");
    let keys: Vec<&str> = streams.iter().map(|s| s["key"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(keys.len(), unique.len(), "each stream once: {keys:?}");
    let qa = rows_of(&streams, &single);
    assert_eq!(qa.len(), 1, "{streams:?}");
    assert_eq!(qa[0]["environment"], "qa");
    assert_eq!(qa[0]["partition"], Value::Null);

    // -e keeps one environment's streams; the table names every partition.
    let only_qa = json_lines(backbone(&seeds).args(["--cluster", "-e", "qa", "streams"]));
    assert!(
        only_qa.iter().all(|s| s["environment"] == "qa"),
        "{only_qa:?}"
    );
    assert_eq!(rows_of(&only_qa, &single).len(), 1);
    assert!(rows_of(&only_qa, &uri).is_empty());
    let table = backbone(&seeds)
        .args(["--cluster", "streams"])
        .output()
        .unwrap();
    assert!(table.status.success());
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.starts_with("environment  uri"), "{table}");
    assert_eq!(table.matches(&format!(" {uri} ")).count(), 3, "{table}");

    // Refusals exit 4: a user who may not ask CLUSTER SHARDS; a missing password once the
    // default user is off. A user with a password reaches every master with it.
    let password = "Cli-Cluster-Secret-1";
    let (limited, ops) = (unique_name("cli-limited"), unique_name("cli-ops"));
    let mut limit = redis::cmd("ACL");
    limit
        .arg("SETUSER")
        .arg(&limited)
        .arg("on")
        .arg(format!(">{password}"))
        .arg("+@all")
        .arg("-cluster|shards")
        .arg("~*");
    let mut allow = redis::cmd("ACL");
    allow
        .arg("SETUSER")
        .arg(&ops)
        .arg("on")
        .arg(format!(">{password}"))
        .arg("+@all")
        .arg("~*")
        .arg("&*");
    on_every_node(&cluster, &limit);
    on_every_node(&cluster, &allow);
    let as_user = |user: &str| seeds.replace("redis://", &format!("redis://{user}:{password}@"));
    let output = backbone(&as_user(&limited))
        .args(["--cluster", "streams"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("CLUSTER SHARDS") && !stderr.contains(password),
        "{stderr}"
    );
    let mut default_off = redis::cmd("ACL");
    default_off.arg("SETUSER").arg("default").arg("off");
    on_every_node(&cluster, &default_off);
    fails(backbone(&seeds).args(["--cluster", "streams"]), 4, "NOAUTH");
    let streams = json_lines(backbone(&as_user(&ops)).args(["--cluster", "streams"]));
    assert_eq!(rows_of(&streams, &uri).len(), 3, "{streams:?}");

    // An unreachable cluster exits 1.
    fails(
        backbone("redis://127.0.0.1:1").args(["--cluster", "streams"]),
        1,
        "connect to",
    );
    drop(producer);
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}
