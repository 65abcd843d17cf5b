//! The event store's time windows and statistics over real Redis: every window's count, sum,
//! average, minimum and maximum equals a brute-force fold over what was appended (empty
//! windows, one-event windows, inclusive millisecond bounds, several pages), and `stats()`
//! counts what the store appended apart from what plain producers sent.

use std::time::Duration;

use backbone_core::events_contract;
use backbone_core::store::{AppendOptions, ExpectedVersion, WindowStats};
use backbone_core::Error;
use backbone_redis::store::{EventStore, EventStoreBuilder};
use backbone_redis::testing::{shared, unique_name};
use backbone_redis::RedisProducerBuilder;
use redis::AsyncCommands;

#[events_contract]
pub trait Orders {
    async fn order_placed(&self, gateway: String, amount_cents: u64);
    async fn order_cancelled(&self, gateway: String, reason: String);
}

async fn open_store(uri: &str) -> EventStore<OrdersEvent> {
    let redis = shared().await.unwrap();
    EventStoreBuilder::new()
        .url(redis.url())
        .uri(uri)
        .build::<OrdersEvent>()
        .await
        .unwrap()
}

async fn producer(uri: &str) -> OrdersProducer {
    let redis = shared().await.unwrap();
    RedisProducerBuilder::new()
        .url(redis.url())
        .uri(uri)
        .build_orders_producer()
        .await
        .unwrap()
}

fn placed(gateway: &str, amount_cents: u64) -> OrdersEvent {
    OrdersEvent::OrderPlaced {
        gateway: gateway.to_owned(),
        amount_cents,
    }
}

fn cancelled(gateway: &str) -> OrdersEvent {
    OrdersEvent::OrderCancelled {
        gateway: gateway.to_owned(),
        reason: "changed mind".to_owned(),
    }
}

/// The amount of a placed order; cancellations have none.
fn amount(event: &OrdersEvent) -> Option<f64> {
    match event {
        OrdersEvent::OrderPlaced { amount_cents, .. } => Some(*amount_cents as f64),
        OrdersEvent::OrderCancelled { .. } => None,
    }
}

/// The amount of a placed order of gateway "north", negated (so sums go negative too).
fn north_refund(event: &OrdersEvent) -> Option<f64> {
    match event {
        OrdersEvent::OrderPlaced {
            gateway,
            amount_cents,
        } if gateway == "north" => Some(-(*amount_cents as f64) / 3.0),
        _ => None,
    }
}

/// Every event counts 1.
fn one(_: &OrdersEvent) -> Option<f64> {
    Some(1.0)
}

/// A numeric projection of an event.
type Value = fn(&OrdersEvent) -> Option<f64>;

const VALUES: [(&str, Value); 3] = [
    ("amount", amount),
    ("north_refund", north_refund),
    ("one", one),
];

/// A stream id `ms-seq` as numbers, to compare.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("a stream id");
    (ms.parse().unwrap(), seq.parse().unwrap())
}

/// What was written: each event with its stream id, in stream order.
#[derive(Default)]
struct Truth(Vec<((u64, u64), OrdersEvent)>);

impl Truth {
    /// Records the events of one append, at the positions it returned.
    fn appended(&mut self, positions: &[String], events: &[OrdersEvent]) {
        assert_eq!(positions.len(), events.len());
        for (position, event) in positions.iter().zip(events) {
            self.0.push((stream_id(position), event.clone()));
        }
    }

    fn sort(&mut self) {
        self.0.sort_by_key(|(id, _)| *id);
    }

    /// The brute force: fold `value` over the events whose ms is in `from..=to`.
    fn fold(&self, from: u64, to: u64, value: Value) -> WindowStats {
        WindowStats::from_values(
            self.0
                .iter()
                .filter(|((ms, _), _)| (from..=to).contains(ms))
                .filter_map(|(_, event)| value(event)),
        )
    }

    fn count(&self, from: u64, to: u64) -> u64 {
        let inside = self
            .0
            .iter()
            .filter(|((ms, _), _)| (from..=to).contains(ms));
        inside.count() as u64
    }

