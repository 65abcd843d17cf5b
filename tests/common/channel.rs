//! The channels the delivery scenarios run on: one scenario, written once against
//! [`Channel`], runs on Redis ([`RedisChannel`]) and in memory ([`MemoryChannel`]) with the same
//! assertions. `conformance!` turns each scenario function into one test per channel.

use std::time::Duration;

use backbone_core::dead_letters::DeadLetterStore;
use backbone_core::memory::InMemoryBroker;
use backbone_core::{ConsumerLifetime, Error, RetryPolicy};

use super::delivery::{consumer, pending, RETRY};
use super::{TicksConsumer, TicksConsumerBuilderExt, TicksProducer, TicksProducerBuilderExt};

/// What a scenario asks of a consumer. Settings of the Redis reader (`batch_size`, `block`)
/// do nothing in memory, which hands over one entry at a time as soon as it is appended.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub environment: Option<String>,
    pub uri: String,
    pub group: String,
    pub name: String,
    pub batch_size: Option<usize>,
    pub block: Option<Duration>,
    pub claim_min_idle: Option<Duration>,
    /// How many events the consumer handles at once (the channel's default, 1, unless set).
    pub concurrency: Option<usize>,
    /// The retry policy; [`RETRY`] (fast retries) unless set.
    pub retry: RetryPolicy,
}

impl Consumer {
    /// A consumer `name` of `group` on `uri`, with the fast settings of `common::delivery`.
    pub fn new(uri: &str, group: &str, name: &str) -> Self {
        Consumer {
            environment: None,
            uri: uri.to_owned(),
            group: group.to_owned(),
            name: name.to_owned(),
            batch_size: None,
            block: None,
            claim_min_idle: None,
            concurrency: None,
            retry: RETRY,
        }
    }

    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    pub fn environment(mut self, environment: &str) -> Self {
        self.environment = Some(environment.to_owned());
        self
    }

    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = Some(n);
        self
    }

    pub fn block(mut self, block: Duration) -> Self {
        self.block = Some(block);
        self
    }

    pub fn claim_min_idle(mut self, idle: Duration) -> Self {
        self.claim_min_idle = Some(idle);
        self
    }

    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = Some(n);
        self
    }
}

/// A channel the scenarios run on. Cheap to clone; every clone shares the same streams.
#[backbone_core::async_trait]
pub trait Channel: Clone + Send + Sync + 'static {
    /// A producer of ticks on (`environment`, `uri`).
    async fn producer(&self, environment: Option<&str>, uri: &str) -> TicksProducer;

    /// Subscribes `handler` as `consumer` says.
    async fn subscribe<H: TicksConsumer + Send + Sync + 'static>(
        &self,
        consumer: Consumer,
        handler: H,
    ) -> Result<ConsumerLifetime, Error>;

    /// How many entries `group` has pending on (`environment`, `uri`).
    async fn pending(&self, environment: Option<&str>, uri: &str, group: &str) -> usize;

    /// The dead letters of `group` on `uri`.
    async fn dead_letters(&self, uri: &str, group: &str) -> Box<dyn DeadLetterStore>;

    /// Waits (at most `within`) until `group` has nothing pending on `uri`; returns how many
    /// are left.
    async fn await_nothing_pending(&self, uri: &str, group: &str, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = self.pending(None, uri, group).await;
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The Redis channel, on the tests' shared server.
#[derive(Clone)]
pub struct RedisChannel {
    pub url: String,
}

impl RedisChannel {
    pub async fn shared() -> Self {
        let redis = backbone_redis::testing::shared().await.unwrap();
        RedisChannel {
            url: redis.url().to_owned(),
        }
    }
}

/// The stream (`environment`, `uri`) as the Redis keys name it.
fn address(environment: Option<&str>, uri: &str) -> String {
    match environment {
        Some(environment) => format!("{environment}:{uri}"),
        None => uri.to_owned(),
    }
}

#[backbone_core::async_trait]
impl Channel for RedisChannel {
    async fn producer(&self, environment: Option<&str>, uri: &str) -> TicksProducer {
        let mut builder = backbone_redis::RedisProducerBuilder::new()
            .url(&self.url)
            .uri(uri);
        if let Some(environment) = environment {
            builder = builder.environment(environment);
        }
        builder.build_ticks_producer().await.unwrap()
    }

    async fn subscribe<H: TicksConsumer + Send + Sync + 'static>(
        &self,
        spec: Consumer,
        handler: H,
    ) -> Result<ConsumerLifetime, Error> {
        let mut builder = consumer(&self.url, &spec.uri, &spec.group, &spec.name);
        if let Some(environment) = &spec.environment {
            builder = builder.environment(environment);
        }
        if let Some(n) = spec.batch_size {
            builder = builder.batch_size(n);
        }
        if let Some(block) = spec.block {
            builder = builder.block(block);
        }
        if let Some(idle) = spec.claim_min_idle {
            builder = builder.claim_min_idle(idle);
        }
        if let Some(n) = spec.concurrency {
            builder = builder.concurrency(n);
        }
        builder
            .retry(spec.retry)
            .subscribe_ticks_consumer(handler)
            .await
    }

    async fn pending(&self, environment: Option<&str>, uri: &str, group: &str) -> usize {
        pending(&self.url, &address(environment, uri), group)
            .await
            .len()
    }

    async fn dead_letters(&self, uri: &str, group: &str) -> Box<dyn DeadLetterStore> {
        let dead = backbone_redis::DeadLetters::connect(&self.url, None, uri, group);
        Box::new(dead.await.unwrap())
    }
}

