//! User middleware around sends, handler calls and batch reads, in order, on Redis and on the
//! in-memory channel alike; a middleware that refuses; settlements and group states told.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backbone_core::memory::InMemoryBroker;
use backbone_core::middleware::{
    ChannelInfo, GroupState, NextHandle, NextRead, NextSend, ReadRequest, Settled,
};
use backbone_core::{
    async_trait, ConsumerContext, Error, Fields, HandleError, HandlerError, MessageId, Middleware,
    OutgoingEvent,
};
use backbone_redis::testing::{shared, unique_name};
use backbone_redis::{DeadLetters, RedisConsumerBuilder, RedisProducerBuilder, RedisSettings};
use common::*;
use tokio::sync::mpsc;

type Log = Arc<Mutex<Vec<String>>>;

/// Writes `<name> >op` before and `<name> <op` after each hook it wraps.
struct Recording {
    name: &'static str,
    log: Log,
}

impl Recording {
    fn note(&self, what: String) {
        self.log.lock().unwrap().push(what);
    }
}

#[async_trait]
impl Middleware for Recording {
    async fn send(
        &self,
        channel: &ChannelInfo,
        mut event: OutgoingEvent,
        next: NextSend<'_>,
    ) -> Result<MessageId, Error> {
        self.note(format!("{} >send {}", self.name, channel.destination()));
        // Enrichment: each middleware adds a header.
        event.envelope.headers.insert(self.name, "seen")?;
        let result = next.run(event).await;
        self.note(format!("{} <send", self.name));
        result
    }

    async fn handle(
        &self,
        channel: &ChannelInfo,
        ctx: &ConsumerContext,
        fields: &Fields,
        next: NextHandle<'_>,
    ) -> Result<(), HandleError> {
        assert_eq!(channel.group(), Some("mw"));
        self.note(format!(
            "{} >handle {}",
            self.name,
            ctx.metadata().operation
        ));
        let result = next.run(ctx, fields).await;
        self.note(format!("{} <handle", self.name));
        result
    }

    async fn read(
        &self,
        _: &ChannelInfo,
        read: ReadRequest,
        next: NextRead<'_>,
    ) -> Result<usize, Error> {
        let n = next.run().await?;
        if n > 0 {
            self.note(format!("{} read {:?} {n}", self.name, read.kind));
        }
        Ok(n)
    }

    fn settled(&self, _: &ChannelInfo, settled: &Settled<'_>) {
        self.note(format!("{} settled {}", self.name, settled.outcome.name()));
    }

    fn group_observed(&self, _: &ChannelInfo, state: &GroupState) {
        self.note(format!("{} group consumers={}", self.name, state.consumers));
    }
}

/// The handler: notes each tick and the headers it came with.
struct Noting(Log);

#[async_trait]
impl TicksConsumer for Noting {
    async fn tick(&self, ctx: &ConsumerContext, n: u64) -> backbone_core::HandlerResult {
        let headers: Vec<&str> = ctx.metadata().headers.iter().map(|(k, _)| k).collect();
        self.0
            .lock()
            .unwrap()
            .push(format!("handler {n} {}", headers.join(",")));
        Ok(())
    }
}

fn take(log: &Log, prefix: &str) -> Vec<String> {
    let all = log.lock().unwrap();
    all.iter()
        .filter(|l| l.starts_with(prefix) || l.contains(prefix))
        .cloned()
        .collect()
}

const SEND_ORDER: [&str; 4] = ["a >send", "b >send", "b <send", "a <send"];
const HANDLE_ORDER: [&str; 7] = [
    "a >handle tick",
    "b >handle tick",
    "handler 1 a,b",
    "b <handle",
    "a <handle",
    "a settled ack",
    "b settled ack",
];

/// The hook lines of `log` that belong to the send and to the handle of one event.
fn phases(log: &Log) -> (Vec<String>, Vec<String>) {
    let all = log.lock().unwrap().clone();
    let send = all
        .iter()
        .filter(|l| l.contains("send"))
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    let handle = all
        .iter()
        .filter(|l| l.contains("handle") || l.starts_with("handler") || l.contains("settled"))
        .cloned()
        .collect();
    (send, handle)
}

