//! The event store's append and reads over real Redis: the expected-version matrix of
//! ../shared/reference/delivery-scenarios.md, idempotency keys, all-or-nothing batches, many
//! concurrent writers, reads by version and time, and store events reaching consumer groups.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use backbone_core::error::KeyReuse;
use backbone_core::store::{AppendOptions, ExpectedVersion};
use backbone_core::Error;
use backbone_redis::store::{EventStore, EventStoreBuilder};
use backbone_redis::testing::{shared, unique_name};
use backbone_redis::RedisConsumerBuilder;
use common::*;
use futures::TryStreamExt;
use redis::AsyncCommands;
use tokio::sync::mpsc;

async fn store(uri: &str) -> EventStore<TicksEvent> {
    let redis = shared().await.unwrap();
    EventStoreBuilder::new()
        .url(redis.url())
        .uri(uri)
        .build::<TicksEvent>()
        .await
        .unwrap()
}

fn ticks(range: std::ops::Range<u64>) -> Vec<TicksEvent> {
    range.map(|n| TicksEvent::Tick { n }).collect()
}

/// A stream id `ms-seq` as numbers, to compare.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("a stream id");
    (ms.parse().unwrap(), seq.parse().unwrap())
}

fn none() -> AppendOptions {
    AppendOptions::default()
}

