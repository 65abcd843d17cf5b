//! Contracts that evolve: a consumer written for v2 handles a stream holding v0, v1 and v2 of
//! an operation (upcasters, chained); an operation read as another one; a failing upcaster
//! dead-letters the event naming itself; the event store and dead-letter replays see only the
//! newest shape; a fallback takes what the contract does not know; deprecations are in the
//! operation table.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use backbone_core::contract::RawEvent;
use backbone_core::memory::InMemoryBroker;
use backbone_core::store::{AppendOptions, ExpectedVersion};
use backbone_core::{
    async_trait, events_contract, ConsumerContext, Contract, ContractEvent, HandlerResult,
};
use backbone_redis::store::EventStoreBuilder;
use backbone_redis::testing::{shared, unique_name};
use backbone_redis::{DeadLetters, RedisConsumerBuilder, RedisProducerBuilder, RedisSettings};
use tokio::sync::mpsc;

/// Three versions of `packing`, `shipped` renamed `delivered`, and `weigh` whose v0 upcaster
/// refuses negative weights.
#[events_contract]
pub trait Parcels {
    #[event(name = "packing", version = 0, upcast = packing_v0_to_v1)]
    async fn packing_v0(&self, product_id: u64);
    #[event(name = "packing", version = 1, upcast = packing_v1_to_v2)]
    async fn packing_v1(&self, product_id: u64, email: String);
    #[event(name = "packing", version = 2)]
    async fn packing(&self, product_id: u64, email: String, express: bool);
    #[event(upcast = shipped_as_delivered)]
    async fn shipped(&self, product_id: u64);
    async fn delivered(&self, product_id: u64, by: String);
    #[event(name = "weigh", version = 0, upcast = grams_to_kg)]
    async fn weigh_v0(&self, grams: i64);
    #[event(name = "weigh", version = 1)]
    #[event(deprecated = "weights travel with `packing` from v3 on")]
    async fn weigh(&self, kg: f64);
}

fn packing_v0_to_v1(product_id: u64) -> Result<ParcelsEvent, Infallible> {
    Ok(ParcelsEvent::PackingV1 {
        product_id,
        email: "unknown@example.com".into(),
    })
}

fn packing_v1_to_v2(product_id: u64, email: String) -> Result<ParcelsEvent, Infallible> {
    Ok(ParcelsEvent::Packing {
        product_id,
        email,
        express: false,
    })
}

fn shipped_as_delivered(product_id: u64) -> Result<ParcelsEvent, Infallible> {
    Ok(ParcelsEvent::Delivered {
        product_id,
        by: "carrier".into(),
    })
}

fn grams_to_kg(grams: i64) -> Result<ParcelsEvent, String> {
    if grams < 0 {
        return Err(format!("a weight of {grams} g"));
    }
    Ok(ParcelsEvent::Weigh {
        kg: grams as f64 / 1000.0,
    })
}

/// What a v2 consumer saw: (original version, the event in its newest shape).
type Seen = (u32, ParcelsEvent);

/// Written for the newest shapes only: it has no method for `packing` v0 or v1, `shipped` or
/// `weigh` v0.
struct Current(mpsc::UnboundedSender<Seen>);

impl Current {
    fn seen(&self, ctx: &ConsumerContext, event: ParcelsEvent) -> HandlerResult {
        self.0.send((ctx.metadata().version, event))?;
        Ok(())
    }
}

#[async_trait]
impl ParcelsConsumer for Current {
    async fn packing(
        &self,
        ctx: &ConsumerContext,
        product_id: u64,
        email: String,
        express: bool,
    ) -> HandlerResult {
        let event = ParcelsEvent::Packing {
            product_id,
            email,
            express,
        };
        self.seen(ctx, event)
    }
    async fn delivered(&self, ctx: &ConsumerContext, product_id: u64, by: String) -> HandlerResult {
        self.seen(ctx, ParcelsEvent::Delivered { product_id, by })
    }
    async fn weigh(&self, ctx: &ConsumerContext, kg: f64) -> HandlerResult {
        self.seen(ctx, ParcelsEvent::Weigh { kg })
    }
}

fn describe(seen: &[Seen]) -> Vec<String> {
    seen.iter().map(|(v, e)| format!("v{v} {e:?}")).collect()
}

