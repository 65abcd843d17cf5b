//! The dead-letter script over real Redis: events written by a producer, read into a group with
//! a raw `XREADGROUP` (so they are pending), then dead-lettered.

use backbone_core::{events_contract, metadata::now_millis, MessageId, StreamAddress};
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;

use super::*;
use crate::entry::{parse_read_reply, RawEntry};
use crate::testing::{shared, unique_name};
use crate::RedisProducerBuilder;

type Fields = Vec<(String, Vec<u8>)>;

#[events_contract]
pub trait Ticks {
    async fn tick(&self, n: u64);
}

struct Fixture {
    keys: StreamKeys,
    uri: String,
    url: String,
    conn: Connection,
    raw: MultiplexedConnection,
    producer: TicksProducer,
}

async fn fixture(prefix: &str) -> Fixture {
    let redis = shared().await.unwrap();
    let uri = unique_name(prefix);
    let keys = StreamKeys::new(&StreamAddress::new(None, &uri).unwrap());
    let client = redis::Client::open(redis.url()).unwrap();
    let raw = client.get_multiplexed_async_connection().await.unwrap();
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_ticks_producer()
        .await
        .unwrap();
    Fixture {
        conn: RedisSettings::new()
            .url(redis.url())
            .connect("test", &[])
            .await
            .unwrap(),
        url: redis.url().to_owned(),
        keys,
        uri,
        raw,
        producer,
    }
}

impl Fixture {
    /// Sends ticks `0..n`, reads them into group `g` as consumer `c`: all pending.
    async fn pending(&mut self, n: u64) -> (Vec<MessageId>, Vec<RawEntry>) {
        let mut ids = Vec::new();
        for i in 0..n {
            ids.push(self.producer.tick(i).await.unwrap());
        }
        crate::consumer::create_group(&mut self.conn, self.keys.stream(), "g")
            .await
            .unwrap();
        (ids, self.read(">").await)
    }

    async fn read(&mut self, from: &str) -> Vec<RawEntry> {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("STREAMS")
            .arg(self.keys.stream())
            .arg(from)
            .query_async(&mut self.raw)
            .await
            .unwrap();
        parse_read_reply(reply).unwrap()
    }

    async fn pending_count(&mut self) -> usize {
        let reply: redis::streams::StreamPendingReply =
            self.raw.xpending(self.keys.stream(), "g").await.unwrap();
        reply.count()
    }

    async fn dead(&mut self, entry: &RawEntry, reason: &str) -> Result<bool, Error> {
        let letter = DeadLetter {
            entry_id: &entry.id,
            original: entry.fields.as_deref(),
            consumer: "c",
            deliveries: 3,
            reason,
        };
        dead_letter(&mut self.conn, &self.keys, "g", &letter).await
    }