fn conflict(err: Error) -> (String, u64) {
    match err {
        Error::WrongExpectedVersion {
            expected, actual, ..
        } => (expected, actual),
        other => panic!("expected a version conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn the_expected_version_matrix() {
    let uri = unique_name("matrix");
    let store = store(&uri).await;
    // "no stream" on a new aggregate succeeds; again, it fails reporting the actual version.
    let first = store
        .append("a", ExpectedVersion::NoStream, &ticks(0..2), none())
        .await
        .unwrap();
    assert_eq!(
        (first.first_version, first.version, first.replayed),
        (1, 2, false)
    );
    let err = store
        .append("a", ExpectedVersion::NoStream, &ticks(2..3), none())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "append to aggregate `a`: expected no stream, but it is at version 2"
    );
    // The current version succeeds; a stale one fails with expected and actual.
    let second = store
        .append("a", ExpectedVersion::Exact(2), &ticks(2..3), none())
        .await
        .unwrap();
    assert_eq!((second.first_version, second.version), (3, 3));
    let err = store
        .append("a", ExpectedVersion::Exact(2), &ticks(3..4), none())
        .await
        .unwrap_err();
    assert_eq!(conflict(err), ("version 2".to_owned(), 3));
    // "Any" skips the check.
    let any = store
        .append("a", ExpectedVersion::Any, &ticks(3..5), none())
        .await
        .unwrap();
    assert_eq!((any.first_version, any.version), (4, 5));
    assert_eq!(store.version("a").await.unwrap(), 5);
    assert_eq!(store.version("untouched").await.unwrap(), 0);
    // Exact(0) means "no events yet", like NoStream.
    store
        .append("b", ExpectedVersion::Exact(0), &ticks(0..1), none())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_result_and_writes_nothing() {
    let uri = unique_name("idem");
    let store = store(&uri).await;
    let options = AppendOptions::idempotent("capture-1");
    let first = store
        .append(
            "p",
            ExpectedVersion::NoStream,
            &ticks(0..2),
            options.clone(),
        )
        .await
        .unwrap();
    let retry = store
        .append(
            "p",
            ExpectedVersion::NoStream,
            &ticks(0..2),
            options.clone(),
        )
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(
        (retry.first_version, retry.version, &retry.positions),
        (1, 2, &first.positions)
    );
    assert_eq!(
        store.version("p").await.unwrap(),
        2,
        "the retry wrote nothing"
    );
    // Even with a different expected version: the key decides (other events or another
    // aggregate are refused, see `an_idempotency_key_reused_for_other_events_or_another_*`).
    let retry = store
        .append("p", ExpectedVersion::Exact(9), &ticks(0..2), options)
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!(retry.positions, first.positions);
    // A different key appends.
    let other = store
        .append(
            "p",
            ExpectedVersion::Exact(2),
            &ticks(2..3),
            AppendOptions::idempotent("capture-2"),
        )
        .await
        .unwrap();
    assert_eq!((other.version, other.replayed), (3, false));
    let mut raw = raw(shared().await.unwrap().url()).await;
    let ttl: i64 = raw
        .ttl(store.keys().idempotency("capture-1"))
        .await
        .unwrap();
    assert!(
        ttl > 0 && ttl <= 24 * 3600,
        "dedup records expire: ttl {ttl}"
    );
    let stream_len: u64 = raw.xlen(store.keys().stream()).await.unwrap();
    assert_eq!(stream_len, 3);
}

#[tokio::test]
async fn an_idempotency_key_reused_for_another_aggregate_or_other_events_is_refused() {
    let uri = unique_name("idem-reuse");
    let store = store(&uri).await;
    let key = AppendOptions::idempotent("deposit-1");
    let first = store
        .append("a", ExpectedVersion::Any, &ticks(0..2), key.clone())
        .await
        .unwrap();
    // Same key, same aggregate, same events: a replay of the first result.
    let retry = store
        .append("a", ExpectedVersion::Any, &ticks(0..2), key.clone())
        .await
        .unwrap();
    assert!(retry.replayed);
    assert_eq!((retry.version, &retry.positions), (2, &first.positions));
    // Another aggregate: refused, naming the original one; nothing written.
    let err = store
        .append("b", ExpectedVersion::Any, &ticks(0..2), key.clone())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "append to aggregate `b`: idempotency key `deposit-1` was already used by an append \
         to aggregate `a`; nothing was written"
    );
    let Error::IdempotencyKeyReused {
        key: k,
        aggregate,
        original_aggregate,
        reuse,
    } = err
    else {
        panic!("expected IdempotencyKeyReused");
    };
    assert_eq!(
        (k.as_str(), aggregate.as_str(), original_aggregate.as_str()),
        ("deposit-1", "b", "a")
    );
    assert_eq!(reuse, KeyReuse::OtherAggregate);
    assert_eq!(store.version("b").await.unwrap(), 0);
    // The same aggregate with other events (other values, fewer, more): refused.
    for other in [ticks(0..1), ticks(5..7), ticks(0..3)] {
        let err = store
            .append("a", ExpectedVersion::Any, &other, key.clone())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "append to aggregate `a`: idempotency key `deposit-1` was already used by an \
             append to aggregate `a` with other events; nothing was written"
        );
        assert!(
            matches!(
                err,
                Error::IdempotencyKeyReused {
                    reuse: KeyReuse::OtherEvents,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert_eq!(store.version("a").await.unwrap(), 2, "nothing written");
    let mut raw = raw(shared().await.unwrap().url()).await;
    let stream_len: u64 = raw.xlen(store.keys().stream()).await.unwrap();
    assert_eq!(stream_len, 2);
    let stats: Option<u64> = raw
        .hget(store.keys().store_stats(), "appended")
        .await
        .unwrap();
    assert_eq!(stats, Some(2));
}

#[tokio::test]
async fn an_idempotency_record_of_the_old_format_still_replays() {
    let uri = unique_name("idem-old");
    let store = store(&uri).await;
    let mut raw = raw(shared().await.unwrap().url()).await;
    // What an append before fingerprints recorded: "<first> <last> <positions>".
    let _: () = raw
        .set_ex(store.keys().idempotency("old-key"), "1 2 17-0,17-1", 3600)
        .await
        .unwrap();
    for aggregate in ["a", "b"] {
        let replay = store
            .append(
                aggregate,
                ExpectedVersion::Any,
                &ticks(0..1),
                AppendOptions::idempotent("old-key"),
            )
            .await
            .unwrap();
        assert!(replay.replayed, "{aggregate}");
        assert_eq!(
            (replay.first_version, replay.version, replay.positions),
            (1, 2, vec!["17-0".to_owned(), "17-1".to_owned()])
        );
    }
    let stream_len: u64 = raw.xlen(store.keys().stream()).await.unwrap();
    assert_eq!(stream_len, 0, "nothing written");
}

#[tokio::test]
async fn a_batch_is_all_or_nothing() {
    let uri = unique_name("batch");
    let store = store(&uri).await;
    store
        .append("x", ExpectedVersion::NoStream, &ticks(0..3), none())
        .await
        .unwrap();
    // A conflicting batch writes none of its events.
    store
        .append("x", ExpectedVersion::Exact(1), &ticks(3..10), none())
        .await
        .unwrap_err();
    // A batch refused by a check of the script (here: a key of the wrong type) writes nothing.
    let mut raw = raw(shared().await.unwrap().url()).await;
    let _: () = raw
        .set(store.keys().store_stats(), "not a hash")
        .await
        .unwrap();
    let err = store
        .append("x", ExpectedVersion::Exact(3), &ticks(3..10), none())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a hash"), "{err}");
    assert_eq!(store.version("x").await.unwrap(), 3);
    let stream_len: u64 = raw.xlen(store.keys().stream()).await.unwrap();
    assert_eq!(stream_len, 3, "nothing reached the contract's stream");
    let payloads: Vec<String> = raw.keys(format!("bb:{{{uri}}}:payload:*")).await.unwrap();
    assert_eq!(payloads.len(), 3, "no payload hash left behind");
    // So does an aggregate's stream key holding another type (the stream-type check).
    let _: () = raw.del(store.keys().store_stats()).await.unwrap();
    let _: () = raw
        .set(store.keys().aggregate("y"), "not a stream")
        .await
        .unwrap();
    let err = store
        .append("y", ExpectedVersion::Any, &ticks(3..10), none())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "{} holds a string, not a stream",
            store.keys().aggregate("y")
        )),
        "{err}"
    );
    let stream_len: u64 = raw.xlen(store.keys().stream()).await.unwrap();
    assert_eq!(stream_len, 3, "nothing reached the contract's stream");
    let payloads: Vec<String> = raw.keys(format!("bb:{{{uri}}}:payload:*")).await.unwrap();
    assert_eq!(payloads.len(), 3, "no payload hash left behind");
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_error() {
    let uri = unique_name("store-bad");
    let store = store(&uri).await;
    let err = store
        .append("has space", ExpectedVersion::Any, &ticks(0..1), none())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: aggregate id \"has space\" contains whitespace at byte 3"
    );
    let err = store
        .append("a", ExpectedVersion::Any, &[], none())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: append to aggregate `a`: no events given"
    );
    let err = store
        .append(
            "a",
            ExpectedVersion::Any,
            &ticks(0..1),
            AppendOptions::idempotent(""),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: idempotency key must not be empty"
    );
    let err = EventStoreBuilder::new()
        .uri("x")
        .idempotency_ttl(Duration::ZERO)
        .build::<TicksEvent>()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: idempotency_ttl must be at least 1 s"
    );
}

