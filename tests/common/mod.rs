//! Shared by the integration tests: test contracts, recording consumers, and helpers that
//! collect deliveries and report missing and extra message ids.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use backbone_core::{
    async_trait, events_contract, ConsumerContext, HandlerResult, MessageId, Metadata,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Settings and helpers of the delivery scenarios (`tests/delivery_*.rs`).
pub mod delivery;

/// The channels the delivery scenarios run on, and `conformance!`.
pub mod channel;

/// The three-hop workflow of the observability tests.
pub mod flow;

/// A nested parameter type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    pub street: String,
    pub zip: Option<u32>,
}

/// A struct parameter with nesting, a list and an option.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub tags: Vec<String>,
    pub address: Option<Address>,
}

/// The operations of [`Kinds`], one per kind of parameter, as a contract named `$name` with
/// the attributes given: the same operations in either storage.
macro_rules! kinds_contract {
    ($(#[$attribute:meta])* $name:ident) => {
        $(#[$attribute])*
        pub trait $name {
            async fn text(&self, s: String);
            async fn integers(&self, a: i64, b: u64, c: i8, d: i64);
            async fn float_bool(&self, f: f64, b: bool);
            async fn optional(&self, some: Option<String>, none: Option<u32>);
            async fn nested(&self, user: User, list: Vec<User>, map: BTreeMap<String, Vec<i32>>);
            async fn unit(&self);
            #[event(version = 2)]
            async fn versioned(&self, n: u32);
        }
    };
}

kinds_contract!(
    /// One operation per kind of parameter.
    #[events_contract]
    Kinds
);

kinds_contract!(
    /// [`Kinds`] with its parameters inline in the stream entries.
    #[events_contract(storage = "inline")]
    InlineKinds
);

kinds_contract!(
    /// [`Kinds`] with its large parameters in an object store.
    #[events_contract(storage = "object")]
    ObjectKinds
);

/// A [`User`] with every field set and text that needs escaping.
pub fn user(name: &str) -> User {
    User {
        name: name.to_owned(),
        tags: vec!["a".into(), "ü\"\n".into()],
        address: Some(Address {
            street: "Rue de l'Église 5\n2nd floor".into(),
            zip: Some(75001),
        }),
    }
}

/// One event of every operation of [`Kinds`], with the parameter values the round trips
/// check: escapes, an empty and a 2 MiB string, integer extremes, floats, options, nesting.
pub fn kinds_cases() -> Vec<KindsEvent> {
    let big = "x".repeat(2 * 1024 * 1024);
    let mut map = BTreeMap::new();
    map.insert("empty".to_owned(), vec![]);
    map.insert("ключ \"quoted\"".to_owned(), vec![i32::MIN, 0, i32::MAX]);
    vec![
        KindsEvent::Text {
            s: "héllo \"wörld\"\n\t\\ 🚚 \u{0}end".into(),
        },
        KindsEvent::Text { s: String::new() },
        KindsEvent::Text { s: big },
        KindsEvent::Integers {
            a: i64::MIN,
            b: u64::MAX,
            c: -128,
            d: i64::MAX,
        },
        KindsEvent::FloatBool {
            f: -1.5e300,
            b: true,
        },
        KindsEvent::FloatBool { f: 0.1, b: false },
        KindsEvent::Optional {
            some: Some("present".into()),
            none: None,
        },
        KindsEvent::Nested {
            user: user("Ada"),
            list: vec![user("Bob"), user("Cy")],
            map,
        },
        KindsEvent::Unit {},
        KindsEvent::Versioned { n: 7 },
    ]
}

/// Consumes `sent.len()` events of `uri` with a [`KindsRecorder`] (group `default`) and asserts
/// they are `sent`, each once, in order, with the ids `ids` and the same parameters.
pub async fn assert_kinds_consumed(url: &str, uri: &str, ids: &[MessageId], sent: &[KindsEvent]) {
    let builder = backbone_redis::RedisConsumerBuilder::new()
        .url(url)
        .uri(uri)
        .max_messages(sent.len() as u64);
    assert_kinds_consumed_through(builder, ids, sent).await;
}

/// A Redis publisher (the channel under a producer) on `uri`.
pub async fn publisher(url: &str, uri: &str) -> backbone_redis::RedisPublisher {
    backbone_redis::RedisProducerBuilder::new()
        .url(url)
        .uri(uri)
        .build_publisher()
        .await
        .unwrap()
}

/// `event` as an event of contract `T` with the same operation and parameters (e.g. a
/// [`KindsEvent`] as an [`InlineKindsEvent`]).
pub fn convert<F: backbone_core::ContractEvent, T: backbone_core::ContractEvent>(event: &F) -> T {
    let operation = event.operation();
    T::decode(operation.name, operation.version, &event.encode().unwrap()).unwrap()
}

/// Forwards every Kinds event, rebuilt, with its metadata.
#[derive(Clone)]
pub struct KindsRecorder(pub mpsc::UnboundedSender<(Metadata, KindsEvent)>);

impl KindsRecorder {
    fn record(&self, ctx: &ConsumerContext, event: KindsEvent) -> HandlerResult {
        self.0.send((ctx.metadata().clone(), event))?;
        Ok(())
    }
}

#[async_trait]
impl KindsConsumer for KindsRecorder {
    async fn text(&self, ctx: &ConsumerContext, s: String) -> HandlerResult {
        self.record(ctx, KindsEvent::Text { s })
    }
    async fn integers(
        &self,
        ctx: &ConsumerContext,
        a: i64,
        b: u64,
        c: i8,
        d: i64,
    ) -> HandlerResult {
        self.record(ctx, KindsEvent::Integers { a, b, c, d })
    }
    async fn float_bool(&self, ctx: &ConsumerContext, f: f64, b: bool) -> HandlerResult {
        self.record(ctx, KindsEvent::FloatBool { f, b })
    }
    async fn optional(
        &self,
        ctx: &ConsumerContext,
        some: Option<String>,
        none: Option<u32>,
    ) -> HandlerResult {
        self.record(ctx, KindsEvent::Optional { some, none })
    }
    async fn nested(
        &self,
        ctx: &ConsumerContext,
        user: User,
        list: Vec<User>,
        map: BTreeMap<String, Vec<i32>>,
    ) -> HandlerResult {
        self.record(ctx, KindsEvent::Nested { user, list, map })
    }
    async fn unit(&self, ctx: &ConsumerContext) -> HandlerResult {
        self.record(ctx, KindsEvent::Unit {})
    }
    async fn versioned(&self, ctx: &ConsumerContext, n: u32) -> HandlerResult {
        self.record(ctx, KindsEvent::Versioned { n })
    }
}

/// The smallest contract: numbered ticks.
#[events_contract]
pub trait Ticks {
    async fn tick(&self, n: u64);
}

/// One delivery seen by a [`TickRecorder`].
#[derive(Debug, Clone)]
pub struct Seen {
    pub consumer: String,
    pub n: u64,
    pub meta: Metadata,
}

/// Records every tick; fails the ticks for which `fail` says so (without recording them).
#[derive(Clone)]
pub struct TickRecorder {
    pub label: String,
    pub tx: mpsc::UnboundedSender<Seen>,
    pub fail: fn(u64) -> bool,
    pub failures: Option<mpsc::UnboundedSender<Seen>>,
}

impl TickRecorder {
    pub fn new(label: &str, tx: mpsc::UnboundedSender<Seen>) -> Self {
        TickRecorder {
            label: label.to_owned(),
            tx,
            fail: |_| false,
            failures: None,
        }
    }
}

#[async_trait]
impl TicksConsumer for TickRecorder {
    async fn tick(&self, ctx: &ConsumerContext, n: u64) -> HandlerResult {
        let seen = Seen {
            consumer: self.label.clone(),
            n,
            meta: ctx.metadata().clone(),
        };
        if (self.fail)(n) {
            if let Some(failures) = &self.failures {
                failures.send(seen)?;
            }
            return Err(format!("tick {n} fails on purpose").into());
        }
        self.tx.send(seen)?;
        Ok(())
    }
}

/// A Redis producer of ticks on `uri`.
pub async fn producer(url: &str, uri: &str) -> TicksProducer {
    backbone_redis::RedisProducerBuilder::new()
        .url(url)
        .uri(uri)
        .build_ticks_producer()
        .await
        .unwrap()
}

/// Waits until `dead` holds at least `n` dead letters; fails after [`WAIT`] saying how many.
pub async fn wait_dead_letters(dead: &backbone_redis::DeadLetters, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while dead.len().await.unwrap() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} dead letters",
            dead.len().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends ticks `range` in order; returns their ids.
pub async fn send(producer: &TicksProducer, range: std::ops::Range<u64>) -> Vec<MessageId> {
    let mut ids = Vec::new();
    for n in range {
        ids.push(producer.tick(n).await.unwrap());
    }
    ids
}

/// The message ids of `seen`, in order.
pub fn ids(seen: &[Seen]) -> Vec<MessageId> {
    seen.iter().map(|s| s.meta.message_id).collect()
}

/// Receives `count` items, or fails after `within` saying how many arrived.
pub async fn collect<T>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    count: usize,
    within: Duration,
) -> Vec<T> {
    let mut got = Vec::with_capacity(count);
    let deadline = tokio::time::Instant::now() + within;
    while got.len() < count {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(item)) => got.push(item),
            Ok(None) => panic!("channel closed after {} of {count} items", got.len()),
            Err(_) => panic!(
                "timed out after {within:?} with {} of {count} items",
                got.len()
            ),
        }
    }
    got
}

