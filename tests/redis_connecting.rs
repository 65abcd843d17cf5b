//! Reaching Redis through `RedisSettings`: TLS with a custom CA, mutual TLS, a unix socket —
//! each with a producer, a consumer, the event store, dead letters and the stream admin — and
//! client names, refused TLS set-ups, and passwords that show nowhere.

mod common;

use backbone_core::store::{AppendOptions, ExpectedVersion};
use backbone_core::{events_contract, Error};
use backbone_redis::settings::RedisSettings;
use backbone_redis::store::EventStoreBuilder;
use backbone_redis::testing::{shared, unique_name, RedisServer, ServerOptions, TlsMode};
use backbone_redis::{DeadLetters, RedisConsumerBuilder, RedisProducerBuilder, StreamAdmin};
use common::*;
use tokio::sync::mpsc;

#[events_contract]
pub trait Ledger {
    async fn deposited(&self, cents: i64);
}

/// Producer → consumer (one event dead-lettered), the store, dead letters and the admin, all
/// with `settings`.
async fn every_role_works(settings: RedisSettings) {
    let uri = unique_name("connecting");
    let settings = settings.uri(&uri);
    let producer = RedisProducerBuilder::new()
        .settings(settings.clone())
        .build_ticks_producer()
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut recorder = TickRecorder::new("c", tx);
    recorder.fail = |n| n == 1;
    let lifetime = RedisConsumerBuilder::new()
        .settings(settings.clone())
        .group("g")
        .retry(quick_retry(1))
        .subscribe_ticks_consumer(recorder)
        .await
        .unwrap();
    send(&producer, 0..3).await;
    let seen = collect(&mut rx, 2, WAIT).await;
    assert_eq!(seen.iter().map(|s| s.n).collect::<Vec<_>>(), [0, 2]);
    let dead = DeadLetters::open(&settings, "g").await.unwrap();
    wait_dead_letters(&dead, 1).await;
    lifetime.shutdown().await.unwrap();
    assert_eq!(dead.purge_all().await.unwrap(), 1);
    let admin = StreamAdmin::open(&settings).await.unwrap();
    assert_eq!(admin.trim(0).await.unwrap().entries, 3);

    let store = EventStoreBuilder::new()
        .settings(settings.clone())
        .build::<LedgerEvent>()
        .await
        .unwrap();
    let events = [LedgerEvent::Deposited { cents: 5 }];
    let options = AppendOptions::default();
    let result = store
        .append("acc-1", ExpectedVersion::NoStream, &events, options)
        .await
        .unwrap();
    assert_eq!(result.version, 1);
    assert_eq!(store.read("acc-1", 1, 10).await.unwrap().events.len(), 1);
}

fn spawn(tls: Option<TlsMode>, unix_socket: bool) -> RedisServer {
    let options = ServerOptions {
        tls,
        unix_socket,
        ..Default::default()
    };
    RedisServer::spawn(options).unwrap()
}

#[tokio::test]
async fn every_role_works_over_tls_with_a_custom_ca() {
    let server = spawn(Some(TlsMode::ServerOnly), false);
    let tls = server.tls().unwrap();
    assert!(server.url().starts_with("rediss://"));
    every_role_works(
        RedisSettings::new()
            .url(server.url())
            .tls_ca(tls.ca_cert_path()),
    )
    .await;
}

#[tokio::test]
async fn every_role_works_over_mutual_tls() {
    let server = spawn(Some(TlsMode::Mutual), false);
    let tls = server.tls().unwrap();
    let settings = RedisSettings::new()
        .url(server.url())
        .tls_ca(tls.ca_cert_path())
        .tls_client_cert(tls.client_cert_path(), tls.client_key_path());
    every_role_works(settings).await;
}

#[tokio::test]
async fn every_role_works_over_a_unix_socket() {
    let server = spawn(None, true);
    let url = server.unix_socket_url().unwrap();
    assert!(url.starts_with("redis+unix:///"), "{url}");
    every_role_works(RedisSettings::new().url(url)).await;
}

#[tokio::test]
async fn tls_without_the_right_material_is_refused_with_a_reason() {
    let server = spawn(Some(TlsMode::Mutual), false);
    let tls = server.tls().unwrap();
    let build = |settings: RedisSettings| async move {
        RedisProducerBuilder::new()
            .settings(settings.uri("x"))
            .build_ticks_producer()
            .await
            .unwrap_err()
            .to_string()
    };
    let unknown_ca = build(RedisSettings::new().url(server.url())).await;
    assert!(unknown_ca.contains("UnknownIssuer"), "{unknown_ca}");
    let no_client_cert = build(
        RedisSettings::new()
            .url(server.url())
            .tls_ca(tls.ca_cert_path()),
    )
    .await;
    assert!(
        no_client_cert.starts_with("connect to 127.0.0.1:"),
        "{no_client_cert}"
    );
    let missing_ca = build(
        RedisSettings::new()
            .url(server.url())
            .tls_ca("/nonexistent/ca.pem"),
    )
    .await;
    assert!(
        missing_ca.contains("cannot read the TLS CA file /nonexistent/ca.pem"),
        "{missing_ca}"
    );
    let half = build(
        RedisSettings::new()
            .url(server.url())
            .tls_client_cert(tls.client_cert_path(), "/nonexistent/key.pem"),
    )
    .await;
    assert!(
        half.contains("client key file /nonexistent/key.pem"),
        "{half}"
    );
    let plain = build(
        RedisSettings::new()
            .url("redis://127.0.0.1:1")
            .tls_ca(tls.ca_cert_path()),
    )
    .await;
    assert!(plain.contains("the URL is not rediss://"), "{plain}");
    // The loudly named opt-out accepts the unknown CA (the server still wants a client cert).
    let insecure = RedisSettings::new()
        .url(server.url())
        .danger_accept_invalid_certificates()
        .tls_client_cert(tls.client_cert_path(), tls.client_key_path());
    RedisProducerBuilder::new()
        .settings(insecure.uri("x"))
        .build_ticks_producer()
        .await
        .unwrap();
}

