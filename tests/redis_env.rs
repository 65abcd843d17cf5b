//! `REDIS_URL` and `REDIS_TLS_CA` / `REDIS_TLS_CERT` / `REDIS_TLS_KEY` reach builders that
//! set no URL (as `examples/producer.rs` and `examples/consumer.rs` build theirs) and
//! `RedisSettings::from_env()`. One test in a binary of its own: it sets the process's
//! environment.

mod common;

use backbone_redis::settings::RedisSettings;
use backbone_redis::testing::{unique_name, RedisServer, ServerOptions, TlsMode};
use backbone_redis::{RedisConsumerBuilder, RedisProducerBuilder};
use common::*;
use tokio::sync::mpsc;

#[tokio::test]
async fn builders_follow_the_variables() {
    let server = RedisServer::spawn(ServerOptions {
        tls: Some(TlsMode::Mutual),
        ..Default::default()
    })
    .unwrap();
    let tls = server.tls().unwrap();
    // SAFETY (edition 2021: set_var is safe, but only sound single-threaded): this binary's
    // only test sets them before it starts any task that reads the environment.
    std::env::set_var("REDIS_URL", server.url());
    std::env::set_var("REDIS_TLS_CA", tls.ca_cert_path());
    std::env::set_var("REDIS_TLS_CERT", tls.client_cert_path());
    std::env::set_var("REDIS_TLS_KEY", tls.client_key_path());

    let from_env = format!("{:?}", RedisSettings::from_env());
    assert!(from_env.contains(server.url()), "{from_env}");
    assert!(from_env.contains("client.crt"), "{from_env}");

    let uri = unique_name("env");
    let producer = RedisProducerBuilder::new()
        .uri(&uri)
        .build_ticks_producer()
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .uri(&uri)
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    send(&producer, 0..3).await;
    assert_eq!(collect(&mut rx, 3, WAIT).await.len(), 3);
    lifetime.shutdown().await.unwrap();

    // A CA set but a plaintext URL: refused, not silently plaintext.
    std::env::set_var("REDIS_URL", "redis://127.0.0.1:6379");
    let err = RedisProducerBuilder::new()
        .uri(&uri)
        .build_ticks_producer()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not rediss://"), "{err}");
}
