//! The Redis producer's batching over real Redis: concurrent sends through one publisher share
//! runs of the publish script, yet every event is written exactly once with its own payload
//! (copies of one event sent at once included, with and without parameters); an event that
//! cannot be written fails alone while the rest of its batch is written; a flushed script cache
//! is reloaded; and a publisher whose batching task died with its runtime says so at once.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use backbone_core::{ContractEvent, Error, Fields, MessageId, OutgoingEvent, Publish};
use backbone_redis::testing::{shared, unique_name, RedisServer};
use backbone_redis::RedisPublisher;
use common::*;
use futures::future::join_all;
use redis::AsyncCommands;

fn tick(n: u64) -> OutgoingEvent {
    outgoing(&TicksEvent::Tick { n })
}

/// One stream entry as written: its message id and its payload hash's key, if any.
struct Entry {
    message_id: MessageId,
    operation: String,
    version: u32,
    payload: Option<String>,
}

/// The entries of `uri`'s stream, oldest first.
async fn entries(url: &str, uri: &str) -> Vec<Entry> {
    let mut raw = raw(url).await;
    let range: redis::streams::StreamRangeReply = raw.xrange_all(keys(uri).stream()).await.unwrap();
    range
        .ids
        .iter()
        .map(|e| Entry {
            message_id: e.get::<String>("message_id").unwrap().parse().unwrap(),
            operation: e.get("operation").unwrap(),
            version: e.get("version").unwrap(),
            payload: e.get("payload"),
        })
        .collect()
}

/// The tick number each tick entry of `uri`'s stream carries, decoded from its payload hash;
/// checks that the hash is the one of the entry's own message id.
async fn ticks_in_stream(url: &str, uri: &str) -> HashMap<MessageId, u64> {
    let ticks: Vec<Entry> = entries(url, uri)
        .await
        .into_iter()
        .filter(|e| e.operation == "tick")
        .collect();
    let mut pipe = redis::pipe();
    for entry in &ticks {
        let payload = entry.payload.as_deref().expect("a tick has a payload");
        assert_eq!(payload, keys(uri).payload(&entry.message_id));
        pipe.hgetall(payload);
    }
    let hashes: Vec<Vec<(String, Vec<u8>)>> = pipe.query_async(&mut raw(url).await).await.unwrap();
    ticks
        .iter()
        .zip(hashes)
        .map(|(entry, hash)| {
            let fields = Fields::from(hash);
            match TicksEvent::decode(&entry.operation, entry.version, &fields).unwrap() {
                TicksEvent::Tick { n } => (entry.message_id, n),
            }
        })
        .collect()
}

/// The tick number of every tick event in `events`, by message id.
fn expected_ticks<'a>(
    events: impl IntoIterator<Item = &'a OutgoingEvent>,
) -> HashMap<MessageId, u64> {
    events
        .into_iter()
        .filter(|e| e.operation == "tick")
        .map(|e| {
            let n = serde_json::from_slice(e.fields.get("n").unwrap()).unwrap();
            (e.message_id, n)
        })
        .collect()
}

/// Asserts every send of `events` returned `Ok` with the event's own id.
fn assert_all_ok(events: &[OutgoingEvent], results: &[Result<MessageId, Error>]) {
    assert_eq!(events.len(), results.len());
    for (event, result) in events.iter().zip(results) {
        match result {
            Ok(id) => assert_eq!(*id, event.message_id),
            Err(e) => panic!("send of {} failed: {e}", event.message_id),
        }
    }
}

