//! `DeadLetters` over real Redis: listing, replaying and purging a group's dead letters. The
//! letters are seeded with raw commands that do what the consumer's dead-letter script does
//! (ack the entry, append its fields and the `dead.*` fields); the script itself is tested in
//! `backbone-redis/src/dead_letters/tests.rs`.

mod common;

use std::time::Duration;

use backbone_core::{Error, MessageId};
use backbone_redis::dead_letters::{
    DEAD_AT, DEAD_CONSUMER, DEAD_DELIVERIES, DEAD_GROUP, DEAD_REASON, DEAD_STREAM_ID,
};
use backbone_redis::testing::{shared, unique_name};
use backbone_redis::{DeadLetters, RedisConsumerBuilder, RedisProducerBuilder};
use common::*;
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use tokio::sync::mpsc;

type Fields = Vec<(String, Vec<u8>)>;

struct Fixture {
    url: String,
    uri: String,
    stream: String,
    raw: MultiplexedConnection,
    dead: DeadLetters,
}

async fn fixture(prefix: &str) -> Fixture {
    let redis = shared().await.unwrap();
    let uri = unique_name(prefix);
    let dead = DeadLetters::connect(redis.url(), None, &uri, "g")
        .await
        .unwrap();
    Fixture {
        url: redis.url().to_owned(),
        stream: format!("bb:{{{uri}}}:events"),
        raw: raw(redis.url()).await,
        uri,
        dead,
    }
}

impl Fixture {
    /// Sends ticks `0..n` and reads them into group `g` (created at 0) as consumer `reader`,
    /// so they are pending; returns their message ids and (stream id, fields).
    async fn pending(&mut self, n: u64) -> (Vec<MessageId>, Vec<(String, Fields)>) {
        let producer = RedisProducerBuilder::new()
            .url(&self.url)
            .uri(&self.uri)
            .build_ticks_producer()
            .await
            .unwrap();
        let ids = send(&producer, 0..n).await;
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg("g")
            .arg("0")
            .query_async(&mut self.raw)
            .await
            .unwrap();
        let reply: Vec<(String, Vec<(String, Fields)>)> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("reader")
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(&mut self.raw)
            .await
            .unwrap();
        let entries = reply.into_iter().next().unwrap().1;
        assert_eq!(entries.len(), n as usize);
        (ids, entries)
    }

    /// What the dead-letter script does: `XACK`, then `XADD` of the fields and the `dead.*`
    /// fields, and a hold on the payload. Returns the dead letter's id.
    async fn seed(&mut self, stream_id: &str, fields: &Fields, reason: &str) -> String {
        let _: i64 = self
            .raw
            .xack(&self.stream, "g", &[stream_id])
            .await
            .unwrap();
        let mut all = fields.clone();
        for (name, value) in [
            (DEAD_STREAM_ID, stream_id),
            (DEAD_GROUP, "g"),
            (DEAD_CONSUMER, "reader"),
            (DEAD_DELIVERIES, "5"),
            (DEAD_REASON, reason),
            (DEAD_AT, "1700000000000"),
        ] {
            all.push((name.to_owned(), value.as_bytes().to_vec()));
        }
        let id = self.raw.xadd(self.dead.key(), "*", &all).await.unwrap();
        let field = |name: &str| fields.iter().find(|(n, _)| n == name);
        if let (Some((_, message_id)), Some(_)) = (field("message_id"), field("payload")) {
            let holds = format!("bb:{{{}}}:holds", self.uri);
            let _: i64 = self.raw.hincr(holds, message_id, 1).await.unwrap();
        }
        id
    }

    async fn stream_len(&mut self) -> u64 {
        self.raw.xlen(&self.stream).await.unwrap()
    }
}

