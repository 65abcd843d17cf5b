//! Metadata that travels: headers, correlation and causation ids across three hops (order
//! placed → packing → delivery), on Redis and on the in-memory channel, stamped with no code in
//! the handlers; a task a handler spawns and an event-store append inside a handler; the entry
//! fields as written.

mod common;

use common::flow::*;

use backbone_core::memory::InMemoryBroker;
use backbone_core::store::{AppendOptions, ExpectedVersion};
use backbone_core::{async_trait, ConsumerBuilder, ConsumerContext, HandlerResult, Metadata};
use backbone_redis::store::EventStoreBuilder;
use backbone_redis::testing::{shared, unique_name};
use backbone_redis::{RedisConsumerBuilder, RedisProducerBuilder};
use tokio::sync::mpsc;

/// Checks what the three hops saw: one correlation id (the one given, else the first event's
/// message id), each event caused by the one before, the header on the first hop only.
fn assert_chain(hops: &[Metadata; 3], correlation: Option<&str>) {
    let [placed, packed, delivered] = hops;
    let expected = correlation
        .map(str::to_owned)
        .unwrap_or_else(|| placed.message_id.to_string());
    for hop in hops {
        assert_eq!(hop.correlation_id, expected, "{}", hop.operation);
    }
    assert_eq!(placed.causation_id, None);
    assert_eq!(packed.causation_id, Some(placed.message_id.to_string()));
    assert_eq!(delivered.causation_id, Some(packed.message_id.to_string()));
    assert_eq!(placed.headers.get("tenant"), Some("acme"));
    assert!(packed.headers.is_empty(), "headers are not inherited");
}

