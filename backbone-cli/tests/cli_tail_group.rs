//! `backbone tail <uri> --group <g>`: what the group has not been delivered yet, on every
//! partition, then live; read with XREAD only, so the group and its consumers are untouched.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use backbone_core::StreamAddress;
use backbone_redis::layout::Layout;
use backbone_redis::testing::unique_name;
use backbone_redis::RedisProducerBuilder;
use common::*;

const PARTITIONS: u16 = 3;

/// Per partition: the group's last-delivered-id, pending count, entries-read and consumers.
async fn group_state(
    raw: &mut redis::aio::MultiplexedConnection,
    keys: &[String],
) -> Vec<(String, i64, i64, usize)> {
    let mut state = Vec::new();
    for key in keys {
        let groups: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(key)
            .query_async(raw)
            .await
            .unwrap();
        let fields: Vec<(String, redis::Value)> =
            redis::from_redis_value(groups[0].clone()).unwrap();
        let get = |name: &str| fields.iter().find(|(k, _)| k == name).unwrap().1.clone();
        let consumers: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(key)
            .arg("g")
            .query_async(raw)
            .await
            .unwrap();
        state.push((
            redis::from_redis_value(get("last-delivered-id")).unwrap(),
            redis::from_redis_value(get("pending")).unwrap(),
            redis::from_redis_value(get("entries-read")).unwrap(),
            consumers.len(),
        ));
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_group_shows_what_the_group_has_not_been_delivered_then_follows_live() {
    let url = url().await;
    let uri = unique_name("cli-tail-group");
    let producer = RedisProducerBuilder::new()
        .url(&url)
        .uri(&uri)
        .partitions(PARTITIONS)
        .build_orders_producer()
        .await
        .unwrap();
    for order in 0..6 {
        producer.placed(order, "x".into()).await.unwrap();
    }
    let layout = Layout::new(&StreamAddress::new(None, &uri).unwrap(), PARTITIONS).unwrap();
    let keys: Vec<String> = layout
        .partitions()
        .iter()
        .map(|k| k.stream().to_owned())
        .collect();

    // Group g on every partition; a consumer has been delivered each partition's first entry.
    let mut raw = raw(&url).await;
    let mut undelivered = BTreeSet::new();
    for (p, key) in keys.iter().enumerate() {
        deliver_unacked(&mut raw, key, 1).await;
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(entries.len(), 2, "round robin over {PARTITIONS} partitions");
        undelivered.insert((p as u64, entries[1].0.clone()));
    }
    let before = group_state(&mut raw, &keys).await;

    // The 3 undelivered entries, one per partition, decoded; nothing else.
    let shown = json_lines(
        backbone(&url)
            .args(["tail", &uri, "--group", "g", "--count", "3"])
            .timeout(Duration::from_secs(20)),
    );
    let seen: BTreeSet<(u64, String)> = shown
        .iter()
        .map(|e| {
            (
                e["partition"].as_u64().unwrap(),
                e["stream_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(seen, undelivered, "{shown:?}");
    assert!(shown
        .iter()
        .all(|e| e["operation"] == "placed" && e["parameters"]["item"] == "x"));

    // Then live: the 3 undelivered, and one produced while tailing.
    let live = {
        let (url, uri) = (url.clone(), uri.clone());
        tokio::task::spawn_blocking(move || {
            json_lines(
                backbone(&url)
                    .args(["tail", &uri, "--group", "g", "--count", "4"])
                    .timeout(Duration::from_secs(20)),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    producer.placed(6, "live".into()).await.unwrap();
    let live = live.await.unwrap();
    assert_eq!(live.len(), 4, "{live:?}");
    assert_eq!(live[3]["parameters"]["order"], 6, "{live:?}");

    // The group was only looked at: same last-delivered-id, pending, entries read, consumers.
    assert_eq!(group_state(&mut raw, &keys).await, before);
    assert!(before
        .iter()
        .all(|(_, pending, _, consumers)| *pending == 1 && *consumers == 1));

    // For people: what it tails from, then one line per event.
    let human = backbone(&url)
        .args(["tail", &uri, "--group", "g", "--count", "1"])
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert!(human.status.success());
    let human = String::from_utf8(human.stdout).unwrap();
    assert!(
        human.contains("from what group g has not been delivered") && human.contains("] "),
        "{human}"
    );

    // Errors: an unknown group (or one missing on a partition) is not found; --group and
    // --from-start conflict.
    fails(
        backbone(&url).args(["tail", &uri, "--group", "nogroup"]),
        3,
        "group nogroup",
    );
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&keys[0])
        .arg("only-first")
        .arg("0")
        .query_async(&mut raw)
        .await
        .unwrap();
    fails(
        backbone(&url).args(["tail", &uri, "--group", "only-first", "--json"]),
        3,
        &format!("group only-first on {}", keys[1]),
    );
    fails(
        backbone(&url).args(["tail", &uri, "--group", "g", "--from-start"]),
        2,
        "cannot be used with",
    );
    fails(
        backbone(&url).args(["tail", &unique_name("nosuch"), "--group", "g"]),
        3,
        "no key bb:{",
    );
}
