//! Metrics and traces of a running producer and consumer, scraped by Prometheus.
//!
//! Installs a Prometheus exporter (`metrics-exporter-prometheus`) and a `tracing` subscriber,
//! then places an order every 50 ms; a consumer group `observer` moves each order to `packing`
//! (sending that event from its handler, so it is correlated to the order). The `packing`
//! handler fails now and then: products whose id is a multiple of 3 fail their first delivery
//! (a retry), multiples of 7 fail every time (a dead letter after 3 deliveries). So every
//! `backbone_*` metric moves:
//!
//! ```text
//! cargo run --example observability                              # until Ctrl-C
//! cargo run --example observability -- --seconds 30
//! METRICS_ADDR=127.0.0.1:9000 cargo run --example observability  # a fixed port
//! curl -s http://127.0.0.1:9000/metrics | grep backbone_
//! ```
//!
//! Options (each also an environment variable): `--metrics-addr` / `METRICS_ADDR` (default
//! `127.0.0.1:0`: a free port), `--seconds` / `RUN_SECONDS` (default: until Ctrl-C), `--uri` /
//! `OBS_URI` (default `observability.shipments`, in environment `dev`). The first line on
//! stdout is `metrics on http://<addr>/metrics`; logs go to stderr (`RUST_LOG`, default `info`).
//! Uses `$REDIS_URL` if set, else starts a local `redis-server` (or a container).

mod shipment;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use backbone_core::{async_trait, ConsumerContext, HandlerResult, RetryPolicy};
use backbone_redis::testing::TestRedis;
use backbone_redis::{RedisConsumerBuilder, RedisProducerBuilder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use shipment::*;
use tracing_subscriber::EnvFilter;

/// Buckets of the `*_seconds` histograms: 1 ms to 10 s.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Few deliveries, short delays: retries and dead letters show within seconds.
const RETRY: RetryPolicy = RetryPolicy {
    base_delay: Duration::from_millis(50),
    max_delay: Duration::from_millis(200),
    max_deliveries: 3,
};

/// The command line and its environment variables.
struct Options {
    metrics_addr: SocketAddr,
    seconds: Option<u64>,
    uri: String,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut metrics_addr = std::env::var("METRICS_ADDR").ok();
        let mut seconds = std::env::var("RUN_SECONDS").ok();
        let mut uri = std::env::var("OBS_URI").ok();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let slot = match arg.as_str() {
                "--metrics-addr" => &mut metrics_addr,
                "--seconds" => &mut seconds,
                "--uri" => &mut uri,
                _ => {
                    return Err(format!(
                        "unknown argument {arg:?}; options: --metrics-addr ADDR, --seconds N, --uri URI"
                    ))
                }
            };
            *slot = Some(args.next().ok_or(format!("{arg} needs a value"))?);
        }
        let metrics_addr = metrics_addr
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "127.0.0.1:0".to_owned());
        let metrics_addr: SocketAddr = metrics_addr
            .parse()
            .map_err(|e| format!("metrics address {metrics_addr:?}: {e}"))?;
        let seconds = seconds
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|e| format!("seconds {s:?}: {e}")))
            .transpose()?;
        let uri = uri
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "observability.shipments".to_owned());
        Ok(Options {
            metrics_addr,
            seconds,
            uri,
        })
    }
}

/// `addr`, or with port 0 a free port of its host: bound once to learn it, then released for
/// the exporter (which binds it itself).
fn concrete(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    TcpListener::bind(addr)?.local_addr()
}

/// Installs the Prometheus recorder, serving `/metrics` on `addr`; returns where it listens.
/// Must run before any producer or consumer is built: they look their metrics up once.
fn install_metrics(addr: SocketAddr) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let addr = concrete(addr)?;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &BUCKETS)?
        .install()?;
    Ok(addr)
}

/// The `observer` group's handler: each order goes on to `packing`, where some fail.
struct Observer {
    producer: ShipmentTrackingProducer,
}

#[async_trait]
impl ShipmentTrackingConsumer for Observer {
    async fn order_placed(
        &self,
        _: &ConsumerContext,
        user: User,
        product: Product,
        _: u64,
    ) -> HandlerResult {
        // Sent from the handler: correlated to the order (correlation_id, causation_id).
        self.producer.packing(user.email, product.id, now()).await?;
        Ok(())
    }
    async fn packing(
        &self,
        ctx: &ConsumerContext,
        email: String,
        product_id: u64,
        _: u64,
    ) -> HandlerResult {
        let delivery = ctx.metadata().delivery_count;
        if product_id.is_multiple_of(7) {
            return Err(format!("no box fits product {product_id} (delivery {delivery})").into());
        }
        if product_id.is_multiple_of(3) && delivery == 1 {
            return Err(format!("the packer of {email} is on a break").into());
        }
        tracing::debug!(product_id, delivery, "packed");
        Ok(())
    }
    async fn on_delivery(&self, _: &ConsumerContext, _: String, _: u64, _: u64) -> HandlerResult {
        Ok(())
    }
    async fn on_received(&self, _: &ConsumerContext, _: String, _: u64, _: u64) -> HandlerResult {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = Options::parse()?;
    let addr = install_metrics(options.metrics_addr)?;
    println!("metrics on http://{addr}/metrics");
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let redis = TestRedis::start().await?;
    let url = redis.url();
    tracing::info!(
        redis = backbone_redis::settings::redact_url(url),
        source = ?redis.source(),
        uri = options.uri,
        "starting"
    );
    let producer = RedisProducerBuilder::new()
        .url(url)
        .environment(ENVIRONMENT)
        .uri(&options.uri)
        .build_shipment_tracking_producer()
        .await?;
    let consumer = RedisConsumerBuilder::new()
        .url(url)
        .environment(ENVIRONMENT)
        .uri(&options.uri)
        .group("observer")
        .name("observer-1")
        .block(Duration::from_millis(500))
        .retry(RETRY)
        .group_metrics_interval(Duration::from_secs(1))
        .subscribe_shipment_tracking_consumer(Observer {
            producer: producer.clone(),
        })
        .await?;

    let orders = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let run = now();
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            for i in 0.. {
                tick.tick().await;
                let (user, product) = order(run, i);
                if let Err(e) = producer.order_placed(user, product, now()).await {
                    tracing::warn!(error = %e, "could not place an order");
                }
            }
        })
    };

    let stopped = async {
        match options.seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        () = stopped => {}
    }
    tracing::info!("stopping");
    orders.abort();
    consumer.shutdown().await?;
    println!("stopped");
    Ok(())
}
