//! Personal data that can be forgotten: customers register with an e-mail address (sealed with
//! a key of each customer), a mailer consumer greets them, one customer asks to be forgotten,
//! and a new consumer group reading the whole stream again sees that customer's address as
//! forgotten while every other field, and every other customer, stays.
//!
//! `cargo run --example personal_data`. Uses `$REDIS_URL`, else a `redis-server` of its own (or
//! a `redis:7` container); without Redis it runs on the in-memory channel.

use std::sync::Arc;

use backbone_core::memory::InMemoryBroker;
use backbone_core::personal::{KeyStore, Personal};
use backbone_core::{async_trait, events_contract, ConsumerContext, HandlerResult};
use backbone_redis::testing::{unique_name, TestRedis};
use backbone_redis::{RedisConsumerBuilder, RedisKeyStore, RedisProducerBuilder, RedisSettings};
use tokio::sync::mpsc;

/// A shop's customers.
#[events_contract]
pub trait Customers {
    /// A customer registered: `customer` is an opaque id, the data subject of the event.
    async fn registered(
        &self,
        #[subject] customer: String,
        #[personal] email: String,
        plan: String,
    );
}

/// Greets each customer, by e-mail while it is known.
struct Mailer(mpsc::UnboundedSender<String>);

#[async_trait]
impl CustomersConsumer for Mailer {
    async fn registered(
        &self,
        _ctx: &ConsumerContext,
        customer: String,
        email: Personal<String>,
        plan: String,
    ) -> HandlerResult {
        let line = match email {
            Personal::Known(email) => format!("{customer} ({plan}): welcome mail to {email}"),
            Personal::Forgotten => format!("{customer} ({plan}): e-mail forgotten"),
        };
        let _ = self.0.send(line);
        Ok(())
    }
}

const CUSTOMERS: [(&str, &str, &str); 3] = [
    ("customer-1", "ada@example.com", "pro"),
    ("customer-2", "grace@example.com", "free"),
    ("customer-3", "alan@example.com", "pro"),
];

/// Reads the whole stream through a new group and prints what the mailer says.
async fn read_all(
    builder: impl CustomersConsumerBuilderExt,
) -> Result<(), Box<dyn std::error::Error>> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = builder.subscribe_customers_consumer(Mailer(tx)).await?;
    for _ in CUSTOMERS {
        println!("  {}", rx.recv().await.ok_or("the consumer stopped")?);
    }
    lifetime.shutdown().await?;
    Ok(())
}

async fn send_all(producer: &CustomersProducer) -> Result<(), backbone_core::Error> {
    for (customer, email, plan) in CUSTOMERS {
        producer
            .registered(customer.into(), email.into(), plan.into())
            .await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(redis) = TestRedis::start().await else {
        println!("no Redis: on the in-memory channel");
        let broker = InMemoryBroker::new();
        let producer = broker
            .producer_builder()
            .uri("customers")
            .build_customers_producer()
            .await?;
        send_all(&producer).await?;
        println!("before:");
        read_all(broker.consumer_builder().uri("customers").group("before")).await?;
        broker.key_store().forget("customer-2").await?;
        println!("after forgetting customer-2:");
        read_all(broker.consumer_builder().uri("customers").group("after")).await?;
        return Ok(());
    };
    let uri = unique_name("customers");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_customers_producer()
        .await?;
    send_all(&producer).await?;
    let group = |name: &str| {
        RedisConsumerBuilder::new()
            .url(redis.url())
            .uri(&uri)
            .group(name)
    };
    println!("before:");
    read_all(group("before")).await?;
    let keys: Arc<dyn KeyStore> = Arc::new(RedisKeyStore::new(
        RedisSettings::new()
            .url(redis.url())
            .open_connection("forget")
            .await?,
    ));
    keys.forget("customer-2").await?;
    println!("after forgetting customer-2:");
    read_all(group("after")).await?;
    Ok(())
}
