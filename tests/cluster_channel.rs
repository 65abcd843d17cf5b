//! The channel, dead letters, trimming and the event store over a real 3-master Redis
//! Cluster: contracts whose streams live on every master, claiming and dead-lettering, and
//! the store's writers and reads.

mod common;

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use backbone_core::store::{AppendOptions, ExpectedVersion};
use backbone_redis::keys::StreamKeys;
use backbone_redis::settings::RedisSettings;
use backbone_redis::store::EventStoreBuilder;
use backbone_redis::testing::{unique_name, RedisCluster};
use backbone_redis::{DeadLetters, StreamAdmin};
use common::delivery::*;
use common::*;
use tokio::sync::mpsc;

/// One cluster for every test of this file (each test uses its own streams).
fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(3, 0).expect("a 3-master cluster"))
}

async fn settings(uri: &str) -> RedisSettings {
    let cluster = tokio::task::spawn_blocking(cluster).await.unwrap();
    cluster.settings().uri(uri)
}

/// `count` uris whose streams are served by `count` different masters.
fn uris_on_every_master(prefix: &str, count: usize) -> Vec<String> {
    let cluster = cluster();
    let mut masters = HashSet::new();
    let mut uris = Vec::new();
    while uris.len() < count {
        let uri = unique_name(prefix);
        let stream = StreamKeys::new(&backbone_core::StreamAddress::new(None, &uri).unwrap());
        let owner = cluster.master_for_key(stream.stream()).unwrap().unwrap();
        if masters.insert(owner) {
            uris.push(uri);
        }
    }
    uris
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contracts_on_every_master_deliver_everything() {
    init_tracing();
    let uris = tokio::task::spawn_blocking(|| uris_on_every_master("everywhere", 3))
        .await
        .unwrap();
    for uri in uris {
        let settings = settings(&uri).await;
        let producer = ticks_producer(settings.clone()).await;
        let sent = send(&producer, 0..100).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let lifetimes = start_group(&settings, "g", &["a", "b"], &tx).await;
        let more = send(&producer, 100..200).await;
        let sent: Vec<_> = sent.into_iter().chain(more).collect();
        let seen = gather(&mut rx, &sent, Duration::from_secs(20), SETTLE).await;
        assert_exactly_once(&sent, &ids(&seen));
        stop_all(&uri, lifetimes.into_iter().map(|(_, l)| l).collect()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_events_are_dead_lettered_replayed_and_trimmed() {
    init_tracing();
    let uri = unique_name("dead");
    let settings = settings(&uri).await;
    let producer = ticks_producer(settings.clone()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut failing = recorder("f", &tx);
    failing.fail = |n| n % 10 == 0;
    let lifetime = consumer_with(settings.clone(), "g", "f")
        .retry(quick_retry(2))
        .subscribe_ticks_consumer(failing)
        .await
        .unwrap();
    let sent = send(&producer, 0..50).await;
    let dead = DeadLetters::open(&settings, "g").await.unwrap();
    wait_dead_letters(&dead, 5).await;
    let ok: Vec<_> = sent
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 10 != 0)
        .map(|(_, id)| *id)
        .collect();
    let seen = gather(&mut rx, &ok, Duration::from_secs(20), SETTLE).await;
    assert_exactly_once(&ok, &ids(&seen));
    stop("failing", lifetime).await;

    // Replayed to a consumer that succeeds, every dead letter arrives.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = consumer_with(settings.clone(), "g", "ok")
        .subscribe_ticks_consumer(recorder("ok", &tx))
        .await
        .unwrap();
    assert_eq!(dead.replay_all().await.unwrap(), 5);
    let replayed = collect(&mut rx, 5, Duration::from_secs(20)).await;
    let mut numbers: Vec<u64> = replayed.iter().map(|s| s.n).collect();
    numbers.sort();
    assert_eq!(numbers, [0, 10, 20, 30, 40]);
    assert!(dead.is_empty().await.unwrap());
    stop("ok", lifetime).await;

    let admin = StreamAdmin::open(&settings).await.unwrap();
    assert_eq!(admin.len().await.unwrap(), 55);
    let report = admin.trim(10).await.unwrap();
    assert!(admin.len().await.unwrap() <= 10, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumers_entries_are_claimed() {
    init_tracing();
    let uri = unique_name("claim");
    let settings = settings(&uri).await;
    let producer = ticks_producer(settings.clone()).await;
    // A consumer that reads the events, never finishes one, and dies with its runtime: the
    // entries stay pending under its name until another consumer claims them.
    let stalled = settings.clone();
    let sent = send(&producer, 0..20).await;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let _lifetime = consumer_with(stalled, "g", "hang")
                .subscribe_ticks_consumer(Hang)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
    })
    .join()
    .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = consumer_with(settings.clone(), "g", "claimer")
        .claim_min_idle(CLAIM)
        .subscribe_ticks_consumer(recorder("claimer", &tx))
        .await
        .unwrap();
    let seen = gather(&mut rx, &sent, Duration::from_secs(20), SETTLE).await;
    assert_at_least_once(&sent, &ids(&seen));
    stop("claimer", lifetime).await;
}

/// Never finishes a tick.
#[derive(Clone)]
struct Hang;

#[backbone_core::async_trait]
impl TicksConsumer for Hang {
    async fn tick(
        &self,
        _: &backbone_core::ConsumerContext,
        _: u64,
    ) -> backbone_core::HandlerResult {
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_appends_reads_and_counts_on_a_cluster() {
    init_tracing();
    let uri = unique_name("store");
    let settings = settings(&uri).await;
    let store = EventStoreBuilder::new()
        .settings(settings.clone())
        .build::<TicksEvent>()
        .await
        .unwrap();
    // 8 writers race on one aggregate with expected versions: every version is written once.
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut written = 0;
            while written < 25 {
                let version = store.version("acct").await.unwrap();
                let event = [TicksEvent::Tick {
                    n: w * 1000 + written,
                }];
                let expected = if version == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(version)
                };
                if store
                    .append("acct", expected, &event, AppendOptions::default())
                    .await
                    .is_ok()
                {
                    written += 1;
                }
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(store.version("acct").await.unwrap(), 200);
    let page = store.read("acct", 1, 200).await.unwrap();
    assert_eq!(page.events.len(), 200);
    let stats = store.stats(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(stats.appended, 200);
}

/// The sum of the ticks, as a projection and as an aggregate.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Total {
    sum: u64,
    events: u64,
}

impl backbone_core::store::Projection for Total {
    type Event = TicksEvent;
    const NAME: &'static str = "total-v1";
    fn apply(&mut self, event: &TicksEvent, _: &backbone_core::Metadata) {
        let TicksEvent::Tick { n } = event;
        self.sum += n;
        self.events += 1;
    }
}

impl backbone_core::store::Aggregate for Total {
    type Event = TicksEvent;
    const NAME: &'static str = "total-v1";
    fn apply(&mut self, event: &TicksEvent) {
        let TicksEvent::Tick { n } = event;
        self.sum += n;
        self.events += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_checkpoints_and_snapshots_work_on_a_cluster() {
    use backbone_core::store::{CachingPolicy, CheckpointPolicy};
    init_tracing();
    for partitions in [1, 6] {
        let uri = unique_name("proj");
        let settings = settings(&uri).await.partitions(partitions);
        let store = EventStoreBuilder::new()
            .settings(settings)
            .caching(CachingPolicy::EveryEvents(5))
            .build::<TicksEvent>()
            .await
            .unwrap();
        for a in 0..4u64 {
            let events: Vec<TicksEvent> = (0..10)
                .map(|n| TicksEvent::Tick { n: a * 100 + n })
                .collect();
            store
                .append(
                    &format!("acct-{a}"),
                    ExpectedVersion::NoStream,
                    &events,
                    AppendOptions::default(),
                )
                .await
                .unwrap();
        }
        // Loads write snapshots (after 5 events) and read them back.
        for a in 0..4u64 {
            let aggregate = format!("acct-{a}");
            let first = store.load::<Total>(&aggregate).await.unwrap();
            let again = store.load::<Total>(&aggregate).await.unwrap();
            assert_eq!((first.version, first.state.events), (10, 10));
            assert_eq!(again.state.sum, first.state.sum);
            assert_eq!(first.state.sum, (0..10).map(|n| a * 100 + n).sum::<u64>());
        }
        if partitions > 1 {
            let refused = store.project::<Total>(CheckpointPolicy::default()).await;
            assert!(
                refused.is_err(),
                "a projection over a partitioned store is refused"
            );
            continue;
        }
        let total = store
            .project::<Total>(CheckpointPolicy {
                every_events: 7,
                every: Duration::from_millis(100),
            })
            .await
            .unwrap();
        total.caught_up().await.unwrap();
        assert_eq!(total.state().events, 40);
        total.shutdown().await.unwrap();
        // A restart resumes from the checkpoint.
        let again = store
            .project::<Total>(CheckpointPolicy::default())
            .await
            .unwrap();
        again.caught_up().await.unwrap();
        assert_eq!(again.state().events, 40);
        again.shutdown().await.unwrap();
    }
}
