//! `backbone show` and `backbone tail` on inline events (parameters as `param.<name>` entry
//! fields): their parameters are printed as those read from a payload hash are.

mod common;

use backbone_core::events_contract;
use backbone_redis::testing::unique_name;
use backbone_redis::RedisProducerBuilder;
use common::*;
use serde_json::Value;

/// `Orders`, inline.
#[events_contract(storage = "inline")]
pub trait InlineOrders {
    async fn placed(&self, order: u64, item: String);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_and_tail_print_inline_parameters() {
    let url = url().await;
    let uri = unique_name("cli-inline");
    let producer = RedisProducerBuilder::new()
        .url(&url)
        .uri(&uri)
        .build_inline_orders_producer()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for order in 0..3 {
        let id = producer.placed(order, format!("item-{order}")).await;
        ids.push(id.unwrap().to_string());
    }
    // A hash-layout event in the same stream.
    let hashed = produce(&url, &uri, 1).await;

    let shown = json_lines(backbone(&url).args(["show", &uri, &ids[1]]));
    assert_eq!(shown[0]["operation"], "placed");
    assert_eq!(shown[0]["parameters"]["order"], 1);
    assert_eq!(shown[0]["parameters"]["item"], "item-1");
    let doc = shown[0].as_object().unwrap();
    assert!(
        !doc.contains_key("param.order") && !doc.contains_key("payload"),
        "{doc:?}"
    );
    let shown = json_lines(backbone(&url).args(["show", &uri, &hashed[0]]));
    assert_eq!(shown[0]["parameters"]["item"], "item-0");

    let tailed = json_lines(backbone(&url).args(["tail", &uri, "--from-start", "--count", "4"]));
    let items: Vec<&Value> = tailed.iter().map(|e| &e["parameters"]["item"]).collect();
    assert_eq!(items, ["item-0", "item-1", "item-2", "item-0"]);
}
