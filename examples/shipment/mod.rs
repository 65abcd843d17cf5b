//! The shipment-tracking contract and its types, shared by the examples, plus [`Channel`]: Redis
//! when one is at hand, else the in-memory channel.
#![allow(dead_code)]

use backbone_core::memory::InMemoryBroker;
use backbone_core::{ConsumerLifetime, Error};
use backbone_redis::testing::TestRedis;
use backbone_redis::{RedisConsumerBuilder, RedisProducerBuilder};
use serde::{Deserialize, Serialize};

pub const ENVIRONMENT: &str = "dev";
pub const URI: &str = "hello.event-sourcing";

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct User {
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Product {
    pub id: u64,
    pub name: String,
    pub price_cents: u64,
}

/// The life of an order, from placement to receipt.
#[backbone_core::events_contract(schema)]
pub trait ShipmentTracking {
    /// A user placed an order for a product.
    async fn order_placed(&self, user: User, product: Product, time: u64);
    /// The warehouse is packing the product.
    async fn packing(&self, email: String, product_id: u64, time: u64);
    /// The product left for delivery.
    async fn on_delivery(&self, email: String, product_id: u64, time: u64);
    /// The user received the product.
    async fn on_received(&self, email: String, product_id: u64, time: u64);
}

/// Where the events travel.
pub enum Channel {
    /// A Redis server; the `TestRedis` is kept so a server we started lives as long as we do.
    Redis {
        url: String,
        _server: Option<Box<TestRedis>>,
    },
    /// The in-memory channel, when no Redis could be had.
    Memory(InMemoryBroker),
}

impl Channel {
    /// `$REDIS_URL` if set; else a `redis-server` started for this run (or a container); else
    /// the in-memory channel. Says which on stderr.
    pub async fn choose() -> Channel {
        match TestRedis::start().await {
            Ok(server) => {
                let url = server.url().to_owned();
                let shown = backbone_redis::settings::redact_url(&url);
                eprintln!("channel: Redis at {shown} ({:?})", server.source());
                Channel::Redis {
                    url,
                    _server: Some(Box::new(server)),
                }
            }
            Err(e) => {
                eprintln!("channel: in-memory, because no Redis could be had: {e}");
                Channel::Memory(InMemoryBroker::new())
            }
        }
    }

    /// A producer of shipment events.
    pub async fn producer(&self) -> Result<ShipmentTrackingProducer, Error> {
        match self {
            Channel::Redis { url, .. } => {
                RedisProducerBuilder::new()
                    .url(url)
                    .environment(ENVIRONMENT)
                    .uri(URI)
                    .build_shipment_tracking_producer()
                    .await
            }
            Channel::Memory(broker) => {
                broker
                    .producer_builder()
                    .environment(ENVIRONMENT)
                    .uri(URI)
                    .build_shipment_tracking_producer()
                    .await
            }
        }
    }

    /// Starts `handler` as consumer `name` of `group`, stopping after `max` events if given.
    pub async fn subscribe<H: ShipmentTrackingConsumer>(
        &self,
        group: &str,
        name: &str,
        max: Option<u64>,
        handler: H,
    ) -> Result<ConsumerLifetime, Error> {
        match self {
            Channel::Redis { url, .. } => {
                let mut builder = RedisConsumerBuilder::new()
                    .url(url)
                    .environment(ENVIRONMENT)
                    .uri(URI)
                    .group(group)
                    .name(name);
                if let Some(max) = max {
                    builder = builder.max_messages(max);
                }
                builder.subscribe_shipment_tracking_consumer(handler).await
            }
            Channel::Memory(broker) => {
                let mut builder = broker
                    .consumer_builder()
                    .environment(ENVIRONMENT)
                    .uri(URI)
                    .group(group)
                    .name(name);
                if let Some(max) = max {
                    builder = builder.max_messages(max);
                }
                builder.subscribe_shipment_tracking_consumer(handler).await
            }
        }
    }
}

/// The `i`-th order of run `run` (the run tags the e-mail, so runs can be told apart).
pub fn order(run: u64, i: u64) -> (User, Product) {
    let names = ["Ada", "Grace", "Linus", "Barbara", "Ken"];
    let products = ["keyboard", "monitor", "cable", "lamp", "chair"];
    let name = names[(i % 5) as usize];
    (
        User {
            name: name.to_owned(),
            email: format!("{}.{run}.{i}@example.com", name.to_lowercase()),
        },
        Product {
            id: 1000 + i,
            name: products[(i % 5) as usize].to_owned(),
            price_cents: 1999 + 100 * i,
        },
    )
}

/// Milliseconds since the epoch.
pub fn now() -> u64 {
    backbone_core::metadata::now_millis()
}

/// The first command-line argument as a count of `what`, if given.
pub fn count_arg(what: &str) -> Result<Option<u64>, String> {
    std::env::args()
        .nth(1)
        .map(|n| {
            n.parse()
                .map_err(|e| format!("the number of {what} {n:?}: {e}"))
        })
        .transpose()
}
