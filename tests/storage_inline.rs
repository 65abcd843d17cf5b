//! Inline storage over real Redis: the parameters as `param.<name>` fields of the entry, no
//! payload hash. Every parameter kind round-trips through the consumer and the event store; a
//! stream mixing both layouts is read whole; a batch sent twice is written once; an entry with
//! both layouts is dead-lettered; trimming and `max_len` handle inline entries; an inline dead
//! letter replays with its parameters. (The batch-by-batch ordering of the sequence numbers is
//! tested next to the publisher, `producer::batch::redis_tests`.)

mod common;

use std::time::Duration;

use backbone_core::storage::Storage;
use backbone_core::store::{AppendOptions, ExpectedVersion};
use backbone_core::{
    async_trait, events_contract, ConsumerContext, ContractEvent, HandlerResult, Metadata,
    OutgoingEvent, Publish,
};
use backbone_redis::store::EventStoreBuilder;
use backbone_redis::testing::{shared, unique_name};
use backbone_redis::{
    DeadLetters, RedisConsumerBuilder, RedisProducerBuilder, StreamAdmin, TrimReport,
};
use common::*;
use futures::future::join_all;
use redis::AsyncCommands;
use tokio::sync::mpsc;

/// Both layouts in one contract.
#[events_contract]
pub trait Mixed {
    async fn hashed(&self, n: u64);
    #[event(storage = "inline")]
    async fn inlined(&self, n: u64, label: String);
    #[event(storage = "inline")]
    async fn bare(&self);
}

#[derive(Clone)]
struct MixedRecorder(mpsc::UnboundedSender<(Metadata, MixedEvent)>);

#[async_trait]
impl MixedConsumer for MixedRecorder {
    async fn hashed(&self, ctx: &ConsumerContext, n: u64) -> HandlerResult {
        self.0
            .send((ctx.metadata().clone(), MixedEvent::Hashed { n }))?;
        Ok(())
    }
    async fn inlined(&self, ctx: &ConsumerContext, n: u64, label: String) -> HandlerResult {
        let event = MixedEvent::Inlined { n, label };
        self.0.send((ctx.metadata().clone(), event))?;
        Ok(())
    }
    async fn bare(&self, ctx: &ConsumerContext) -> HandlerResult {
        self.0.send((ctx.metadata().clone(), MixedEvent::Bare {}))?;
        Ok(())
    }
}

/// A stream's entries as written: (stream id, fields as text).
type Entries = Vec<(String, Vec<(String, String)>)>;
/// A stream's entries as read: (stream id, fields).
type RawEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;

async fn entries(url: &str, stream: &str) -> Entries {
    let reply: RawEntries = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut raw(url).await)
        .await
        .unwrap();
    reply
        .into_iter()
        .map(|(id, fields)| {
            let fields = fields
                .into_iter()
                .map(|(n, v)| (n, String::from_utf8(v).unwrap()))
                .collect();
            (id, fields)
        })
        .collect()
}

/// Asserts that every entry of `entries` is inline: no `payload`, and its `param.*` fields are
/// the encoded parameters of the event at its place in `sent`.
fn assert_inline<E: ContractEvent>(entries: &Entries, sent: &[E]) {
    assert_eq!(entries.len(), sent.len());
    for ((id, fields), event) in entries.iter().zip(sent) {
        assert!(
            fields.iter().all(|(n, _)| n != "payload"),
            "{id} names a payload"
        );
        let params: Vec<(String, String)> = fields
            .iter()
            .filter_map(|(n, v)| Some((n.strip_prefix("param.")?.to_owned(), v.clone())))
            .collect();
        let encoded: Vec<(String, String)> = event
            .encode()
            .unwrap()
            .iter()
            .map(|(n, v)| (n.to_owned(), String::from_utf8(v.to_vec()).unwrap()))
            .collect();
        assert_eq!(params, encoded, "the param.* fields of {id}");
    }
}