#[tokio::test]
#[allow(deprecated)] // `weigh` is deprecated: still sent here, on purpose
async fn a_v2_consumer_reads_v0_v1_and_v2_on_redis() {
    let redis = shared().await.unwrap();
    let uri = unique_name("parcels");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_parcels_producer()
        .await
        .unwrap();
    producer.packing_v0(1).await.unwrap();
    producer
        .packing_v1(2, "b@example.com".into())
        .await
        .unwrap();
    producer
        .packing(3, "c@example.com".into(), true)
        .await
        .unwrap();
    producer.shipped(4).await.unwrap();
    producer.weigh_v0(-5).await.unwrap();
    producer.weigh_v0(2500).await.unwrap();
    producer.weigh(1.5).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .group("v2")
        .subscribe_parcels_consumer(Current(tx))
        .await
        .unwrap();
    let seen = common::collect(&mut rx, 6, Duration::from_secs(10)).await;
    assert_eq!(
        describe(&seen),
        [
            "v0 Packing { product_id: 1, email: \"unknown@example.com\", express: false }",
            "v1 Packing { product_id: 2, email: \"b@example.com\", express: false }",
            "v2 Packing { product_id: 3, email: \"c@example.com\", express: true }",
            "v0 Delivered { product_id: 4, by: \"carrier\" }",
            "v0 Weigh { kg: 2.5 }",
            "v1 Weigh { kg: 1.5 }",
        ]
    );
    // The upcaster's refusal is a bad event, dead-lettered naming the upcaster.
    let settings = RedisSettings::new().url(redis.url()).uri(&uri);
    let dead = DeadLetters::open(&settings, "v2").await.unwrap();
    common::wait_dead_letters(&dead, 1).await;
    let letters = dead.list(None, 10).await.unwrap();
    assert_eq!(
        letters[0].reason,
        "upcaster `grams_to_kg` of Parcels::weigh v0 failed: a weight of -5 g"
    );
    lifetime.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_v2_consumer_reads_v0_v1_and_v2_in_memory() {
    let broker = InMemoryBroker::new();
    let producer = broker
        .producer_builder()
        .uri("parcels")
        .build_parcels_producer()
        .await
        .unwrap();
    producer.packing_v0(1).await.unwrap();
    producer
        .packing_v1(2, "b@example.com".into())
        .await
        .unwrap();
    producer.shipped(3).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    broker
        .consumer_builder()
        .uri("parcels")
        .max_messages(3)
        .subscribe_parcels_consumer(Current(tx))
        .await
        .unwrap()
        .completion()
        .await
        .unwrap();
    let seen = common::collect(&mut rx, 3, Duration::from_secs(5)).await;
    assert_eq!(
        describe(&seen),
        [
            "v0 Packing { product_id: 1, email: \"unknown@example.com\", express: false }",
            "v1 Packing { product_id: 2, email: \"b@example.com\", express: false }",
            "v0 Delivered { product_id: 3, by: \"carrier\" }",
        ]
    );
}

#[tokio::test]
async fn the_store_and_replays_see_only_the_newest_shape() {
    let redis = shared().await.unwrap();
    let uri = unique_name("parcel-store");
    let store = EventStoreBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build::<ParcelsEvent>()
        .await
        .unwrap();
    let old = [
        ParcelsEvent::PackingV0 { product_id: 9 },
        ParcelsEvent::Shipped { product_id: 9 },
    ];
    store
        .append(
            "parcel-9",
            ExpectedVersion::NoStream,
            &old,
            AppendOptions::default(),
        )
        .await
        .unwrap();
    let page = store.read("parcel-9", 1, 10).await.unwrap();
    let events: Vec<String> = page
        .events
        .iter()
        .map(|e| format!("{:?}", e.event))
        .collect();
    assert_eq!(
        events,
        [
            "Packing { product_id: 9, email: \"unknown@example.com\", express: false }",
            "Delivered { product_id: 9, by: \"carrier\" }",
        ]
    );

    // A v0 event dead-lettered by a consumer that refused it, then replayed: the consumer
    // after the replay sees it upcast.
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_parcels_producer()
        .await
        .unwrap();
    producer.packing_v0(10).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let refusing = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .group("replay")
        .on_unknown(backbone_core::UnknownPolicy::DeadLetter)
        .subscribe_older_consumer(Knows)
        .await
        .unwrap();
    let settings = RedisSettings::new().url(redis.url()).uri(&uri);
    let dead = DeadLetters::open(&settings, "replay").await.unwrap();
    // The two store events and the sent one: the older contract knows none of them.
    common::wait_dead_letters(&dead, 3).await;
    refusing.shutdown().await.unwrap();
    let letters = dead.list(None, 10).await.unwrap();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .group("replay")
        .subscribe_parcels_consumer(Current(tx))
        .await
        .unwrap();
    dead.replay(&letters[2].id).await.unwrap();
    let seen = common::collect(&mut rx, 1, Duration::from_secs(10)).await;
    assert_eq!(
        describe(&seen),
        ["v0 Packing { product_id: 10, email: \"unknown@example.com\", express: false }"]
    );
    lifetime.shutdown().await.unwrap();
}

/// An older contract on the same stream: it knows only `delivered`.
#[events_contract]
pub trait Older {
    async fn delivered(&self, product_id: u64, by: String);
}

struct Knows;

#[async_trait]
impl OlderConsumer for Knows {
    async fn delivered(&self, _: &ConsumerContext, _: u64, _: String) -> HandlerResult {
        Ok(())
    }
}

/// An older consumer with a fallback: what it does not know it forwards, still inspectable.
struct Forwarding(mpsc::UnboundedSender<(String, u32, RawEvent)>);

#[async_trait]
impl OlderConsumer for Forwarding {
    async fn delivered(&self, _: &ConsumerContext, _: u64, _: String) -> HandlerResult {
        Ok(())
    }
    async fn fallback(&self, ctx: &ConsumerContext, event: RawEvent) -> HandlerResult {
        let meta = ctx.metadata();
        self.0.send((meta.operation.clone(), meta.version, event))?;
        Ok(())
    }
}

#[tokio::test]
async fn a_fallback_takes_what_the_contract_does_not_know() {
    let redis = shared().await.unwrap();
    let uri = unique_name("fallback");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_parcels_producer()
        .await
        .unwrap();
    producer
        .packing(1, "a@example.com".into(), true)
        .await
        .unwrap();
    producer.delivered(1, "van".into()).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .group("older")
        .subscribe_older_consumer(Forwarding(tx))
        .await
        .unwrap();
    let (operation, version, raw) = common::collect(&mut rx, 1, Duration::from_secs(10))
        .await
        .remove(0);
    assert_eq!((operation.as_str(), version), ("packing", 2));
    assert_eq!(raw.parameters["product_id"], 1);
    assert_eq!(raw.parameters["email"], "a@example.com");
    assert_eq!(raw.parameters["express"], true);
    // Handled by the fallback: acknowledged, not dead-lettered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settings = RedisSettings::new().url(redis.url()).uri(&uri);
    let dead = DeadLetters::open(&settings, "older").await.unwrap();
    assert!(dead.list(None, 10).await.unwrap().is_empty());
    lifetime.shutdown().await.unwrap();

    // In memory as well.
    let broker = InMemoryBroker::new();
    let producer = broker
        .producer_builder()
        .uri("fallback")
        .build_parcels_producer()
        .await
        .unwrap();
    producer.shipped(2).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    broker
        .consumer_builder()
        .uri("fallback")
        .max_messages(1)
        .subscribe_older_consumer(Forwarding(tx))
        .await
        .unwrap()
        .completion()
        .await
        .unwrap();
    let (operation, _, raw) = rx.recv().await.unwrap();
    assert_eq!(operation, "shipped");
    assert_eq!(raw.parameters["product_id"], 2);
}

#[test]
fn deprecations_and_upcasters_are_in_the_operation_table() {
    let ops = <Parcels as Contract>::OPERATIONS;
    let weigh = ops
        .iter()
        .find(|o| o.name == "weigh" && o.version == 1)
        .unwrap();
    assert_eq!(
        weigh.deprecated,
        Some("weights travel with `packing` from v3 on")
    );
    let v0 = ops
        .iter()
        .find(|o| o.name == "packing" && o.version == 0)
        .unwrap();
    assert_eq!(v0.upcast, Some("packing_v0_to_v1"));
    assert!(ParcelsEvent::knows("packing", 0), "old shapes stay known");
    // A hand-built old shape is upcast when asked.
    let newest = ParcelsEvent::PackingV0 { product_id: 1 }.upcast().unwrap();
    assert!(matches!(
        newest,
        ParcelsEvent::Packing { express: false, .. }
    ));
}