#[tokio::test]
async fn middleware_runs_in_order_on_redis() {
    let redis = shared().await.unwrap();
    let uri = unique_name("mw");
    let log = Log::default();
    let rec = |name| Recording {
        name,
        log: log.clone(),
    };
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .middleware(rec("a"))
        .middleware(rec("b"))
        .build_ticks_producer()
        .await
        .unwrap();
    producer.tick(1).await.unwrap();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .group("mw")
        .max_messages(1)
        .group_metrics_interval(Duration::from_millis(100))
        .middleware(rec("a"))
        .middleware(rec("b"))
        .subscribe_ticks_consumer(Noting(log.clone()))
        .await
        .unwrap();
    lifetime.completion().await.unwrap();
    let (send, handle) = phases(&log);
    assert_eq!(send, SEND_ORDER);
    assert_eq!(handle, HANDLE_ORDER);
    // The read brought the entry: told to both, the outer first.
    let reads = take(&log, " read ");
    assert_eq!(reads[..2], ["b read New 1", "a read New 1"], "{reads:?}");

    // The group's state, told every group_metrics_interval.
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .group("mw")
        .group_metrics_interval(Duration::from_millis(100))
        .middleware(rec("g"))
        .subscribe_ticks_consumer(Noting(log.clone()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    lifetime.shutdown().await.unwrap();
    assert!(
        !take(&log, "g group consumers=").is_empty(),
        "{:?}",
        log.lock().unwrap()
    );
}

#[tokio::test]
async fn middleware_runs_in_order_in_memory() {
    let broker = InMemoryBroker::new();
    let log = Log::default();
    let rec = |name| Recording {
        name,
        log: log.clone(),
    };
    let producer = broker
        .producer_builder()
        .uri("mw")
        .middleware(rec("a"))
        .middleware(rec("b"))
        .build_ticks_producer()
        .await
        .unwrap();
    producer.tick(1).await.unwrap();
    broker
        .consumer_builder()
        .uri("mw")
        .group("mw")
        .max_messages(1)
        .middleware(rec("a"))
        .middleware(rec("b"))
        .subscribe_ticks_consumer(Noting(log.clone()))
        .await
        .unwrap()
        .completion()
        .await
        .unwrap();
    let (send, handle) = phases(&log);
    assert_eq!(send, SEND_ORDER);
    assert_eq!(handle, HANDLE_ORDER);
    assert_eq!(take(&log, " read "), ["b read New 1", "a read New 1"]);
}

/// An auth check: refuses sends without a `token` header, and events whose header is wrong.
struct RequireToken;

#[async_trait]
impl Middleware for RequireToken {
    async fn send(
        &self,
        channel: &ChannelInfo,
        event: OutgoingEvent,
        next: NextSend<'_>,
    ) -> Result<MessageId, Error> {
        if event.envelope.headers.get("token").is_none() {
            return Err(Error::Config(format!(
                "send to {}: no token header",
                channel.destination()
            )));
        }
        next.run(event).await
    }

    async fn handle(
        &self,
        _: &ChannelInfo,
        ctx: &ConsumerContext,
        fields: &Fields,
        next: NextHandle<'_>,
    ) -> Result<(), HandleError> {
        match ctx.metadata().headers.get("token") {
            Some("good") => next.run(ctx, fields).await,
            other => Err(HandleError::Handler(HandlerError::fatal(format!(
                "refused: token {other:?}"
            )))),
        }
    }
}

#[tokio::test]
async fn a_refusing_middleware_stops_sends_and_dead_letters_events() {
    let redis = shared().await.unwrap();
    let uri = unique_name("auth");
    let guarded = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .middleware(RequireToken)
        .build_ticks_producer()
        .await
        .unwrap();
    let err = guarded.tick(1).await.unwrap_err();
    assert!(err.to_string().contains("no token header"), "{err}");
    assert!(
        stream_ids(redis.url(), &uri).await.is_empty(),
        "nothing written"
    );
    guarded.with_header("token", "good").tick(2).await.unwrap();
    guarded.with_header("token", "bad").tick(3).await.unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .group("g")
        .middleware(RequireToken)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let seen = collect(&mut rx, 1, Duration::from_secs(10)).await;
    assert_eq!(seen.iter().map(|s| s.n).collect::<Vec<_>>(), [2]);
    let dead = DeadLetters::open(&RedisSettings::new().url(redis.url()).uri(&uri), "g")
        .await
        .unwrap();
    wait_dead_letters(&dead, 1).await;
    let letters = dead.list(None, 10).await.unwrap();
    assert!(
        letters[0].reason.contains("refused: token Some(\"bad\")"),
        "{}",
        letters[0].reason
    );
    lifetime.shutdown().await.unwrap();
}
