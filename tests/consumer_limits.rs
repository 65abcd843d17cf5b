//! What a consumer holds read but not yet handled is bounded in bytes
//! (`max_buffered_bytes`): with large payloads and a slow handler it reads no further ahead than
//! the bound allows, yet handles every event exactly once; a bound smaller than one event still
//! lets events through, one at a time. What it holds is sampled from Redis while it runs: the
//! group's `entries-read` (entries delivered to the consumer) minus the events handled so far.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backbone_core::{async_trait, events_contract, ConsumerContext, HandlerResult, MessageId};
use backbone_redis::testing::{unique_name, RedisServer, ServerOptions};
use backbone_redis::{RedisConsumerBuilder, RedisProducerBuilder};
use common::*;
use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio::sync::mpsc;

/// Events with a payload of any size.
#[events_contract]
pub trait Blobs {
    async fn blob(&self, n: u64, data: String);
}

/// Handles each blob slowly, then counts it.
struct Slow {
    delay: Duration,
    handled: Arc<AtomicU64>,
    seen: mpsc::UnboundedSender<MessageId>,
}

#[async_trait]
impl BlobsConsumer for Slow {
    async fn blob(&self, ctx: &ConsumerContext, _n: u64, _data: String) -> HandlerResult {
        tokio::time::sleep(self.delay).await;
        self.seen.send(ctx.metadata().message_id)?;
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The `entries-read` of group `default` of `stream` (`XINFO GROUPS`).
async fn entries_read(raw: &mut MultiplexedConnection, stream: &str) -> u64 {
    let groups: Vec<Vec<(String, Value)>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(raw)
        .await
        .unwrap();
    let group = groups
        .iter()
        .find(|g| {
            g.iter()
                .any(|(k, v)| k == "name" && *v == Value::BulkString(b"default".to_vec()))
        })
        .expect("group default");
    match group.iter().find(|(k, _)| k == "entries-read") {
        Some((_, Value::Int(n))) => *n as u64,
        _ => 0,
    }
}

/// Samples, until `done`, how many events the consumer holds read but not handled; returns
/// the most seen and the number of samples. `entries-read` is sampled before the handled count,
/// so a sample never counts an event handled meanwhile as held.
fn sample_held(
    url: &str,
    stream: String,
    handled: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    let url = url.to_owned();
    tokio::spawn(async move {
        let mut raw = raw(&url).await;
        let (mut most, mut samples) = (0, 0);
        while !done.load(Ordering::SeqCst) {
            let read = entries_read(&mut raw, &stream).await;
            let held = read.saturating_sub(handled.load(Ordering::SeqCst));
            most = most.max(held);
            samples += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (most, samples)
    })
}

/// Sends `count` blobs of `size` bytes each to `uri`; returns their ids.
async fn send_blobs(url: &str, uri: &str, count: u64, size: usize) -> Vec<MessageId> {
    let producer = RedisProducerBuilder::new()
        .url(url)
        .uri(uri)
        .build_blobs_producer()
        .await
        .unwrap();
    let data = "x".repeat(size);
    let mut ids = Vec::new();
    for n in 0..count {
        ids.push(producer.blob(n, data.clone()).await.unwrap());
    }
    ids
}

/// Runs a consumer bounded to `bound` bytes over `count` blobs of `size` bytes with a handler
/// taking `delay`; checks each is handled exactly once; returns the most events held at once.
async fn run_bounded(count: u64, size: usize, bound: usize, delay: Duration) -> u64 {
    // An own server: the test writes large payloads.
    let server = RedisServer::spawn(ServerOptions::default()).unwrap();
    let uri = unique_name("bounded");
    let sent = send_blobs(server.url(), &uri, count, size).await;
    let handled = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = Slow {
        delay,
        handled: handled.clone(),
        seen: tx,
    };
    let lifetime = RedisConsumerBuilder::new()
        .url(server.url())
        .uri(&uri)
        .block(Duration::from_millis(100))
        .max_buffered_bytes(bound)
        .subscribe_blobs_consumer(handler)
        .await
        .unwrap();
    let sampler = sample_held(
        server.url(),
        keys(&uri).stream().to_owned(),
        handled.clone(),
        done.clone(),
    );
    let seen = collect(&mut rx, count as usize, Duration::from_secs(60)).await;
    done.store(true, Ordering::SeqCst);
    let (most, samples) = sampler.await.unwrap();
    assert_exactly_once(&sent, &seen);
    assert_quiet(&mut rx, Duration::from_millis(200)).await;
    lifetime.shutdown().await.unwrap();
    assert!(samples > 0, "the sampler ran");
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_are_read_ahead_no_further_than_the_byte_bound() {
    let size = 1_000_000;
    let bound = 8 << 20;
    let most = run_bounded(30, size, bound, Duration::from_millis(10)).await;
    // An entry takes a little more than its payload; one read past the bound at most (only
    // when nothing else is held, so that a consumer always makes progress).
    let allowed = (bound / size) as u64 + 1;
    assert!(
        most <= allowed,
        "held {most} events of {size} bytes at once; the bound of {bound} bytes allows {allowed}"
    );
    assert!(most >= 1, "the sampler saw the consumer hold events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_smaller_than_one_event_lets_events_through_one_at_a_time() {
    let most = run_bounded(8, 10_000, 1, Duration::from_millis(5)).await;
    assert!(most <= 1, "held {most} events at once");
}

#[tokio::test]
async fn a_zero_byte_bound_is_refused() {
    let server = RedisServer::spawn(ServerOptions::default()).unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = RedisConsumerBuilder::new()
        .url(server.url())
        .uri("x")
        .max_buffered_bytes(0)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: max_buffered_bytes must be at least 1"
    );
}