/// Asserts nothing more arrives within `quiet`.
pub async fn assert_quiet<T: std::fmt::Debug>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    quiet: Duration,
) {
    if let Ok(Some(extra)) = tokio::time::timeout(quiet, rx.recv()).await {
        panic!("unexpected extra delivery: {extra:?}");
    }
}

/// Asserts `received` holds exactly the ids of `sent`, each once; reports missing, extra and
/// duplicated ids.
pub fn assert_exactly_once(sent: &[MessageId], received: &[MessageId]) {
    let sent_set: HashSet<_> = sent.iter().collect();
    let mut seen = HashSet::new();
    let duplicates: Vec<_> = received.iter().filter(|id| !seen.insert(*id)).collect();
    let missing: Vec<_> = sent.iter().filter(|id| !seen.contains(id)).collect();
    let extra: Vec<_> = seen.iter().filter(|id| !sent_set.contains(*id)).collect();
    assert!(
        missing.is_empty() && extra.is_empty() && duplicates.is_empty(),
        "sent {}, received {}: missing {missing:?}, extra {extra:?}, duplicated {duplicates:?}",
        sent.len(),
        received.len()
    );
}

/// A raw redis-rs connection for inspecting what the framework wrote.
pub async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to test redis")
}

/// A connection for inspecting what the framework wrote, opened the way the builders open
/// theirs: to one server or, when `REDIS_CLUSTER` is set (the delivery scenarios run against a
/// cluster in CI), to the cluster whose seeds `url` lists.
pub async fn inspect(url: &str) -> backbone_redis::connection::Connection {
    backbone_redis::settings::RedisSettings::new()
        .url(url)
        .open_connection("test")
        .await
        .expect("connect to the test redis")
}