#[tokio::test]
async fn list_pages_oldest_first_and_get_finds_one() {
    let mut f = fixture("dl-list").await;
    let (ids, entries) = f.pending(5).await;
    for (stream_id, fields) in &entries {
        f.seed(stream_id, fields, "boom").await;
    }
    assert_eq!(f.dead.len().await.unwrap(), 5);
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let page = f.dead.list(after.as_deref(), 2).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        pages.push(page.len());
        all.extend(page);
    }
    assert_eq!(pages, [2, 2, 1]);
    let stream_ids: Vec<&str> = all.iter().map(|l| l.stream_id.as_str()).collect();
    let expected: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(stream_ids, expected, "oldest first");
    let message_ids: Vec<MessageId> = all.iter().map(|l| l.message_id.unwrap()).collect();
    assert_eq!(message_ids, ids);
    for (letter, (_, fields)) in all.iter().zip(&entries) {
        assert_eq!(&letter.fields, fields);
        assert_eq!(
            (letter.operation.as_deref(), letter.version),
            (Some("tick"), Some(0))
        );
        assert_eq!(
            (letter.group.as_str(), letter.consumer.as_str()),
            ("g", "reader")
        );
        assert_eq!((letter.deliveries, letter.dead_at), (5, 1_700_000_000_000));
        assert_eq!(letter.reason, "boom");
        assert!(letter.can_replay());
    }
    assert!(f.dead.list(None, 0).await.unwrap().is_empty());
    assert_eq!(
        f.dead.get(&all[3].id).await.unwrap().as_ref(),
        Some(&all[3])
    );
    assert_eq!(f.dead.get("1-0").await.unwrap(), None);
    let pending: redis::streams::StreamPendingReply = f.raw.xpending(&f.stream, "g").await.unwrap();
    assert_eq!(pending.count(), 0);
}

#[tokio::test]
async fn replay_sends_the_event_again_with_the_same_message_id() {
    let mut f = fixture("dl-replay").await;
    let (sent, entries) = f.pending(3).await;
    let (stream_id, fields) = &entries[1];
    let letter = f.seed(stream_id, fields, "tick 1 failed").await;
    for (id, _) in [&entries[0], &entries[2]] {
        let _: i64 = f.raw.xack(&f.stream, "g", &[id]).await.unwrap();
    }

    let new_id = f.dead.replay(&letter).await.unwrap();
    assert_ne!(&new_id, stream_id);
    assert_eq!(f.dead.len().await.unwrap(), 0);
    assert_eq!(f.dead.get(&letter).await.unwrap(), None);
    assert_eq!(f.stream_len().await, 4);

    // The group that gave up on it gets it again, and only it: the rest was handled.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let same_group = RedisConsumerBuilder::new()
        .url(&f.url)
        .uri(&f.uri)
        .group("g")
        .name("c")
        .block(Duration::from_millis(200))
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let seen = collect(&mut rx, 1, WAIT).await;
    assert_eq!((seen[0].n, seen[0].meta.message_id), (1, sent[1]));
    assert_eq!(seen[0].meta.stream_id, new_id);
    assert_quiet(&mut rx, Duration::from_millis(300)).await;
    same_group.shutdown().await.unwrap();

    // A replayed entry is an entry like any other: every group receives it.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let other_group = RedisConsumerBuilder::new()
        .url(&f.url)
        .uri(&f.uri)
        .group("late")
        .block(Duration::from_millis(200))
        .subscribe_ticks_consumer(TickRecorder::new("late", tx))
        .await
        .unwrap();
    let seen = collect(&mut rx, 4, WAIT).await;
    assert_eq!(ids(&seen), [sent[0], sent[1], sent[2], sent[1]]);
    other_group.shutdown().await.unwrap();
}

#[tokio::test]
async fn replay_of_what_cannot_be_replayed_names_the_dead_letter() {
    let mut f = fixture("dl-unknown").await;
    let err = f.dead.replay("1-0").await.unwrap_err();
    assert!(matches!(err, Error::Channel { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("dead letter 1-0") && text.contains("no such dead letter"),
        "{text}"
    );

    let (_, entries) = f.pending(1).await;
    let letter = f.seed(&entries[0].0, &Vec::new(), "trimmed").await;
    let err = f.dead.replay(&letter).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("dead letter {letter}")) && err.contains("cannot be replayed"),
        "{err}"
    );
    assert_eq!(f.dead.len().await.unwrap(), 1, "nothing was removed");
    assert_eq!(f.stream_len().await, 1, "nothing was added");
    let err = f.dead.replay("not-an-id").await.unwrap_err().to_string();
    assert!(err.contains("not-an-id"), "{err}");
}