#[tokio::test]
async fn every_connection_names_itself() {
    let redis = shared().await.unwrap();
    let uri = unique_name("names");
    let _producer = producer(redis.url(), &uri).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .group("billing")
        .name("billing-1")
        .subscribe_ticks_consumer(TickRecorder::new("c", tx))
        .await
        .unwrap();
    let _dead = DeadLetters::connect(redis.url(), None, &uri, "billing")
        .await
        .unwrap();
    let _admin = StreamAdmin::connect(redis.url(), None, &uri).await.unwrap();
    let _store = EventStoreBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build::<LedgerEvent>()
        .await
        .unwrap();
    let named = RedisProducerBuilder::new()
        .settings(
            RedisSettings::new()
                .url(redis.url())
                .uri(&uri)
                .client_name("svc with space"),
        )
        .build_ticks_producer()
        .await
        .unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut raw(redis.url()).await)
        .await
        .unwrap();
    for name in [
        format!("bb:producer:{uri}"),
        "bb:consumer:billing:billing-1".to_owned(),
        "bb:reader:billing:billing-1".to_owned(),
        format!("bb:dead-letters:{uri}:billing"),
        format!("bb:admin:{uri}"),
        format!("bb:store:{uri}"),
        "svc_with_space:producer".to_owned(),
    ] {
        assert!(
            list.contains(&format!(" name={name} ")),
            "no client named {name} in\n{list}"
        );
    }
    drop(named);
    lifetime.shutdown().await.unwrap();
}

const PASSWORD: &str = "Sup3rS3cretPW";

/// Every builder's error for `url`, and its `Debug`.
async fn errors_for(url: &str) -> Vec<String> {
    let settings = RedisSettings::new().url(url).uri("x");
    let mut texts = vec![
        format!("{settings:?}"),
        format!(
            "{:?}",
            RedisProducerBuilder::new().settings(settings.clone())
        ),
        format!("{:?}", RedisConsumerBuilder::new().url(url)),
        format!("{:?}", EventStoreBuilder::new().url(url)),
    ];
    let mut push = |e: Error| {
        texts.push(e.to_string());
        texts.push(format!("{e:?}"));
    };
    push(
        RedisProducerBuilder::new()
            .settings(settings.clone())
            .build_ticks_producer()
            .await
            .unwrap_err(),
    );
    let (tx, _rx) = mpsc::unbounded_channel();
    let consumer = RedisConsumerBuilder::new().settings(settings.clone());
    push(
        consumer
            .subscribe_ticks_consumer(TickRecorder::new("c", tx))
            .await
            .unwrap_err(),
    );
    let store = EventStoreBuilder::new().settings(settings.clone());
    push(store.build::<LedgerEvent>().await.unwrap_err());
    push(DeadLetters::connect(url, None, "x", "g").await.unwrap_err());
    push(StreamAdmin::connect(url, None, "x").await.unwrap_err());
    texts
}

#[tokio::test]
async fn passwords_show_nowhere() {
    let redis = shared().await.unwrap();
    let wrong = redis
        .url()
        .replacen("://", &format!("://nobody:{PASSWORD}@"), 1);
    for url in [
        format!("redis://bbuser:{PASSWORD}@127.0.0.1:99999"),
        format!("rediss://bbuser:{PASSWORD}@127.0.0.1:99999"),
        format!("redis://bbuser:{PASSWORD}@127.0.0.1:1/"),
        format!("rediss://bbuser:{PASSWORD}@127.0.0.1:1/"),
        format!("redis+unix:///nonexistent/redis.sock?user=bbuser&pass={PASSWORD}"),
        format!("redis://:{PASSWORD}@[::1"),
        wrong,
    ] {
        let texts = errors_for(&url).await;
        assert!(texts.len() > 8);
        for text in texts {
            assert!(!text.contains(PASSWORD), "{url}: {text}");
        }
    }
    let unparsable = errors_for(&format!("redis://bbuser:{PASSWORD}@127.0.0.1:99999")).await;
    assert!(
        unparsable
            .iter()
            .any(|t| t.contains("invalid Redis URL \"redis://bbuser:***@127.0.0.1:99999\"")),
        "{unparsable:?}"
    );
}