/// Sends every event concurrently (from one task: on a current-thread runtime they are all
/// queued before the batching task runs, so they share as few runs as the batch size allows).
async fn send_all(
    publisher: &RedisPublisher,
    events: &[OutgoingEvent],
) -> Vec<Result<MessageId, Error>> {
    join_all(events.iter().map(|e| publisher.publish(e.clone()))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_are_each_written_once() {
    let redis = shared().await.unwrap();
    let uri = unique_name("batch-concurrent");
    let publisher = publisher(redis.url(), &uri).await;
    let events: Vec<OutgoingEvent> = (0..2000).map(tick).collect();

    let mut sends = tokio::task::JoinSet::new();
    for (i, event) in events.iter().enumerate() {
        let (publisher, event) = (publisher.clone(), event.clone());
        sends.spawn(async move { (i, publisher.publish(event).await) });
    }
    let mut results: Vec<Option<Result<MessageId, Error>>> =
        (0..events.len()).map(|_| None).collect();
    while let Some(joined) = sends.join_next().await {
        let (i, result) = joined.unwrap();
        results[i] = Some(result);
    }
    let results: Vec<_> = results.into_iter().map(Option::unwrap).collect();
    assert_all_ok(&events, &results);

    let sent: Vec<MessageId> = events.iter().map(|e| e.message_id).collect();
    assert_exactly_once(&sent, &stream_ids(redis.url(), &uri).await);
    assert_eq!(
        ticks_in_stream(redis.url(), &uri).await,
        expected_ticks(&events)
    );
}

#[tokio::test]
async fn the_same_event_sent_concurrently_is_written_once() {
    let redis = shared().await.unwrap();
    let uri = unique_name("batch-same");
    let publisher = publisher(redis.url(), &uri).await;
    let twin = tick(1_000_000);
    // 200 distinct events with the 20 copies spread among them: some copies share a run of the
    // script, others land in later runs.
    let mut events = Vec::new();
    for n in 0..200 {
        if n % 10 == 5 {
            events.push(twin.clone());
        }
        events.push(tick(n));
    }
    assert_eq!(events.len(), 220);

    let results = send_all(&publisher, &events).await;
    assert_all_ok(&events, &results);

    let mut sent: Vec<MessageId> = events
        .iter()
        .map(|e| e.message_id)
        .filter(|id| *id != twin.message_id)
        .collect();
    sent.push(twin.message_id);
    assert_eq!(sent.len(), 201);
    assert_exactly_once(&sent, &stream_ids(redis.url(), &uri).await);
    assert_eq!(
        ticks_in_stream(redis.url(), &uri).await,
        expected_ticks(&events)
    );
}

#[tokio::test]
async fn events_with_and_without_parameters_share_a_batch() {
    let redis = shared().await.unwrap();
    let uri = unique_name("batch-mixed");
    let publisher = publisher(redis.url(), &uri).await;
    // Ticks (a payload hash each) and units (a sent-record each), interleaved, with a copy of
    // one of each kind sent at the same time.
    let mut events = Vec::new();
    for n in 0..60 {
        events.push(tick(n));
        events.push(outgoing(&KindsEvent::Unit {}));
    }
    assert!(events[1].fields.is_empty() && !events[0].fields.is_empty());
    let mut first_wave = events.clone();
    first_wave.insert(30, events[0].clone());
    first_wave.insert(70, events[1].clone());
    let results = send_all(&publisher, &first_wave).await;
    assert_all_ok(&first_wave, &results);

    // Resend every third event of each kind, together with new events of both kinds.
    let mut second_wave: Vec<OutgoingEvent> = events.iter().step_by(3).cloned().collect();
    let mut fresh = Vec::new();
    for n in 60..80 {
        fresh.push(tick(n));
        fresh.push(outgoing(&KindsEvent::Unit {}));
    }
    for (i, event) in fresh.iter().enumerate() {
        second_wave.insert(2 * i, event.clone());
    }
    let results = send_all(&publisher, &second_wave).await;
    assert_all_ok(&second_wave, &results);
    events.extend(fresh);

    let sent: Vec<MessageId> = events.iter().map(|e| e.message_id).collect();
    assert_exactly_once(&sent, &stream_ids(redis.url(), &uri).await);
    assert_eq!(
        ticks_in_stream(redis.url(), &uri).await,
        expected_ticks(&events)
    );
    // Each unit entry has no payload, and its sent-record holds its stream id.
    let mut raw = raw(redis.url()).await;
    let range: redis::streams::StreamRangeReply =
        raw.xrange_all(keys(&uri).stream()).await.unwrap();
    let mut units = 0;
    for entry in &range.ids {
        if entry.get::<String>("operation").unwrap() == "unit" {
            units += 1;
            assert!(entry.get::<String>("payload").is_none());
            let id: MessageId = entry.get::<String>("message_id").unwrap().parse().unwrap();
            let record: String = raw.get(keys(&uri).sent(&id)).await.unwrap();
            assert_eq!(record, entry.id);
        }
    }
    assert_eq!(units, 80);
}

#[tokio::test]
async fn one_bad_event_fails_alone() {
    let redis = shared().await.unwrap();
    let uri = unique_name("batch-bad");
    let publisher = publisher(redis.url(), &uri).await;
    let bad = tick(999);
    let bad_key = keys(&uri).payload(&bad.message_id);
    let mut raw = raw(redis.url()).await;
    let _: () = raw.set(&bad_key, "not a hash").await.unwrap();

    let mut events: Vec<OutgoingEvent> = (0..50).map(tick).collect();
    events.insert(25, bad.clone());
    let started = Instant::now();
    let mut results = send_all(&publisher, &events).await;
    assert!(started.elapsed() < Duration::from_secs(2), "no retries");

    let failed = results.remove(25);
    events.remove(25);
    let text = failed.unwrap_err().to_string();
    println!("the bad event's error: {text}");
    let context = format!(
        "publish tick (message {}) to {}: ",
        bad.message_id,
        keys(&uri).stream()
    );
    assert!(text.starts_with(&context), "{text}");
    assert!(text.contains(&bad_key), "names the key: {text}");
    assert!(text.contains("WRONGTYPE"), "says what Redis said: {text}");
    assert!(text.ends_with("; the event was not written"), "{text}");
    assert_all_ok(&events, &results);

    let sent: Vec<MessageId> = events.iter().map(|e| e.message_id).collect();
    assert_exactly_once(&sent, &stream_ids(redis.url(), &uri).await);
    assert_eq!(
        ticks_in_stream(redis.url(), &uri).await,
        expected_ticks(&events)
    );
    let kept: String = raw.get(&bad_key).await.unwrap();
    assert_eq!(kept, "not a hash", "the bad event's key is left as it was");
}

/// `number_of_cached_scripts` of `INFO memory`.
async fn cached_scripts(url: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut raw(url).await)
        .await
        .unwrap();
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("number_of_cached_scripts:"))
        .unwrap_or_else(|| panic!("no number_of_cached_scripts in {info}"));
    line.trim().parse().unwrap()
}