pub const WAIT: Duration = Duration::from_secs(20);

/// A producer of ticks with `settings`.
pub async fn ticks_producer(settings: backbone_redis::settings::RedisSettings) -> TicksProducer {
    backbone_redis::RedisProducerBuilder::new()
        .settings(settings)
        .build_ticks_producer()
        .await
        .unwrap()
}

/// A new uri (from `prefix`) whose `partitions` partitions are served by every master of
/// `cluster` (blocking: call it from `spawn_blocking`).
pub fn spread_uri(
    cluster: &backbone_redis::testing::RedisCluster,
    prefix: &str,
    partitions: u16,
) -> String {
    let masters = cluster.master_urls().unwrap().len();
    loop {
        let uri = backbone_redis::testing::unique_name(prefix);
        let address = backbone_core::StreamAddress::new(None, &uri).unwrap();
        let layout = backbone_redis::layout::Layout::new(&address, partitions).unwrap();
        let owners: HashSet<String> = layout
            .partitions()
            .iter()
            .map(|keys| cluster.master_for_key(keys.stream()).unwrap().unwrap())
            .collect();
        if owners.len() == masters {
            return uri;
        }
    }
}

/// `f64`s that must come back bit for bit: subnormals, the smallest normal, a sum that is not
/// 0.3, the largest magnitudes, a negative zero, and a value with many significant digits.
/// (`-1.5e-300` once came back as `-1.4999999999999998e-300`.)
pub const FLOATS: [f64; 7] = [
    -1.5e-300,
    5e-324,
    f64::MIN_POSITIVE,
    0.1 + 0.2,
    1e308,
    -0.0,
    123456.789e-10,
];