/// Asserts that `uri` has no payload hash and no sent-record.
async fn assert_no_side_keys(url: &str, uri: &str) {
    let mut raw = raw(url).await;
    for kind in ["payload", "sent"] {
        let found: Vec<String> = raw.keys(format!("bb:{{{uri}}}:{kind}:*")).await.unwrap();
        assert!(found.is_empty(), "{kind} keys: {found:?}");
    }
}

#[tokio::test]
async fn every_parameter_kind_round_trips_inline_through_a_consumer() {
    let redis = shared().await.unwrap();
    let uri = unique_name("inline-kinds");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_inline_kinds_producer()
        .await
        .unwrap();
    let sent = kinds_cases();
    let inline: Vec<InlineKindsEvent> = sent.iter().map(convert).collect();
    assert!(inline
        .iter()
        .all(|e| e.operation().storage == Storage::Inline));
    let mut ids = Vec::new();
    for event in &inline {
        ids.push(producer.producer().send(event).await.unwrap());
    }
    assert_inline(&entries(redis.url(), keys(&uri).stream()).await, &inline);
    assert_no_side_keys(redis.url(), &uri).await;

    // A consumer of the hash-layout contract reads them: it needs no configuring.
    assert_kinds_consumed(redis.url(), &uri, &ids, &sent).await;
}

#[tokio::test]
async fn every_parameter_kind_round_trips_inline_through_the_event_store() {
    let redis = shared().await.unwrap();
    let uri = unique_name("inline-store");
    let store = EventStoreBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build::<InlineKindsEvent>()
        .await
        .unwrap();
    let sent = kinds_cases();
    let inline: Vec<InlineKindsEvent> = sent.iter().map(convert).collect();
    let options = AppendOptions::default();
    let result = store
        .append("agg-1", ExpectedVersion::NoStream, &inline, options)
        .await
        .unwrap();
    assert_eq!(result.version, sent.len() as u64);

    let page = store.read("agg-1", 1, 100).await.unwrap();
    let between = store.read_between(0, u64::MAX, None, 100).await.unwrap();
    for events in [&page.events, &between.events] {
        assert_eq!(events.len(), sent.len());
        for (stored, expected) in events.iter().zip(&sent) {
            let back: KindsEvent = convert(&stored.event);
            assert_eq!(format!("{back:?}"), format!("{expected:?}"));
        }
    }
    // Both entries of every event carry its parameters; there is no payload hash.
    let keys = keys(&uri);
    assert_inline(&entries(redis.url(), keys.stream()).await, &inline);
    assert_inline(
        &entries(redis.url(), &keys.aggregate("agg-1")).await,
        &inline,
    );
    assert_no_side_keys(redis.url(), &uri).await;
}

