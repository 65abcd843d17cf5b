//! The producing half of the two-process shipment example: places orders and exits.
//!
//! ```text
//! cargo run --example consumer            # in one terminal
//! cargo run --example producer -- 10      # in another: 10 orders
//! ```
//! Both use `$REDIS_URL`, else `redis://127.0.0.1:6379`, and the TLS variables (`REDIS_TLS_CA`,
//! `REDIS_TLS_CERT`, `REDIS_TLS_KEY`) for a `rediss://` URL: see the README's Connecting.

mod shipment;

use backbone_redis::RedisProducerBuilder;
use shipment::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let orders = count_arg("orders")?.unwrap_or(5);
    let producer = RedisProducerBuilder::new()
        .environment(ENVIRONMENT)
        .uri(URI)
        .build_shipment_tracking_producer()
        .await?;
    let run = now();
    for i in 0..orders {
        let (user, product) = order(run, i);
        let id = producer
            .order_placed(user.clone(), product.clone(), now())
            .await?;
        println!("placed order {id}: {} ordered {}", user.name, product.name);
    }
    Ok(())
}