    /// The distinct milliseconds, ascending.
    fn millis(&self) -> Vec<u64> {
        let mut ms: Vec<u64> = self.0.iter().map(|((ms, _), _)| *ms).collect();
        ms.dedup();
        ms
    }
}

/// Asserts that `window_paged` and `count_between` agree with the brute force on `from..=to`.
async fn check(store: &EventStore<OrdersEvent>, truth: &Truth, from: u64, to: u64, page: usize) {
    for (name, value) in VALUES {
        let got = store
            .window_paged(from, to, page, |e| value(&e.event))
            .await
            .unwrap();
        let want = truth.fold(from, to, value);
        assert_eq!(got, want, "window {from}..={to} of {name}, pages of {page}");
    }
    let counted = store.count_between(from, to).await.unwrap();
    assert_eq!(counted, truth.count(from, to), "count {from}..={to}");
}

/// Reads the whole stream back and checks it is exactly `truth`.
async fn assert_read_back(store: &EventStore<OrdersEvent>, truth: &Truth) {
    let page = store
        .read_between(0, u64::MAX, None, 100_000)
        .await
        .unwrap();
    assert!(page.next.is_none());
    let read: Vec<_> = page
        .events
        .iter()
        .map(|e| (stream_id(&e.metadata.stream_id), format!("{:?}", e.event)))
        .collect();
    let want: Vec<_> = truth
        .0
        .iter()
        .map(|(id, e)| (*id, format!("{e:?}")))
        .collect();
    assert_eq!(read, want);
}

#[tokio::test]
async fn window_results_equal_a_brute_force_fold() {
    let uri = unique_name("stats-windows");
    let store = open_store(&uri).await;
    let producer = producer(&uri).await;
    let gateways = ["north", "south", "east"];
    let mut truth = Truth::default();
    let mut sent = Vec::new(); // (message id, event) sent by a plain producer
    for i in 0..24u64 {
        let gateway = gateways[(i % 3) as usize];
        // Batches of 1 to 4 events (one script: usually one ms), some cancellations.
        let events: Vec<OrdersEvent> = (0..=(i % 4))
            .map(|j| match (i + j) % 5 {
                4 => cancelled(gateway),
                _ => placed(gateway, (i * 37 + j * 101) % 1000 + 1),
            })
            .collect();
        let result = store
            .append(
                &format!("order-{i}"),
                ExpectedVersion::NoStream,
                &events,
                AppendOptions::default(),
            )
            .await
            .unwrap();
        truth.appended(&result.positions, &events);
        if i % 7 == 3 {
            let amount_cents = 500 + i;
            let producer = producer.order_placed("north".into(), amount_cents);
            sent.push((producer.await.unwrap(), placed("north", amount_cents)));
        }
        // 1 to 3 ms between appends: each append has ms of its own, some with gaps between.
        tokio::time::sleep(Duration::from_millis(1 + i % 3)).await;
    }
    // The producer's events' stream ids, read back by message id.
    let all = store
        .read_between(0, u64::MAX, None, 100_000)
        .await
        .unwrap();
    for (id, event) in sent {
        let stored = all.events.iter().find(|e| e.metadata.message_id == id);
        let stored = stored.expect("the producer's event is in the stream");
        assert!(stored.aggregate_id.is_none());
        truth.appended(std::slice::from_ref(&stored.metadata.stream_id), &[event]);
    }
    truth.sort();
    assert_read_back(&store, &truth).await;

    let ms = truth.millis();
    let (first, last) = (ms[0], ms[ms.len() - 1]);
    let mut windows = vec![
        (0, u64::MAX),
        (first, last),
        (0, first - 1),        // empty, before
        (last + 1, u64::MAX),  // empty, after
        (last, first),         // empty, reversed
        (first + 1, last - 1), // both ends excluded
    ];
    let (mut singles, mut multiples, mut gaps) = (0, 0, 0);
    for (k, &m) in ms.iter().enumerate() {
        match truth.count(m, m) {
            1 => singles += 1,
            _ => multiples += 1,
        }
        windows.extend([
            (m, m),         // one ms: one event or a batch
            (first, m),     // up to m, inclusive
            (first, m - 1), // up to m, exclusive
            (m, last),      // from m, inclusive
            (m + 1, last),  // from m, exclusive
            (m - 1, m + 1), // around m
        ]);
        if let Some(&next) = ms.get(k + 1) {
            windows.push((m, next)); // two adjacent ms with events
            if next > m + 1 {
                gaps += 1;
                windows.push((m + 1, next - 1)); // empty, between events
            }
        }
    }
    assert!(
        singles > 0 && multiples > 0 && gaps > 0,
        "want one-event ms ({singles}), several-event ms ({multiples}) and gaps ({gaps})"
    );
    for (from, to) in windows {
        check(&store, &truth, from, to, 500).await;
    }
    // A few of them again in small pages.
    for page in [1, 3] {
        check(&store, &truth, 0, u64::MAX, page).await;
        check(&store, &truth, ms[3], ms[ms.len() - 4], page).await;
    }
}