#[tokio::test]
async fn a_stream_mixing_both_layouts_is_read_whole() {
    let redis = shared().await.unwrap();
    let uri = unique_name("inline-mixed");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_mixed_producer()
        .await
        .unwrap();
    let sent = vec![
        MixedEvent::Hashed { n: 1 },
        MixedEvent::Inlined {
            n: 2,
            label: "two \"2\"".into(),
        },
        MixedEvent::Bare {},
        MixedEvent::Hashed { n: 3 },
        MixedEvent::Inlined {
            n: 4,
            label: String::new(),
        },
    ];
    let mut ids = Vec::new();
    for event in &sent {
        ids.push(producer.producer().send(event).await.unwrap());
    }
    let keys = keys(&uri);
    let written = entries(redis.url(), keys.stream()).await;
    let field = |i: usize, name: &str| {
        let (_, fields) = &written[i];
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field(0, "payload"), Some(keys.payload(&ids[0])));
    assert_eq!(field(1, "payload"), None);
    assert_eq!(field(1, "param.n").as_deref(), Some("2"));
    assert_eq!(field(1, "param.label").as_deref(), Some(r#""two \"2\"""#));
    assert_eq!((field(2, "payload"), field(2, "param.n")), (None, None));
    let mut raw = raw(redis.url()).await;
    let sent_records: Vec<String> = raw.keys(format!("bb:{{{uri}}}:sent:*")).await.unwrap();
    assert!(
        sent_records.is_empty(),
        "an inline event needs no sent-record"
    );

    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .max_messages(sent.len() as u64)
        .subscribe_mixed_consumer(MixedRecorder(tx))
        .await
        .unwrap();
    let got = collect(&mut rx, sent.len(), WAIT).await;
    lifetime.completion().await.unwrap();
    let got_ids: Vec<_> = got.iter().map(|(m, _)| m.message_id).collect();
    assert_eq!(got_ids, ids);
    let got: Vec<String> = got.iter().map(|(_, e)| format!("{e:?}")).collect();
    let sent: Vec<String> = sent.iter().map(|e| format!("{e:?}")).collect();
    assert_eq!(got, sent);
}

/// Tick `n` as an inline event (`Ticks` is a hash-layout contract; the publisher writes what
/// the event says).
fn inline_tick(n: u64) -> OutgoingEvent {
    let mut event = outgoing(&TicksEvent::Tick { n });
    event.storage = Storage::Inline;
    event
}

#[tokio::test]
async fn the_same_batch_published_twice_is_written_once() {
    let redis = shared().await.unwrap();
    let uri = unique_name("inline-twice");
    let publisher = publisher(redis.url(), &uri).await;
    let events: Vec<OutgoingEvent> = (0..100).map(inline_tick).collect();
    for round in 0..2 {
        let results = join_all(events.iter().map(|e| publisher.publish(e.clone()))).await;
        for (event, result) in events.iter().zip(results) {
            assert_eq!(result.unwrap(), event.message_id, "round {round}");
        }
    }
    let sent: Vec<_> = events.iter().map(|e| e.message_id).collect();
    assert_exactly_once(&sent, &stream_ids(redis.url(), &uri).await);
    // One record for the publisher, no marker per event.
    let record_key = keys(&uri).sequence(publisher.producer_id());
    let mut raw = raw(redis.url()).await;
    let record: String = raw.get(&record_key).await.unwrap();
    assert_eq!(record, "100");
    let ttl: i64 = raw.pttl(&record_key).await.unwrap();
    assert!(0 < ttl && ttl <= 600_000, "{ttl}");
    assert_no_side_keys(redis.url(), &uri).await;
    // Another publisher numbers its own events from 1.
    let other = common::publisher(redis.url(), &uri).await;
    assert_ne!(other.producer_id(), publisher.producer_id());
    other.publish(inline_tick(1000)).await.unwrap();
    let other_record: String = raw
        .get(keys(&uri).sequence(other.producer_id()))
        .await
        .unwrap();
    assert_eq!(other_record, "1");
    assert_eq!(stream_ids(redis.url(), &uri).await.len(), 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_inline_sends_in_overlapping_batches_are_each_written_once() {
    let redis = shared().await.unwrap();
    let uri = unique_name("inline-concurrent");
    let publisher = publisher(redis.url(), &uri).await;
    let events: Vec<OutgoingEvent> = (0..2000).map(inline_tick).collect();
    let mut sends = tokio::task::JoinSet::new();
    for event in events.iter().cloned() {
        let publisher = publisher.clone();
        sends.spawn(async move { (event.message_id, publisher.publish(event).await) });
    }
    while let Some(joined) = sends.join_next().await {
        let (id, result) = joined.unwrap();
        assert_eq!(result.unwrap(), id);
    }
    let sent: Vec<_> = events.iter().map(|e| e.message_id).collect();
    assert_exactly_once(&sent, &stream_ids(redis.url(), &uri).await);
}

#[tokio::test]
async fn an_entry_with_payload_and_param_fields_is_dead_lettered() {
    let redis = shared().await.unwrap();
    let uri = unique_name("inline-both");
    let keys = keys(&uri);
    let mut raw = raw(redis.url()).await;
    let good = producer(redis.url(), &uri).await.tick(1).await.unwrap();
    let bad = backbone_core::MessageId::new();
    let _: () = raw.hset(keys.payload(&bad), "n", "2").await.unwrap();
    let fields = [
        ("message_id", bad.to_string()),
        ("operation", "tick".into()),
        ("version", "0".into()),
        ("produced_at", "1".into()),
        ("payload", keys.payload(&bad)),
        ("param.n", "2".into()),
    ];
    let _: String = raw.xadd(keys.stream(), "*", &fields).await.unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let dead = DeadLetters::connect(redis.url(), None, &uri, "default")
        .await
        .unwrap();
    wait_dead_letters(&dead, 1).await;
    let seen = collect(&mut rx, 1, WAIT).await;
    lifetime.shutdown().await.unwrap();
    assert_eq!(ids(&seen), [good]);
    let letters = dead.list(None, 10).await.unwrap();
    let letter = &letters[0];
    assert_eq!(letter.message_id, Some(bad));
    assert!(
        letter
            .reason
            .contains("field `param.n` beside field `payload`"),
        "{}",
        letter.reason
    );
}

#[tokio::test]
async fn trimming_removes_inline_entries_with_nothing_else_to_delete() {
    let redis = shared().await.unwrap();
    let uri = unique_name("inline-trim");
    let publisher = publisher(redis.url(), &uri).await;
    for n in 0..10 {
        publisher.publish(inline_tick(n)).await.unwrap();
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .max_messages(10)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    collect(&mut rx, 10, WAIT).await;
    lifetime.completion().await.unwrap();
    let admin = StreamAdmin::connect(redis.url(), None, &uri).await.unwrap();
    let report = admin.trim(0).await.unwrap();
    let expected = TrimReport {
        entries: 10,
        payloads: 0,
        objects: 0,
        held_back_by: None,
    };
    assert_eq!(report, expected);
    assert_eq!(admin.len().await.unwrap(), 0);

    // A producer with max_len and a payload TTL sends inline events without an error, and its
    // background trims keep the stream short.
    let uri = unique_name("inline-max-len");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .max_len(10)
        .payload_ttl(Duration::from_secs(60))
        .build_publisher()
        .await
        .unwrap();
    for n in 0..100 {
        producer.publish(inline_tick(n)).await.unwrap();
    }
    let admin = StreamAdmin::connect(redis.url(), None, &uri).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while admin.len().await.unwrap() > 20 {
        assert!(tokio::time::Instant::now() < deadline, "not trimmed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_no_side_keys(redis.url(), &uri).await;
}

#[tokio::test]
async fn an_inline_dead_letter_replays_with_its_parameters() {
    let redis = shared().await.unwrap();
    let uri = unique_name("inline-replay");
    let publisher = publisher(redis.url(), &uri).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(publisher.publish(inline_tick(n)).await.unwrap());
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut failing = TickRecorder::new("failing", tx);
    failing.fail = |n| n == 1;
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .retry(quick_retry(1))
        .subscribe_ticks_consumer(failing)
        .await
        .unwrap();
    let dead = DeadLetters::connect(redis.url(), None, &uri, "default")
        .await
        .unwrap();
    wait_dead_letters(&dead, 1).await;
    collect(&mut rx, 2, WAIT).await;
    lifetime.shutdown().await.unwrap();
    let letters = dead.list(None, 10).await.unwrap();
    let letter = &letters[0];
    assert_eq!(letter.message_id, Some(ids[1]));
    assert!(letter
        .fields
        .iter()
        .any(|(n, v)| n == "param.n" && v == b"1"));

    dead.replay(&letter.id).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .max_messages(1)
        .subscribe_ticks_consumer(TickRecorder::new("after", tx))
        .await
        .unwrap();
    let seen = collect(&mut rx, 1, WAIT).await;
    lifetime.completion().await.unwrap();
    assert_eq!((seen[0].n, seen[0].meta.message_id), (1, ids[1]));
    assert_eq!(dead.len().await.unwrap(), 0);
}