/// A retry policy of 10 ms delays and `max_deliveries` deliveries: failing ticks reach the
/// dead letters quickly.
pub fn quick_retry(max_deliveries: u32) -> backbone_core::RetryPolicy {
    backbone_core::RetryPolicy {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
        max_deliveries,
    }
}

/// The keys of `uri` (no environment).
pub fn keys(uri: &str) -> backbone_redis::keys::StreamKeys {
    backbone_redis::keys::StreamKeys::new(&backbone_core::StreamAddress::new(None, uri).unwrap())
}

/// The event a generated producer would send for `event`.
pub fn outgoing<E: backbone_core::ContractEvent>(event: &E) -> backbone_core::OutgoingEvent {
    let operation = event.operation();
    backbone_core::OutgoingEvent::new(operation.name, operation.version, event.encode().unwrap())
}

/// The message ids of the entries in `uri`'s stream (no environment), oldest first.
pub async fn stream_ids(url: &str, uri: &str) -> Vec<MessageId> {
    message_ids(&mut inspect(url).await, keys(uri).stream()).await
}

/// The message ids of the entries of `stream`, read through `connection`, oldest first.
pub async fn message_ids(
    connection: &mut (impl redis::aio::ConnectionLike + Send + Sync),
    stream: &str,
) -> Vec<MessageId> {
    use redis::AsyncCommands;
    let range: redis::streams::StreamRangeReply = connection.xrange_all(stream).await.unwrap();
    range
        .ids
        .iter()
        .map(|e| e.get::<String>("message_id").unwrap().parse().unwrap())
        .collect()
}

/// Consumes `sent.len()` events with a [`KindsRecorder`] subscribed through `builder` (of any
/// channel, set to stop after as many) and asserts they are `sent`, each once, in order, with
/// the ids `ids` and the same parameters.
pub async fn assert_kinds_consumed_through(
    builder: impl backbone_core::ConsumerBuilder,
    ids: &[MessageId],
    sent: &[KindsEvent],
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = builder
        .subscribe_kinds_consumer(KindsRecorder(tx))
        .await
        .unwrap();
    let got = collect(&mut rx, sent.len(), WAIT).await;
    lifetime.completion().await.unwrap();
    let got_ids: Vec<_> = got.iter().map(|(m, _)| m.message_id).collect();
    assert_exactly_once(ids, &got_ids);
    for ((meta, event), (id, expected)) in got.iter().zip(ids.iter().zip(sent)) {
        assert_eq!(&meta.message_id, id, "order within one consumer");
        assert_eq!(
            format!("{event:?}"),
            format!("{expected:?}"),
            "payload of {id}"
        );
    }
}

/// A UUIDv7 message id created `ago` before now.
pub fn created_ago(ago: std::time::Duration, n: u8) -> MessageId {
    let ms = backbone_core::metadata::now_millis() - ago.as_millis() as u64;
    let hex = format!("{ms:012x}");
    format!("{}-{}-7000-8000-0000000000{n:02x}", &hex[..8], &hex[8..])
        .parse()
        .unwrap()
}

/// Waits (in `tokio::time`, so virtually under a paused clock) until the in-memory `dead`
/// holds `n` dead letters or more; fails after [`WAIT`] saying how many it holds.
pub async fn memory_dead_letters(
    dead: &backbone_core::memory::DeadLetters,
    n: u64,
) -> Vec<backbone_core::dead_letters::DeadLetterEntry> {
    let enough = async {
        while dead.len().await.unwrap() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(WAIT, enough).await.is_err() {
        panic!("{} of {n} dead letters", dead.len().await.unwrap());
    }
    dead.list(None, usize::MAX).await.unwrap()
}

/// The message id and delivery count of each of `letters`, in order.
pub fn buried(
    letters: &[backbone_core::dead_letters::DeadLetterEntry],
) -> Vec<(Option<MessageId>, u32)> {
    letters
        .iter()
        .map(|l| (l.message_id, l.deliveries))
        .collect()
}