#[tokio::test]
async fn a_workflow_shares_one_correlation_id_on_redis() {
    let redis = shared().await.unwrap();
    for correlation in [Some("checkout-7"), None] {
        let uris = ["orders", "packing", "delivery"].map(unique_name);
        let (lifetimes, mut rx) = redis_hops(redis.url(), &uris, |_| "flow".into()).await;
        let start = redis_producer(redis.url(), &uris[0])
            .await
            .with_header("tenant", "acme");
        let start = match correlation {
            Some(id) => start.with_correlation_id(id),
            None => start,
        };
        start.placed(7).await.unwrap();
        let hops = three_seen(&mut rx).await;
        assert_chain(&hops, correlation);

        // The entries as written: fields named in the README's wire format, no correlation
        // field on an event that starts its own workflow.
        let entry = |uri: &str| {
            let key = common::keys(uri).stream().to_owned();
            async move {
                let mut conn = common::raw(redis.url()).await;
                let reply: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg("-")
                    .arg("+")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                reply.into_iter().next().unwrap().1
            }
        };
        let first = entry(&uris[0]).await;
        let field = |fields: &[(String, String)], name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(field(&first, "header.tenant").as_deref(), Some("acme"));
        assert_eq!(field(&first, "correlation_id").as_deref(), correlation);
        assert_eq!(field(&first, "causation_id"), None);
        let second = entry(&uris[1]).await;
        assert_eq!(
            field(&second, "causation_id"),
            Some(hops[0].message_id.to_string())
        );
        assert_eq!(
            field(&second, "correlation_id"),
            Some(hops[0].correlation_id.clone())
        );
        for lifetime in lifetimes {
            lifetime.shutdown().await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_workflow_shares_one_correlation_id_in_memory() {
    for correlation in [Some("checkout-7"), None] {
        let broker = InMemoryBroker::new();
        let uris = ["orders", "packing", "delivery"];
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut lifetimes = Vec::new();
        for (i, uri) in uris.iter().enumerate() {
            let next = match uris.get(i + 1) {
                Some(next) => Some(
                    broker
                        .producer_builder()
                        .uri(*next)
                        .build_flow_producer()
                        .await
                        .unwrap(),
                ),
                None => None,
            };
            let hop = Hop {
                next,
                seen: tx.clone(),
            };
            let lifetime = broker
                .consumer_builder()
                .uri(*uri)
                .subscribe_flow_consumer(hop)
                .await
                .unwrap();
            lifetimes.push(lifetime);
        }
        let start = broker
            .producer_builder()
            .uri("orders")
            .build_flow_producer()
            .await
            .unwrap()
            .with_header("tenant", "acme");
        let start = match correlation {
            Some(id) => start.with_correlation_id(id),
            None => start,
        };
        start.placed(7).await.unwrap();
        let hops = three_seen(&mut rx).await;
        assert_chain(&hops, correlation);
        for lifetime in lifetimes {
            lifetime.shutdown().await.unwrap();
        }
    }
}

/// Spawns its sends: without `caused_by` they start a workflow of their own, with it they
/// keep the handled event's.
#[derive(Clone)]
struct Spawner {
    next: FlowProducer,
}

#[async_trait]
impl FlowConsumer for Spawner {
    async fn placed(&self, ctx: &ConsumerContext, order: u64) -> HandlerResult {
        let (plain, caused) = (self.next.clone(), self.next.caused_by(ctx));
        tokio::spawn(async move {
            plain.packed(order).await.unwrap();
            caused.delivered(order).await.unwrap();
        })
        .await?;
        Ok(())
    }
    async fn packed(&self, _: &ConsumerContext, _: u64) -> HandlerResult {
        Ok(())
    }
    async fn delivered(&self, _: &ConsumerContext, _: u64) -> HandlerResult {
        Ok(())
    }
}

#[tokio::test]
async fn a_spawned_task_needs_caused_by() {
    let broker = InMemoryBroker::new();
    let next = broker
        .producer_builder()
        .uri("next")
        .build_flow_producer()
        .await
        .unwrap();
    let lifetime = broker
        .consumer_builder()
        .uri("orders")
        .max_messages(1)
        .subscribe_flow_consumer(Spawner { next })
        .await
        .unwrap();
    let start = broker
        .producer_builder()
        .uri("orders")
        .build_flow_producer()
        .await
        .unwrap();
    let placed = start.placed(1).await.unwrap();
    lifetime.completion().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let recorder = Hop {
        next: None,
        seen: tx,
    };
    broker
        .consumer_builder()
        .uri("next")
        .max_messages(2)
        .subscribe_flow_consumer(RecordOnly(recorder))
        .await
        .unwrap()
        .completion()
        .await
        .unwrap();
    let (plain, caused) = (next_seen(&mut rx).await, next_seen(&mut rx).await);
    assert_eq!(plain.causation_id, None, "a spawned task has no cause");
    assert_eq!(plain.correlation_id, plain.message_id.to_string());
    assert_eq!(caused.causation_id, Some(placed.to_string()));
    assert_eq!(caused.correlation_id, placed.to_string());
}

/// Records every event, sends nothing.
struct RecordOnly(Hop);

#[async_trait]
impl FlowConsumer for RecordOnly {
    async fn placed(&self, ctx: &ConsumerContext, _: u64) -> HandlerResult {
        self.0.record(ctx);
        Ok(())
    }
    async fn packed(&self, ctx: &ConsumerContext, _: u64) -> HandlerResult {
        self.0.record(ctx);
        Ok(())
    }
    async fn delivered(&self, ctx: &ConsumerContext, _: u64) -> HandlerResult {
        self.0.record(ctx);
        Ok(())
    }
}

/// Appends to an aggregate while handling an event.
struct Appender {
    store: backbone_redis::store::EventStore<FlowEvent>,
}

#[async_trait]
impl FlowConsumer for Appender {
    async fn placed(&self, _: &ConsumerContext, order: u64) -> HandlerResult {
        let options = AppendOptions::default().header("source", "placed")?;
        self.store
            .append(
                &format!("order-{order}"),
                ExpectedVersion::Any,
                &[FlowEvent::Packed { order }],
                options,
            )
            .await?;
        Ok(())
    }
    async fn packed(&self, _: &ConsumerContext, _: u64) -> HandlerResult {
        Ok(())
    }
    async fn delivered(&self, _: &ConsumerContext, _: u64) -> HandlerResult {
        Ok(())
    }
}

#[tokio::test]
async fn store_appends_carry_correlation_causation_and_headers() {
    let redis = shared().await.unwrap();
    let (orders, ledger) = (unique_name("orders"), unique_name("ledger"));
    let store = || {
        EventStoreBuilder::new()
            .url(redis.url())
            .uri(&ledger)
            .build::<FlowEvent>()
    };
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&orders)
        .max_messages(1)
        .subscribe(std::sync::Arc::new(backbone_core::ContractHandler::<
            FlowEvent,
            _,
        >::new(Appender {
            store: store().await.unwrap(),
        })))
        .await
        .unwrap();
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&orders)
        .build_flow_producer()
        .await
        .unwrap()
        .with_correlation_id("checkout-9");
    let placed = producer.placed(5).await.unwrap();
    lifetime.completion().await.unwrap();
    let page = store().await.unwrap().read("order-5", 1, 10).await.unwrap();
    let stored = &page.events[0].metadata;
    assert_eq!(stored.correlation_id, "checkout-9");
    assert_eq!(stored.causation_id, Some(placed.to_string()));
    assert_eq!(stored.headers.get("source"), Some("placed"));

    // Outside a handler: the options' correlation id, else the event's own id.
    let store = store().await.unwrap();
    let options = AppendOptions::default().correlation_id("import-1");
    store
        .append(
            "order-6",
            ExpectedVersion::Any,
            &[FlowEvent::Placed { order: 6 }],
            options,
        )
        .await
        .unwrap();
    store
        .append(
            "order-7",
            ExpectedVersion::Any,
            &[FlowEvent::Placed { order: 7 }],
            AppendOptions::default(),
        )
        .await
        .unwrap();
    let six = &store.read("order-6", 1, 10).await.unwrap().events[0].metadata;
    assert_eq!(
        (six.correlation_id.as_str(), six.causation_id.as_deref()),
        ("import-1", None)
    );
    let seven = &store.read("order-7", 1, 10).await.unwrap().events[0].metadata;
    assert_eq!(seven.correlation_id, seven.message_id.to_string());
}
