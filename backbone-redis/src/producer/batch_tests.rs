//! The inline events' sequence numbers over real Redis, batch by batch: batches that overlap
//! and land out of order, and retries that come after later batches, write every event
//! exactly once.

use std::time::Duration;

use backbone_core::storage::Storage;
use backbone_core::{Fields, MessageId, OutgoingEvent, StreamAddress};
use redis::AsyncCommands;
use tokio::sync::oneshot;

use super::*;
use crate::settings::RedisSettings;
use crate::testing::{shared, unique_name};

struct Harness {
    task: Task,
    keys: StreamKeys,
    url: String,
}

async fn harness(name: &str) -> Harness {
    let redis = shared().await.unwrap();
    let address = StreamAddress::new(None, &unique_name(name)).unwrap();
    let keys = StreamKeys::new(&address);
    let connection = RedisSettings::new()
        .url(redis.url())
        .open_connection("test")
        .await
        .unwrap();
    let task = Task {
        payload_prefix: keys.payload_prefix(),
        sent_prefix: keys.sent_prefix(),
        sequence_key: keys.sequence(&MessageId::new().to_string()),
        keys: keys.clone(),
        connection,
        payload_ttl_ms: 0,
        durability: None,
        sequencer: Arc::new(Mutex::new(Sequencer::default())),
    };
    Harness {
        task,
        keys,
        url: redis.url().to_owned(),
    }
}

fn inline(n: u64) -> Arc<OutgoingEvent> {
    let mut fields = Fields::new();
    fields.push("n", n.to_string().into_bytes());
    let mut event = OutgoingEvent::new("tick", 0, fields);
    event.storage = Storage::Inline;
    Arc::new(event)
}

type Answer = oneshot::Receiver<Result<bool, Failure>>;

impl Harness {
    /// A batch of `events`, as the batching task forms it: numbered now.
    fn prepare(&self, events: &[Arc<OutgoingEvent>]) -> (Prepared, Vec<Answer>) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let (submissions, answers) = events
            .iter()
            .map(|event| {
                let (reply, answer) = oneshot::channel();
                let submission = Submission {
                    event: event.clone(),
                    deadline,
                    reply,
                };
                (submission, answer)
            })
            .unzip();
        (self.task.prepare(submissions).unwrap(), answers)
    }

    /// Writes a prepared batch; its answers: `Some(true)` written now, `Some(false)` written
    /// before, `None` refused for a retry (out of order).
    async fn write(&self, prepared: Prepared, answers: Vec<Answer>) -> Vec<Option<bool>> {
        self.task.write(prepared).await;
        let mut out = Vec::new();
        for answer in answers {
            out.push(match answer.await.unwrap() {
                Ok(written) => Some(written),
                Err(failure) => {
                    assert!(failure.transient, "{}", failure.error);
                    assert_eq!(failure.outcome, Outcome::NotWritten);
                    assert!(
                        failure.error.contains("is the next to write"),
                        "{}",
                        failure.error
                    );
                    None
                }
            });
        }
        out
    }

    /// The `n` of every entry of the stream, oldest first.
    async fn stream(&self) -> Vec<u64> {
        let mut raw = redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let range: redis::streams::StreamRangeReply =
            raw.xrange_all(self.keys.stream()).await.unwrap();
        range
            .ids
            .iter()
            .map(|e| {
                assert!(e.get::<String>("payload").is_none());
                e.get::<String>("param.n").unwrap().parse().unwrap()
            })
            .collect()
    }
}