/// The in-memory channel: one broker per test.
#[derive(Clone, Default)]
pub struct MemoryChannel {
    pub broker: InMemoryBroker,
}

#[backbone_core::async_trait]
impl Channel for MemoryChannel {
    async fn producer(&self, environment: Option<&str>, uri: &str) -> TicksProducer {
        let mut builder = self.broker.producer_builder().uri(uri);
        if let Some(environment) = environment {
            builder = builder.environment(environment);
        }
        builder.build_ticks_producer().await.unwrap()
    }

    async fn subscribe<H: TicksConsumer + Send + Sync + 'static>(
        &self,
        spec: Consumer,
        handler: H,
    ) -> Result<ConsumerLifetime, Error> {
        let mut builder = self
            .broker
            .consumer_builder()
            .uri(&spec.uri)
            .group(&spec.group)
            .name(&spec.name)
            .retry(spec.retry);
        if let Some(environment) = &spec.environment {
            builder = builder.environment(environment);
        }
        if let Some(idle) = spec.claim_min_idle {
            builder = builder.claim_min_idle(idle);
        }
        if let Some(n) = spec.concurrency {
            builder = builder.concurrency(n);
        }
        builder.subscribe_ticks_consumer(handler).await
    }

    async fn pending(&self, environment: Option<&str>, uri: &str, group: &str) -> usize {
        self.broker.pending(environment, uri, group)
    }

    async fn dead_letters(&self, uri: &str, group: &str) -> Box<dyn DeadLetterStore> {
        Box::new(self.broker.dead_letters(None, uri, group).unwrap())
    }
}

/// Makes each scenario `async fn name<C: Channel>(channel: C)` a test on Redis
/// (`name::redis`) and one in memory (`name::memory`).
#[macro_export]
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    $crate::common::delivery::init_tracing();
                    super::$scenario($crate::common::channel::RedisChannel::shared().await).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    $crate::common::delivery::init_tracing();
                    super::$scenario($crate::common::channel::MemoryChannel::default()).await
                }
            }
        )*
    };
}

/// Names the scenarios that run on Redis alone, each with the one-line reason it cannot apply
/// to the in-memory channel: the reason is the ignore message of `<scenario>::memory`, so that
/// every test run lists it. The Redis test itself is the `#[tokio::test]` named `<scenario>`.
#[macro_export]
macro_rules! in_redis_only {
    ($($scenario:ident: $reason:literal),* $(,)?) => {
        $(
            #[allow(non_snake_case)]
            mod $scenario {
                #[test]
                #[ignore = $reason]
                fn memory() {}
            }
        )*
    };
}