async fn flush_scripts(url: &str) {
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw(url).await)
        .await
        .unwrap();
    assert_eq!(cached_scripts(url).await, 0);
}

/// On a server of its own: `SCRIPT FLUSH` empties the cache of every client of the server, so
/// on the shared one it could hit another test's send between its reload and its retry.
#[tokio::test]
async fn a_flushed_script_cache_is_reloaded() {
    let server = tokio::task::spawn_blocking(|| RedisServer::spawn(Default::default()))
        .await
        .unwrap()
        .unwrap();
    let url = server.url();
    let uri = unique_name("batch-flush");
    let publisher = publisher(url, &uri).await;
    let first = publisher.publish(tick(1)).await.unwrap();
    assert!(cached_scripts(url).await >= 1);

    flush_scripts(url).await;
    let second = publisher.publish(tick(2)).await.unwrap();
    assert!(cached_scripts(url).await >= 1, "reloaded");

    // A whole batch finding the script gone is reloaded once and written.
    flush_scripts(url).await;
    let events: Vec<OutgoingEvent> = (3..23).map(tick).collect();
    let results = send_all(&publisher, &events).await;
    assert_all_ok(&events, &results);

    let mut sent = vec![first, second];
    sent.extend(events.iter().map(|e| e.message_id));
    assert_exactly_once(&sent, &stream_ids(url, &uri).await);
    let ticks = ticks_in_stream(url, &uri).await;
    assert_eq!((ticks[&first], ticks[&second]), (1, 2));
    assert_eq!(ticks.len(), 22);
}

/// A plain test: a runtime cannot be dropped inside an async context.
#[test]
fn a_publisher_whose_runtime_is_gone_says_so() {
    let uri = unique_name("batch-runtime-gone");
    let first = tokio::runtime::Runtime::new().unwrap();
    let (url, publisher, before) = first.block_on(async {
        let redis = shared().await.unwrap();
        let publisher = publisher(redis.url(), &uri).await;
        let before = publisher.publish(tick(1)).await.unwrap();
        (redis.url().to_owned(), publisher, before)
    });
    drop(first); // ends the publisher's batching task

    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let event = tick(2);
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(5), publisher.publish(event.clone()))
            .await
            .expect("an answer, not a hang");
        let text = result.unwrap_err().to_string();
        println!(
            "a send after the runtime is gone: {text} (after {:?})",
            started.elapsed()
        );
        let context = format!(
            "publish tick (message {}) to {}: ",
            event.message_id,
            keys(&uri).stream()
        );
        assert!(text.starts_with(&context), "{text}");
        assert!(
            text.contains("the publisher's batching task has stopped"),
            "{text}"
        );
        assert!(text.ends_with("; the event was not written"), "{text}");
        assert_exactly_once(&[before], &stream_ids(&url, &uri).await);
    });
}