#[tokio::test]
async fn a_batch_retried_after_a_later_one_is_neither_lost_nor_duplicated() {
    let h = harness("seq-order").await;
    let a: Vec<_> = (1..=3).map(inline).collect();
    let b: Vec<_> = (4..=5).map(inline).collect();
    let (first, first_answers) = h.prepare(&a);
    let (second, second_answers) = h.prepare(&b);
    // The later batch lands first (the earlier one failed on its way): refused, not written.
    assert_eq!(
        h.write(second, second_answers).await,
        [None, None],
        "out of order"
    );
    assert!(h.stream().await.is_empty());
    // The earlier batch's retry: written, though a later batch ran before it.
    let (retry, answers) = h.prepare(&a);
    assert_eq!(h.write(retry, answers).await, [Some(true); 3]);
    // The later batch's retry: written now.
    let (retry, answers) = h.prepare(&b);
    assert_eq!(h.write(retry, answers).await, [Some(true); 2]);
    // The first attempt of the earlier batch arriving late (it was only delayed), and another
    // retry of each: written before, nothing new.
    assert_eq!(h.write(first, first_answers).await, [Some(false); 3]);
    let mut again = a.clone();
    again.extend(b.iter().cloned());
    let (retry, answers) = h.prepare(&again);
    assert_eq!(h.write(retry, answers).await, [Some(false); 5]);
    assert_eq!(h.stream().await, [1, 2, 3, 4, 5]);

    // A batch that did land but whose answer was lost, retried after a later batch landed:
    // written before, not written twice.
    let c = [inline(6)];
    let d = [inline(7)];
    let (lost, lost_answers) = h.prepare(&c);
    let (later, later_answers) = h.prepare(&d);
    assert_eq!(h.write(lost, lost_answers).await, [Some(true)]);
    assert_eq!(h.write(later, later_answers).await, [Some(true)]);
    let (retry, answers) = h.prepare(&c);
    assert_eq!(h.write(retry, answers).await, [Some(false)]);
    assert_eq!(h.stream().await, [1, 2, 3, 4, 5, 6, 7]);
    let record: String = redis::Client::open(h.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
        .get(&h.task.sequence_key)
        .await
        .unwrap();
    assert_eq!(record, "7");
}

#[tokio::test]
async fn retried_events_mixed_with_new_ones_go_in_order_and_copies_once() {
    let h = harness("seq-mixed").await;
    let a: Vec<_> = (1..=2).map(inline).collect();
    let (lost, _) = h.prepare(&a); // never sent
    drop(lost);
    // New events with a retry of the first batch and a copy of one of them, in one batch:
    // the script gets them in sequence order and writes each once.
    let mut batch: Vec<_> = (3..=4).map(inline).collect();
    batch.extend(a.iter().cloned());
    batch.push(a[0].clone());
    let (prepared, answers) = h.prepare(&batch);
    let written = h.write(prepared, answers).await;
    assert_eq!(written.iter().filter(|w| **w == Some(true)).count(), 4);
    assert_eq!(written.iter().filter(|w| **w == Some(false)).count(), 1);
    assert_eq!(h.stream().await, [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_given_up_event_holds_no_later_one_back() {
    let h = harness("seq-give-up").await;
    let lost = inline(1);
    let (never_sent, _) = h.prepare(std::slice::from_ref(&lost));
    drop(never_sent);
    let later = [inline(2)];
    let (prepared, answers) = h.prepare(&later);
    assert_eq!(
        h.write(prepared, answers).await,
        [None],
        "1 is still pending"
    );
    lock(&h.task.sequencer).give_up(&lost.message_id, Instant::now() + Duration::from_secs(60));
    let (prepared, answers) = h.prepare(&later);
    assert_eq!(h.write(prepared, answers).await, [Some(true)]);
    // Sent again after its error: a new number, written.
    let (prepared, answers) = h.prepare(std::slice::from_ref(&lost));
    assert_eq!(h.write(prepared, answers).await, [Some(true)]);
    assert_eq!(h.stream().await, [2, 1]);
}

#[tokio::test]
async fn hash_and_inline_events_share_a_batch() {
    let h = harness("seq-layouts").await;
    let mut hashed = OutgoingEvent::new("tick", 0, inline(10).fields.clone());
    hashed.storage = Storage::Hash;
    let hashed = Arc::new(hashed);
    let events = [inline(1), hashed.clone(), inline(2)];
    let (prepared, answers) = h.prepare(&events);
    assert_eq!(h.write(prepared, answers).await, [Some(true); 3]);
    let (prepared, answers) = h.prepare(&events);
    assert_eq!(h.write(prepared, answers).await, [Some(false); 3]);
    let mut raw = redis::Client::open(h.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let range: redis::streams::StreamRangeReply = raw.xrange_all(h.keys.stream()).await.unwrap();
    let payloads: Vec<Option<String>> = range.ids.iter().map(|e| e.get("payload")).collect();
    assert_eq!(
        payloads,
        [Some(h.keys.payload(&hashed.message_id)), None, None],
        "the hash-layout event first, then the inline ones"
    );
}