/// 8 writers × 500 appends, each reading the version and appending with it as expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_leave_no_gap_and_no_duplicate() {
    let uri = unique_name("writers");
    let store = store(&uri).await;
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let (mut won, mut conflicts) = (Vec::new(), 0u64);
            for i in 0..500u64 {
                let n = w * 1000 + i;
                loop {
                    let version = store.version("shared").await.unwrap();
                    match store
                        .append(
                            "shared",
                            ExpectedVersion::Exact(version),
                            &ticks(n..n + 1),
                            none(),
                        )
                        .await
                    {
                        Ok(result) => {
                            assert_eq!(result.version, version + 1);
                            won.push((result.version, n));
                            break;
                        }
                        Err(Error::WrongExpectedVersion { actual, .. }) => {
                            assert!(actual > version, "a conflict reports a newer version");
                            conflicts += 1;
                        }
                        Err(e) => panic!("writer {w}: {e}"),
                    }
                }
            }
            (won, conflicts)
        }));
    }
    let mut won = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        let (w, c) = task.await.unwrap();
        won.extend(w);
        conflicts += c;
    }
    won.sort();
    let versions: Vec<u64> = won.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        versions,
        (1..=4000).collect::<Vec<_>>(),
        "one winner per version, no gap"
    );
    assert_eq!(store.version("shared").await.unwrap(), 4000);
    // The stored history is exactly what the writers were told they wrote.
    let stored: Vec<(u64, u64)> = store
        .stream("shared", 1)
        .map_ok(|e| {
            let TicksEvent::Tick { n } = e.event;
            (e.aggregate_version.unwrap(), n)
        })
        .try_collect()
        .await
        .unwrap();
    assert_eq!(stored, won);
    let distinct: HashSet<u64> = stored.iter().map(|(_, n)| *n).collect();
    assert_eq!(distinct.len(), 4000, "no duplicate event");
    eprintln!("8 writers x 500 appends: {conflicts} conflicts reported and retried");
}

