//! Bad events on the store's read path, over real Redis: a parameter that does not decode, a
//! missing payload hash, an unknown operation or version, a malformed entry, and a `payload`
//! field naming a key outside the stream's payload hashes. Every read (`read`, `stream`,
//! `load`, `load_uncached`, `read_between`) fails with an error naming the aggregate, the
//! version and the position, and that is still a bad event, so projections stop at it.

mod common;

use backbone_core::store::{Aggregate, AppendOptions, CachingPolicy, CheckpointPolicy};
use backbone_core::store::{ExpectedVersion, Projection};
use backbone_core::{events_contract, Error, MessageId, Metadata};
use backbone_redis::store::{EventStore, EventStoreBuilder};
use backbone_redis::testing::{shared, unique_name};
use common::raw;
use futures::TryStreamExt;
use redis::aio::MultiplexedConnection;

#[events_contract]
pub trait Account {
    async fn deposited(&self, cents: i64);
    async fn closed(&self);
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Balance {
    cents: i64,
}

impl Aggregate for Balance {
    type Event = AccountEvent;
    const NAME: &'static str = "balance-v1";
    fn apply(&mut self, event: &AccountEvent) {
        if let AccountEvent::Deposited { cents } = event {
            self.cents += cents;
        }
    }
}

impl Projection for Balance {
    type Event = AccountEvent;
    const NAME: &'static str = "balance-v1";
    fn apply(&mut self, event: &AccountEvent, _: &Metadata) {
        Aggregate::apply(self, event);
    }
}

struct Fixture {
    store: EventStore<AccountEvent>,
    conn: MultiplexedConnection,
}

/// A store whose aggregate `acc` holds one good event (version 1).
async fn fixture() -> Fixture {
    let redis = shared().await.unwrap();
    let store = EventStoreBuilder::new()
        .url(redis.url())
        .uri(unique_name("bad-events"))
        .caching(CachingPolicy::Never)
        .build::<AccountEvent>()
        .await
        .unwrap();
    let good = [AccountEvent::Deposited { cents: 5 }];
    store
        .append(
            "acc",
            ExpectedVersion::NoStream,
            &good,
            AppendOptions::default(),
        )
        .await
        .unwrap();
    Fixture {
        store,
        conn: raw(redis.url()).await,
    }
}

impl Fixture {
    /// Writes event 2 of `acc` as the append script would, with `fields` (and the store's own
    /// fields); returns its position in the contract's stream.
    async fn inject(&mut self, fields: &[(&str, &str)]) -> String {
        let mut fields: Vec<(&str, &str)> = fields.to_vec();
        fields.extend([
            ("aggregate", "acc"),
            ("aggregate_version", "2"),
            ("key", "acc"),
        ]);
        let position: String = redis::cmd("XADD")
            .arg(self.store.keys().stream())
            .arg("*")
            .arg(&fields)
            .query_async(&mut self.conn)
            .await
            .unwrap();
        fields.push(("position", &position));
        let _: String = redis::cmd("XADD")
            .arg(self.store.keys().aggregate("acc"))
            .arg("0-2")
            .arg(&fields)
            .query_async(&mut self.conn)
            .await
            .unwrap();
        position
    }

    async fn hset(&mut self, key: &str, field: &str, value: &str) {
        let _: () = redis::cmd("HSET")
            .arg(key)
            .arg(field)
            .arg(value)
            .query_async(&mut self.conn)
            .await
            .unwrap();
    }

