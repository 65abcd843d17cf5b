//! The three-hop workflow of the observability tests: order placed → packing → delivery,
//! each hop's handler sending the next event with nothing but its parameters.

use std::time::Duration;

use backbone_core::{async_trait, events_contract, ConsumerContext, HandlerResult, Metadata};
use tokio::sync::mpsc;

/// One operation per hop of the workflow.
#[events_contract]
pub trait Flow {
    async fn placed(&self, order: u64);
    async fn packed(&self, order: u64);
    async fn delivered(&self, order: u64);
}

/// A hop: records what it handles and, unless it is the last, sends the next hop's event
/// through `next` with nothing but the parameters.
#[derive(Clone)]
pub struct Hop {
    pub next: Option<FlowProducer>,
    pub seen: mpsc::UnboundedSender<Metadata>,
}

impl Hop {
    pub fn record(&self, ctx: &ConsumerContext) {
        let _ = self.seen.send(ctx.metadata().clone());
    }
}

#[async_trait]
impl FlowConsumer for Hop {
    async fn placed(&self, ctx: &ConsumerContext, order: u64) -> HandlerResult {
        self.record(ctx);
        self.next.as_ref().unwrap().packed(order).await?;
        Ok(())
    }
    async fn packed(&self, ctx: &ConsumerContext, order: u64) -> HandlerResult {
        self.record(ctx);
        self.next.as_ref().unwrap().delivered(order).await?;
        Ok(())
    }
    async fn delivered(&self, ctx: &ConsumerContext, _order: u64) -> HandlerResult {
        self.record(ctx);
        Ok(())
    }
}

/// The next metadata a hop recorded, within 10 s.
pub async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Metadata>) -> Metadata {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the hop ran within 10 s")
        .expect("the hop is alive")
}

/// A producer of `uri`'s stream on the Redis at `url`.
pub async fn redis_producer(url: &str, uri: &str) -> FlowProducer {
    backbone_redis::RedisProducerBuilder::new()
        .url(url)
        .uri(uri)
        .build_flow_producer()
        .await
        .unwrap()
}

/// The three hops on Redis: a consumer of each of `uris` (group `group(i)` for hop `i`), each
/// but the last sending the next hop's event; what they handle arrives on the receiver.
pub async fn redis_hops(
    url: &str,
    uris: &[String; 3],
    group: impl Fn(usize) -> String,
) -> (
    Vec<backbone_core::ConsumerLifetime>,
    mpsc::UnboundedReceiver<Metadata>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut lifetimes = Vec::new();
    for (i, uri) in uris.iter().enumerate() {
        let next = match uris.get(i + 1) {
            Some(next) => Some(redis_producer(url, next).await),
            None => None,
        };
        let hop = Hop {
            next,
            seen: tx.clone(),
        };
        let lifetime = backbone_redis::RedisConsumerBuilder::new()
            .url(url)
            .uri(uri)
            .group(group(i))
            .block(Duration::from_millis(100))
            .subscribe_flow_consumer(hop)
            .await
            .unwrap();
        lifetimes.push(lifetime);
    }
    (lifetimes, rx)
}

/// The three hops' metadata, in the order they ran.
pub async fn three_seen(rx: &mut mpsc::UnboundedReceiver<Metadata>) -> [Metadata; 3] {
    [
        next_seen(rx).await,
        next_seen(rx).await,
        next_seen(rx).await,
    ]
}