#[tokio::test]
async fn reads_page_by_version_and_by_time() {
    let uri = unique_name("reads");
    let store = store(&uri).await;
    let before = backbone_core::metadata::now_millis();
    for chunk in 0..5u64 {
        store
            .append(
                "r",
                ExpectedVersion::Any,
                &ticks(chunk * 10..chunk * 10 + 10),
                none(),
            )
            .await
            .unwrap();
    }
    store
        .append("other", ExpectedVersion::Any, &ticks(100..103), none())
        .await
        .unwrap();
    let after = backbone_core::metadata::now_millis();

    let page = store.read("r", 1, 20).await.unwrap();
    assert_eq!(page.events.len(), 20);
    assert_eq!(page.next, Some(21));
    assert_eq!(page.events[0].aggregate_version, Some(1));
    assert_eq!(page.events[0].aggregate_id.as_deref(), Some("r"));
    let last = store.read("r", 41, 20).await.unwrap();
    assert_eq!((last.events.len(), last.next), (10, None));
    let exact = store.read("r", 31, 20).await.unwrap();
    assert_eq!(
        (exact.events.len(), exact.next),
        (20, None),
        "a page that ends at the end has no next"
    );
    let all: Vec<u64> = store
        .stream("r", 1)
        .map_ok(|e| match e.event {
            TicksEvent::Tick { n } => n,
        })
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all, (0..50).collect::<Vec<_>>());
    let tail: Vec<_> = store.stream("r", 48).try_collect().await.unwrap();
    assert_eq!(tail.len(), 3, "versions 48, 49 and 50");

    // The contract's stream between two times holds both aggregates, in order, paged.
    let mut seen = Vec::new();
    let mut after_position = None;
    loop {
        let page = store
            .read_between(before, after, after_position.as_deref(), 16)
            .await
            .unwrap();
        seen.extend(page.events.iter().map(|e| {
            (
                e.aggregate_id.clone().unwrap(),
                e.metadata.stream_id.clone(),
            )
        }));
        match page.next {
            Some(next) => after_position = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 53);
    let ids: Vec<(u64, u64)> = seen.iter().map(|(_, id)| stream_id(id)).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "in stream order: {ids:?}"
    );
    let empty = store
        .read_between(0, before.saturating_sub(1), None, 10)
        .await
        .unwrap();
    assert!(empty.events.is_empty() && empty.next.is_none());
}

#[tokio::test]
async fn store_events_reach_the_contract_s_consumer_groups_in_aggregate_order() {
    let redis = shared().await.unwrap();
    let uri = unique_name("store-consumers");
    let store = store(&uri).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .group("projector")
        .concurrency(4)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    for n in 0..20u64 {
        let aggregate = format!("agg-{}", n % 3);
        store
            .append(&aggregate, ExpectedVersion::Any, &ticks(n..n + 1), none())
            .await
            .unwrap();
    }
    let seen = collect(&mut rx, 20, WAIT).await;
    lifetime.shutdown().await.unwrap();
    for k in 0..3u64 {
        let aggregate = format!("agg-{k}");
        let order: Vec<u64> = seen
            .iter()
            .filter(|s| s.meta.key.as_deref() == Some(aggregate.as_str()))
            .map(|s| s.n)
            .collect();
        let expected: Vec<u64> = (0..20).filter(|n| n % 3 == k).collect();
        assert_eq!(
            order, expected,
            "events of {aggregate} arrive in order, keyed by the aggregate"
        );
    }
}

#[tokio::test]
async fn trimming_the_contract_stream_keeps_the_aggregates_payloads() {
    let uri = unique_name("store-trim");
    let store = store(&uri).await;
    store
        .append("a", ExpectedVersion::NoStream, &ticks(0..3), none())
        .await
        .unwrap();
    let redis = shared().await.unwrap();
    let admin = backbone_redis::StreamAdmin::connect(redis.url(), None, &uri)
        .await
        .unwrap();
    let report = admin.trim(0).await.unwrap();
    assert_eq!((report.entries, report.payloads), (3, 0));
    let page = store.read("a", 1, 10).await.unwrap();
    let events: Vec<String> = page
        .events
        .iter()
        .map(|e| format!("{:?}", e.event))
        .collect();
    let expected: Vec<String> = ticks(0..3).iter().map(|e| format!("{e:?}")).collect();
    assert_eq!(events, expected);
}