    /// The error of every read path, each checked to name event 2 of `acc` at `position`;
    /// returns the source errors.
    async fn every_read_fails(&self, position: &str) -> Vec<Error> {
        let store = &self.store;
        let errors = vec![
            ("read", store.read("acc", 1, 100).await.unwrap_err()),
            (
                "stream",
                store
                    .stream("acc", 1)
                    .try_collect::<Vec<_>>()
                    .await
                    .unwrap_err(),
            ),
            ("load", store.load::<Balance>("acc").await.unwrap_err()),
            (
                "load_uncached",
                store.load_uncached::<Balance>("acc").await.unwrap_err(),
            ),
            (
                "read_between",
                store
                    .read_between(0, u64::MAX, None, 100)
                    .await
                    .unwrap_err(),
            ),
        ];
        let mut sources = Vec::new();
        for (path, err) in errors {
            let text = err.to_string();
            assert!(err.is_bad_event(), "{path}: {text}");
            assert!(
                text.starts_with(&format!(
                    "stored event (aggregate `acc`, version 2, position {position}): "
                )),
                "{path}: {text}"
            );
            let Error::BadStoredEvent {
                aggregate,
                version,
                position: at,
                source,
            } = err
            else {
                panic!("{path}: {text}");
            };
            assert_eq!(
                (aggregate.as_deref(), version, at.as_deref()),
                (Some("acc"), Some(2), Some(position)),
                "{path}"
            );
            assert!(source.is_bad_event(), "{path}: {source}");
            sources.push(*source);
        }
        sources
    }
}

fn payload(store: &EventStore<AccountEvent>) -> (String, String) {
    let id = MessageId::new();
    (id.to_string(), store.keys().payload(&id))
}

#[tokio::test]
async fn a_parameter_that_does_not_decode_names_the_event() {
    let mut f = fixture().await;
    let (id, key) = payload(&f.store);
    f.hset(&key, "cents", "\"seven\"").await;
    let position = f
        .inject(&[
            ("message_id", &id),
            ("operation", "deposited"),
            ("version", "0"),
            ("produced_at", "1"),
            ("payload", &key),
        ])
        .await;
    for source in f.every_read_fails(&position).await {
        assert!(matches!(source, Error::Decode { .. }), "{source:?}");
        assert!(
            source
                .to_string()
                .starts_with("cannot decode parameter `cents` of operation `deposited`: "),
            "{source}"
        );
    }
}

#[tokio::test]
async fn a_missing_payload_names_the_event_and_the_key() {
    let mut f = fixture().await;
    let (id, key) = payload(&f.store);
    let position = f
        .inject(&[
            ("message_id", &id),
            ("operation", "deposited"),
            ("version", "0"),
            ("produced_at", "1"),
            ("payload", &key),
        ])
        .await;
    for source in f.every_read_fails(&position).await {
        let Error::MissingPayload { key: missing, .. } = &source else {
            panic!("{source:?}");
        };
        assert_eq!(missing, &key);
    }
}

#[tokio::test]
async fn an_unknown_operation_or_version_names_the_event() {
    for (operation, version) in [("withdrawn", "0"), ("closed", "9")] {
        let mut f = fixture().await;
        let id = MessageId::new().to_string();
        let position = f
            .inject(&[
                ("message_id", &id),
                ("operation", operation),
                ("version", version),
                ("produced_at", "1"),
            ])
            .await;
        for source in f.every_read_fails(&position).await {
            assert!(
                matches!(&source, Error::UnknownOperation { operation: o, .. } if o == operation),
                "{source:?}"
            );
            assert!(
                source
                    .to_string()
                    .ends_with(&format!("has no operation `{operation}` version {version}")),
                "{source}"
            );
        }
    }
}

#[tokio::test]
async fn a_malformed_entry_names_the_event() {
    let mut f = fixture().await;
    let position = f
        .inject(&[
            ("operation", "closed"),
            ("version", "0"),
            ("produced_at", "1"),
        ])
        .await;
    for source in f.every_read_fails(&position).await {
        assert!(matches!(source, Error::MalformedEntry { .. }), "{source:?}");
        assert!(
            source
                .to_string()
                .ends_with("field `message_id` is missing"),
            "{source}"
        );
    }
}

#[tokio::test]
async fn a_payload_key_outside_the_stream_s_payloads_is_never_read() {
    let mut f = fixture().await;
    let id = MessageId::new().to_string();
    // A hash that would decode: reading it would make the reads succeed.
    let foreign = format!("{}-elsewhere:{id}", unique_name("secret"));
    f.hset(&foreign, "cents", "1000000").await;
    let prefix = f.store.keys().payload_prefix();
    // Another stream's payload hash, and the bare prefix, are outside too.
    let other_stream = format!("bb:{{other}}:payload:{id}");
    f.hset(&other_stream, "cents", "1000000").await;
    for (n, key) in [foreign.as_str(), other_stream.as_str(), prefix.as_str()]
        .into_iter()
        .enumerate()
    {
        if n > 0 {
            f = fixture().await;
        }
        let position = f
            .inject(&[
                ("message_id", &id),
                ("operation", "deposited"),
                ("version", "0"),
                ("produced_at", "1"),
                ("payload", key),
            ])
            .await;
        for source in f.every_read_fails(&position).await {
            assert!(matches!(source, Error::MalformedEntry { .. }), "{source:?}");
            let text = source.to_string();
            assert!(
                text.contains(&format!("field `payload` names key {key:?}, outside")),
                "{text}"
            );
        }
    }
    // A projection stops at it too, naming the key.
    let handle = f
        .store
        .project::<Balance>(CheckpointPolicy::default())
        .await
        .unwrap();
    let err = handle.caught_up().await.unwrap_err().to_string();
    assert!(
        err.starts_with("projection `balance-v1` stopped: "),
        "{err}"
    );
    assert!(err.contains(&format!("names key {prefix:?}")), "{err}");
    assert_eq!(
        handle.state().cents,
        5,
        "the good event before it is applied"
    );
    assert!(handle.shutdown().await.is_err());
}