    async fn letters(&self) -> DeadLetters {
        DeadLetters::connect(&self.url, None, &self.uri, "g")
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn acks_and_dead_letters_in_one_step_keeping_every_field() {
    let mut f = fixture("dl-unit").await;
    let (ids, entries) = f.pending(2).await;
    assert_eq!(f.pending_count().await, 2);
    let before = now_millis();
    assert!(f.dead(&entries[1], "tick 1 fails").await.unwrap());
    let after = now_millis();
    assert_eq!(f.pending_count().await, 1, "only tick 0 is still pending");

    let raw: Vec<(String, Fields)> = redis::cmd("XRANGE")
        .arg(f.keys.dead_letters("g"))
        .arg("-")
        .arg("+")
        .query_async(&mut f.raw)
        .await
        .unwrap();
    assert_eq!(raw.len(), 1);
    let original = entries[1].fields.clone().unwrap();
    let (head, tail) = raw[0].1.split_at(original.len());
    assert_eq!(head, original, "the original fields, verbatim and in order");
    let names: Vec<&str> = tail.iter().map(|(n, _)| n.as_str()).collect();
    let expected = [
        DEAD_STREAM_ID,
        DEAD_GROUP,
        DEAD_CONSUMER,
        DEAD_DELIVERIES,
        DEAD_REASON,
    ];
    assert_eq!(names, [&expected[..], &[DEAD_AT]].concat());
    let values: Vec<&[u8]> = tail[..5].iter().map(|(_, v)| v.as_slice()).collect();
    let stream_id = entries[1].id.as_bytes();
    assert_eq!(values, [stream_id, b"g", b"c", b"3", b"tick 1 fails"]);

    let letter = f.letters().await.get(&raw[0].0).await.unwrap().unwrap();
    assert_eq!(letter.stream_id, entries[1].id);
    assert_eq!(letter.message_id, Some(ids[1]));
    assert_eq!(letter.operation.as_deref(), Some("tick"));
    assert_eq!(letter.version, Some(0));
    assert_eq!(
        (letter.group.as_str(), letter.consumer.as_str()),
        ("g", "c")
    );
    assert_eq!(letter.deliveries, 3);
    assert_eq!(letter.reason, "tick 1 fails");
    assert!(
        before.saturating_sub(1000) <= letter.dead_at && letter.dead_at <= after + 1000,
        "{before} <= {} <= {after}",
        letter.dead_at
    );
    assert_eq!(letter.fields, original);
    let payload: Vec<String> = f.raw.hkeys(f.keys.payload(&ids[1])).await.unwrap();
    assert_eq!(payload, vec!["n"], "the payload hash is left in place");
}

#[tokio::test]
async fn an_entry_no_longer_pending_writes_nothing() {
    let mut f = fixture("dl-acked").await;
    let (_, entries) = f.pending(1).await;
    let _: i64 = f
        .raw
        .xack(f.keys.stream(), "g", &[&entries[0].id])
        .await
        .unwrap();
    assert!(!f.dead(&entries[0], "late").await.unwrap());
    assert!(f.dead(&entries[0], "later").await.is_ok_and(|b| !b));
    let exists: bool = f.raw.exists(f.keys.dead_letters("g")).await.unwrap();
    assert!(!exists, "no dead-letter stream was created");
}

#[tokio::test]
async fn a_deleted_entry_is_recorded_with_what_is_known() {
    let mut f = fixture("dl-deleted").await;
    let (_, entries) = f.pending(1).await;
    let _: i64 = f
        .raw
        .xdel(f.keys.stream(), &[&entries[0].id])
        .await
        .unwrap();
    let again = f.read("0").await;
    assert_eq!(again.len(), 1);
    assert!(again[0].fields.is_none(), "the PEL keeps the deleted id");
    assert!(f.dead(&again[0], "deleted or trimmed").await.unwrap());
    assert_eq!(f.pending_count().await, 0);

    let dead = f.letters().await;
    let letters = dead.list(None, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.stream_id, entries[0].id);
    assert_eq!(letter.reason, "deleted or trimmed");
    assert_eq!(
        (letter.message_id, letter.operation.as_deref()),
        (None, None)
    );
    assert!(letter.fields.is_empty() && !letter.can_replay());
    let err = dead.replay(&letter.id).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("dead letter {} ", letter.id)) && err.contains("cannot be replayed"),
        "{err}"
    );
    assert_eq!(dead.len().await.unwrap(), 1, "it stays, for purging");
}

#[tokio::test]
async fn checks_come_before_the_first_write() {
    let mut f = fixture("dl-checks").await;
    let (_, entries) = f.pending(1).await;
    let dead_key = f.keys.dead_letters("g");
    let _: () = f.raw.set(&dead_key, "not a stream").await.unwrap();
    let err = f.dead(&entries[0], "x").await.unwrap_err().to_string();
    assert!(err.contains("holds a string, not a stream"), "{err}");
    assert_eq!(f.pending_count().await, 1, "not acknowledged");

    let letter = DeadLetter {
        entry_id: &entries[0].id,
        original: entries[0].fields.as_deref(),
        consumer: "c",
        deliveries: 1,
        reason: "x",
    };
    let err = dead_letter(&mut f.conn, &f.keys, "nogroup", &letter)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("NOGROUP"), "{err}");
    let exists: bool = f.raw.exists(f.keys.dead_letters("nogroup")).await.unwrap();
    assert!(!exists);
}

#[tokio::test]
async fn a_malformed_dead_letter_is_named_as_a_dead_letter() {
    let mut f = fixture("dl-malformed").await;
    let dead_key = f.keys.dead_letters("g");
    let id: String = f
        .raw
        .xadd(
            &dead_key,
            "*",
            &[
                (MESSAGE_ID, "x"),
                (DEAD_STREAM_ID, "1-0"),
                (DEAD_GROUP, "g"),
                (DEAD_CONSUMER, "c"),
                (DEAD_DELIVERIES, "many"),
                (DEAD_REASON, "r"),
                (DEAD_AT, "1"),
            ],
        )
        .await
        .unwrap();
    let dead = DeadLetters::connect(&f.url, None, &f.uri, "g")
        .await
        .unwrap();
    let err = dead.get(&id).await.unwrap_err();
    assert!(matches!(err, Error::MalformedDeadLetter { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "malformed dead letter {id} in {dead_key}: field `dead.deliveries` = \"many\": \
             invalid digit found in string"
        )
    );
    assert!(!err.is_bad_event(), "not an event of the stream");
}