#[tokio::test]
async fn replay_all_replays_every_letter_it_can_across_pages() {
    let mut f = fixture("dl-replay-all").await;
    let (_, entries) = f.pending(1).await;
    let empty = f.seed(&entries[0].0, &Vec::new(), "trimmed").await;
    // More than one page (100) of letters, with fields a stream entry could hold.
    let mut pipe = redis::pipe();
    for i in 0..205 {
        pipe.cmd("XADD")
            .arg(f.dead.key())
            .arg("*")
            .arg("n")
            .arg(i)
            .arg(DEAD_STREAM_ID)
            .arg(format!("{}-0", i + 1))
            .arg(DEAD_GROUP)
            .arg("g")
            .arg(DEAD_CONSUMER)
            .arg("c")
            .arg(DEAD_DELIVERIES)
            .arg(1)
            .arg(DEAD_REASON)
            .arg("r")
            .arg(DEAD_AT)
            .arg(1)
            .ignore();
    }
    let () = pipe.query_async(&mut f.raw).await.unwrap();
    assert_eq!(f.dead.len().await.unwrap(), 206);

    assert_eq!(f.dead.replay_all().await.unwrap(), 205);
    let left = f.dead.list(None, 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, empty, "the one without fields stays");
    assert_eq!(f.stream_len().await, 206);
    let replayed: Vec<(String, Vec<(String, String)>)> =
        f.raw.xrange(&f.stream, "-", "+").await.unwrap();
    let fields: Vec<Vec<(String, String)>> =
        replayed[1..].iter().map(|(_, fs)| fs.clone()).collect();
    let expected: Vec<Vec<(String, String)>> = (0..205)
        .map(|i| {
            let marker = ("replayed".to_owned(), "1".to_owned());
            vec![("n".to_owned(), i.to_string()), marker]
        })
        .collect();
    assert_eq!(
        fields, expected,
        "in order, without the dead.* fields, marked replayed"
    );
    assert_eq!(f.dead.replay_all().await.unwrap(), 0);
}

#[tokio::test]
async fn purge_one_and_purge_all() {
    let mut f = fixture("dl-purge").await;
    assert_eq!(f.dead.purge_all().await.unwrap(), 0, "no dead letters yet");
    let (_, entries) = f.pending(3).await;
    let mut letters = Vec::new();
    for (stream_id, fields) in &entries {
        letters.push(f.seed(stream_id, fields, "x").await);
    }
    assert!(f.dead.purge(&letters[0]).await.unwrap());
    assert!(!f.dead.purge(&letters[0]).await.unwrap());
    assert_eq!(f.dead.get(&letters[0]).await.unwrap(), None);
    assert_eq!(f.dead.len().await.unwrap(), 2);
    assert_eq!(f.dead.purge_all().await.unwrap(), 2);
    assert!(f.dead.is_empty().await.unwrap());
    assert_eq!(f.stream_len().await, 3, "the stream is untouched");
    // The entries are still in the stream: their payloads stay, and no hold is left.
    let hashes: Vec<String> = f
        .raw
        .keys(format!("bb:{{{}}}:payload:*", f.uri))
        .await
        .unwrap();
    assert_eq!(hashes.len(), 3);
    let holds: u64 = f.raw.hlen(format!("bb:{{{}}}:holds", f.uri)).await.unwrap();
    assert_eq!(holds, 0);
}

#[tokio::test]
async fn bad_names_are_config_errors() {
    let url = "redis://127.0.0.1:1/"; // names are checked before connecting
    let cases = [
        (
            None,
            "has space",
            "g",
            "uri \"has space\" contains whitespace at byte 3",
        ),
        (
            Some("a:b"),
            "x",
            "g",
            "environment \"a:b\" contains `:` at byte 1",
        ),
        (None, "x", "{g}", "group \"{g}\" contains `{` at byte 0"),
        (None, "x", "", "group must not be empty"),
        (None, "", "g", "uri must not be empty"),
    ];
    for (environment, uri, group, message) in cases {
        let err = DeadLetters::connect(url, environment, uri, group)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert_eq!(err.to_string(), format!("invalid configuration: {message}"));
    }
    let err = DeadLetters::connect("http://nope", None, "x", "g")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}
