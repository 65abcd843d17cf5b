//! The `backbone` command against a real Redis (the fixture's): every command, its `--json`
//! form, and its errors with their exit codes.

mod common;

use std::time::Duration;

use backbone_core::RetryPolicy;
use backbone_redis::testing::unique_name;
use backbone_redis::{RedisConsumerBuilder, RedisProducerBuilder};
use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_groups_pending_and_show() {
    let url = url().await;
    let uri = unique_name("cli");
    let ids = produce(&url, &uri, 5).await;

    let streams = json_lines(backbone(&url).arg("streams"));
    let mine: Vec<&Value> = streams
        .iter()
        .filter(|s| s["uri"] == uri.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{streams:?}");
    assert_eq!(mine[0]["length"], 5);
    assert_eq!(mine[0]["groups"], 0);

    // A group that read 3 entries without acknowledging them.
    let mut raw = raw(&url).await;
    let key = format!("bb:{{{uri}}}:events");
    deliver_unacked(&mut raw, &key, 3).await;

    let groups = json_lines(backbone(&url).args(["groups", &uri]));
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["group"], "g");
    assert_eq!(groups[0]["pending"], 3);
    assert_eq!(groups[0]["lag"], 2);
    assert_eq!(groups[0]["consumer_list"][0]["consumer"], "worker-1");

    let pending = json_lines(backbone(&url).args(["pending", &uri, "g"]));
    assert_eq!(pending.len(), 3);
    assert!(pending
        .iter()
        .all(|p| p["consumer"] == "worker-1" && p["deliveries"] == 1));
    fails(
        backbone(&url).args(["pending", &uri, "nogroup"]),
        3,
        "group nogroup",
    );

    // One event by message id and by stream id, with its parameters decoded.
    let by_message = json_lines(backbone(&url).args(["show", &uri, &ids[2]]));
    assert_eq!(by_message[0]["operation"], "placed");
    assert_eq!(by_message[0]["parameters"]["order"], 2);
    assert_eq!(by_message[0]["parameters"]["item"], "item-2");
    let stream_id = by_message[0]["stream_id"].as_str().unwrap().to_owned();
    let by_stream = json_lines(backbone(&url).args(["show", &uri, &stream_id]));
    assert_eq!(by_stream[0]["message_id"], ids[2].as_str());
    // Human output too.
    let table = backbone(&url).args(["groups", &uri]).output().unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.starts_with("partition  group") && table.contains("worker-1"),
        "{table}"
    );

    // Bad input, each with its exit code and what was wrong.
    fails(
        backbone(&url).args(["show", &uri, "12x-3"]),
        2,
        "neither a stream id",
    );
    fails(backbone(&url).args(["show", &uri, "1-1"]), 3, "entry 1-1");
    fails(
        backbone(&url).args(["groups", &unique_name("nosuch")]),
        3,
        "no key bb:{",
    );
    let other = unique_name("string");
    let _: () = redis::cmd("SET")
        .arg(format!("bb:{{{other}}}:events"))
        .arg("x")
        .query_async(&mut raw)
        .await
        .unwrap();
    fails(
        backbone(&url).args(["groups", &other]),
        2,
        "is a string, not a stream",
    );
    fails(backbone(&url).args(["groups", "bad uri"]), 2, "whitespace");
    fails(
        backbone("redis://127.0.0.1:1").args(["groups", &uri]),
        1,
        "connect to 127.0.0.1:1",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_and_trimming() {
    let url = url().await;
    let uri = unique_name("cli-dead");
    produce(&url, &uri, 4).await;
    let consumer = RedisConsumerBuilder::new()
        .url(&url)
        .uri(&uri)
        .group("billing")
        .block(Duration::from_millis(100))
        .retry(RetryPolicy {
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
            max_deliveries: 1,
        })
        .subscribe_orders_consumer(Failing)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let listed = json_lines(backbone(&url).args(["dead", "list", &uri, "billing"]));
        if listed.len() == 4 || tokio::time::Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    consumer.shutdown().await.unwrap();
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert!(
        listed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("fails on purpose"),
        "{listed:?}"
    );
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let shown = json_lines(backbone(&url).args(["dead", "show", &uri, "billing", &id]));
    assert_eq!(shown[0]["operation"], "placed");
    fails(
        backbone(&url).args(["dead", "show", &uri, "billing", "1-1"]),
        3,
        "dead letter 1-1",
    );
    fails(
        backbone(&url).args(["dead", "list", &uri, "nogroup"]),
        3,
        "group nogroup",
    );
    fails(
        backbone(&url).args(["dead", "replay", &uri, "billing"]),
        2,
        "--all",
    );

    // Destructive commands ask; "n" (or no answer) changes nothing.
    fails(
        backbone(&url)
            .args(["dead", "purge", &uri, "billing", "--all"])
            .write_stdin("n\n"),
        5,
        "not confirmed",
    );
    let replayed =
        json_lines(backbone(&url).args(["dead", "replay", &uri, "billing", &id, "--yes"]));
    assert_eq!(replayed[0]["replayed"], 1);
    let purged =
        json_lines(backbone(&url).args(["dead", "purge", &uri, "billing", "--all", "--yes"]));
    assert_eq!(purged[0]["purged"], 3);
    assert!(json_lines(backbone(&url).args(["dead", "list", &uri, "billing"])).is_empty());

    // Trimming: the group has read everything, so all but about 2 entries may go.
    let trimmed = json_lines(backbone(&url).args(["trim", &uri, "--max-len", "2", "--yes"]));
    assert_eq!(trimmed.len(), 1);
    assert!(trimmed[0]["length"].as_u64().unwrap() <= 5, "{trimmed:?}");
    fails(
        backbone(&url).args(["trim", &uri, "--before", "not-an-id", "--yes"]),
        2,
        "not-an-id",
    );
    fails(
        backbone(&url)
            .args(["trim", &uri, "--max-len", "2"])
            .write_stdin(""),
        5,
        "not confirmed",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_refusal_exits_4_without_showing_the_password() {
    let url = url().await;
    let uri = unique_name("cli-acl");
    produce(&url, &uri, 1).await;
    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let user = unique_name("cli-user");
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("on")
        .arg(">Cli-Secret-1")
        .arg("+@all")
        .arg("-xinfo")
        .arg("~*")
        .query_async(&mut raw)
        .await
        .unwrap();
    let with_user = url.replacen("://", &format!("://{user}:Cli-Secret-1@"), 1);
    let output = backbone(&with_user)
        .args(["groups", &uri])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("xinfo") && !stderr.contains("Cli-Secret-1"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_aggregate_and_partitions() {
    use backbone_core::store::{AppendOptions, ExpectedVersion};
    let url = url().await;
    // tail: from the start, and live.
    let uri = unique_name("cli-tail");
    produce(&url, &uri, 3).await;
    let old = json_lines(backbone(&url).args(["tail", &uri, "--from-start", "--count", "3"]));
    let orders: Vec<&Value> = old.iter().map(|e| &e["parameters"]["order"]).collect();
    assert_eq!(orders, [0, 1, 2]);
    let live = {
        let url = url.clone();
        let uri = uri.clone();
        tokio::task::spawn_blocking(move || {
            json_lines(
                backbone(&url)
                    .args(["tail", &uri, "--count", "2"])
                    .timeout(Duration::from_secs(20)),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await; // tail starts reading at "now"
    produce(&url, &uri, 2).await;
    let live = live.await.unwrap();
    assert_eq!(live.len(), 2, "{live:?}");
    assert!(live.iter().all(|e| e["operation"] == "placed"));

    // aggregate: an event-store aggregate's events, in its partition of a 3-partition store.
    let uri = unique_name("cli-store");
    let store = backbone_redis::store::EventStoreBuilder::new()
        .url(&url)
        .uri(&uri)
        .partitions(3)
        .build::<OrdersEvent>()
        .await
        .unwrap();
    let events = [
        OrdersEvent::Placed {
            order: 7,
            item: "a".into(),
        },
        OrdersEvent::Placed {
            order: 8,
            item: "b".into(),
        },
    ];
    store
        .append(
            "acct-1",
            ExpectedVersion::NoStream,
            &events,
            AppendOptions::default(),
        )
        .await
        .unwrap();
    let rows = json_lines(backbone(&url).args(["aggregate", &uri, "acct-1"]));
    let versions: Vec<&Value> = rows.iter().map(|r| &r["version"]).collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(rows[1]["parameters"]["order"], 8);
    fails(
        backbone(&url).args(["aggregate", &uri, "acct-2"]),
        3,
        "aggregate acct-2",
    );

    // A partitioned contract: show finds an event in its partition; groups lists partitions.
    let uri = unique_name("cli-parts");
    let producer = RedisProducerBuilder::new()
        .url(&url)
        .uri(&uri)
        .partitions(3)
        .build_orders_producer()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for order in 0..6 {
        ids.push(
            producer
                .placed(order, "x".into())
                .await
                .unwrap()
                .to_string(),
        );
    }
    let shown = json_lines(backbone(&url).args(["show", &uri, &ids[4]]));
    assert_eq!(shown[0]["parameters"]["order"], 4);
    assert!(
        shown[0]["stream"]
            .as_str()
            .unwrap()
            .contains(&format!("{uri}#")),
        "{shown:?}"
    );
    let streams = json_lines(backbone(&url).arg("streams"));
    let partitions: Vec<&Value> = streams
        .iter()
        .filter(|s| s["uri"] == uri.as_str())
        .map(|s| &s["partition"])
        .collect();
    assert_eq!(partitions, [0, 1, 2]);
}

#[tokio::test]
async fn show_and_tail_print_correlation_and_headers() {
    let url = url().await;
    let uri = unique_name("envelope");
    let producer = RedisProducerBuilder::new()
        .url(&url)
        .uri(&uri)
        .build_orders_producer()
        .await
        .unwrap()
        .with_correlation_id("workflow-1")
        .with_header("tenant", "acme");
    let id = producer.placed(1, "book".into()).await.unwrap().to_string();
    let shown = json_lines(backbone(&url).args(["show", &uri, &id]));
    assert_eq!(shown[0]["correlation_id"], "workflow-1", "{shown:?}");
    assert_eq!(shown[0]["header.tenant"], "acme", "{shown:?}");
    let tailed = json_lines(backbone(&url).args(["tail", &uri, "--from-start", "--count", "1"]));
    assert_eq!(tailed[0]["correlation_id"], "workflow-1", "{tailed:?}");
    let text = backbone(&url).args(["show", &uri, &id]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("header.tenant") && text.contains("workflow-1"),
        "{text}"
    );
}