#[tokio::test]
async fn a_value_function_returning_none_leaves_events_out() {
    let uri = unique_name("stats-none");
    let store = open_store(&uri).await;
    let events = [
        placed("north", 100),
        cancelled("north"),
        placed("south", 600),
        cancelled("south"),
        placed("east", 200),
    ];
    store
        .append(
            "o",
            ExpectedVersion::NoStream,
            &events,
            AppendOptions::default(),
        )
        .await
        .unwrap();
    let stats = store
        .window(0, u64::MAX, |e| amount(&e.event))
        .await
        .unwrap();
    assert_eq!(
        (stats.count, stats.sum, stats.avg, stats.min, stats.max),
        (3, 900.0, Some(300.0), Some(100.0), Some(600.0))
    );
    let nothing = store.window(0, u64::MAX, |_| None).await.unwrap();
    assert_eq!(nothing, WindowStats::default());
    // NaN is left out like None, so it cannot poison the sum.
    let nan = store
        .window(0, u64::MAX, |e| amount(&e.event).or(Some(f64::NAN)))
        .await
        .unwrap();
    assert_eq!(nan, stats);
    assert_eq!(store.count_between(0, u64::MAX).await.unwrap(), 5);
    // A stream that does not exist has empty windows.
    let empty = open_store(&unique_name("stats-none-empty")).await;
    let stats = empty.window(0, u64::MAX, |e| amount(&e.event)).await;
    assert_eq!(stats.unwrap(), WindowStats::default());
    assert_eq!(empty.count_between(0, u64::MAX).await.unwrap(), 0);
}

#[tokio::test]
async fn windows_page_through_more_than_one_page() {
    let uri = unique_name("stats-pages");
    let store = open_store(&uri).await;
    let mut truth = Truth::default();
    // 1 200 events: three pages of `window`, two script calls of `count_between`.
    for batch in 0..12u64 {
        let events: Vec<OrdersEvent> = (0..100u64)
            .map(|i| match i % 9 {
                8 => cancelled("east"),
                _ => placed(["north", "south"][(i % 2) as usize], batch * 1000 + i),
            })
            .collect();
        let result = store
            .append(
                &format!("batch-{batch}"),
                ExpectedVersion::NoStream,
                &events,
                AppendOptions::default(),
            )
            .await
            .unwrap();
        truth.appended(&result.positions, &events);
        if batch % 4 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    truth.sort();
    assert_eq!(truth.0.len(), 1200);
    for (name, value) in VALUES {
        let got = store
            .window(0, u64::MAX, |e| value(&e.event))
            .await
            .unwrap();
        assert_eq!(got, truth.fold(0, u64::MAX, value), "{name}");
    }
    assert_eq!(store.count_between(0, u64::MAX).await.unwrap(), 1200);
    let ms = truth.millis();
    let (first, last) = (ms[0], ms[ms.len() - 1]);
    // Pages that divide the window exactly, leave one event over, hold it all or more;
    // sub-windows cut at ms boundaries.
    for page in [100, 1199, 1200, 1201] {
        check(&store, &truth, 0, u64::MAX, page).await;
    }
    for m in [first, ms[ms.len() / 2], last] {
        check(&store, &truth, first, m, 300).await;
        check(&store, &truth, m + 1, last, 300).await;
    }
}

#[tokio::test]
async fn stats_counts_what_the_store_appended() {
    let uri = unique_name("stats-totals");
    let store = open_store(&uri).await;
    let producer = producer(&uri).await;
    let minute = Duration::from_secs(60);

    let nothing = store.stats(minute).await.unwrap();
    assert_eq!(
        (nothing.appended, nothing.stream_length, nothing.in_window),
        (0, 0, 0)
    );
    assert_eq!(nothing.rate_per_sec, 0.0);

    let mut last_ms = 0;
    let batches = [
        vec![placed("north", 10)],
        vec![placed("south", 20), cancelled("south")],
        vec![placed("east", 30), placed("east", 40), cancelled("east")],
        vec![placed("north", 50)],
    ];
    for (i, events) in batches.iter().enumerate() {
        let key = format!("{uri}-{i}");
        let options = AppendOptions::idempotent(&key);
        let first = store
            .append(
                &format!("o-{i}"),
                ExpectedVersion::NoStream,
                events,
                options.clone(),
            )
            .await
            .unwrap();
        // A retry with the same key is a replay: nothing written, nothing counted.
        let again = store
            .append(
                &format!("o-{i}"),
                ExpectedVersion::NoStream,
                events,
                options,
            )
            .await
            .unwrap();
        assert!(!first.replayed && again.replayed);
        assert_eq!(again.positions, first.positions);
        last_ms = last_ms.max(stream_id(first.positions.last().unwrap()).0);
    }
    // A version conflict writes and counts nothing either.
    let conflict = store
        .append(
            "o-0",
            ExpectedVersion::NoStream,
            &[placed("north", 1)],
            AppendOptions::default(),
        )
        .await;
    assert!(matches!(conflict, Err(Error::WrongExpectedVersion { .. })));
    // Events of a plain producer are in the stream, not in `appended`.
    for n in 0..4 {
        producer.order_placed("west".into(), n).await.unwrap();
    }
    producer
        .order_cancelled("west".into(), "x".into())
        .await
        .unwrap();

    let stats = store.stats(minute).await.unwrap();
    assert_eq!(
        (stats.appended, stats.stream_length, stats.in_window),
        (7, 12, 12)
    );
    assert_eq!(stats.rate_per_sec, 12.0 / 60.0);
    assert_eq!(stats.window, minute);
    assert!(stats.at_ms >= last_ms, "{} < {last_ms}", stats.at_ms);
    // `appended` is the store's counter in Redis.
    let redis = shared().await.unwrap();
    let mut raw = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let counter: u64 = raw
        .hget(store.keys().store_stats(), "appended")
        .await
        .unwrap();
    assert_eq!(counter, 7);

    // A window that ended before the stats were taken holds none of them.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let recent = store.stats(Duration::from_millis(10)).await.unwrap();
    assert_eq!(
        (recent.appended, recent.stream_length, recent.in_window),
        (7, 12, 0)
    );
    assert_eq!(recent.rate_per_sec, 0.0);
    // The window is the `window` ms up to the stats' time, bounds included: compare with the
    // stream ids read back, for a window ending among the producer's events.
    let ids: Vec<u64> = store
        .read_between(0, u64::MAX, None, 100)
        .await
        .unwrap()
        .events
        .iter()
        .map(|e| stream_id(&e.metadata.stream_id).0)
        .collect();
    let window_ms = recent.at_ms - last_ms + 1;
    let since = store.stats(Duration::from_millis(window_ms)).await.unwrap();
    let from = since.at_ms + 1 - window_ms;
    let want = ids.iter().filter(|&&ms| ms >= from && ms <= since.at_ms);
    assert_eq!(since.in_window, want.count() as u64, "{since:?}");

    let zero = store.stats(Duration::ZERO).await.unwrap_err();
    assert!(matches!(zero, Error::Config(_)), "{zero:?}");
}
