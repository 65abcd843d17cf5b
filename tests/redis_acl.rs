//! Each role's ACL rule (`backbone_redis::acl`) with a real ACL user holding exactly that rule,
//! on a `redis-server` of this file's own: the role's whole workflow works; with one command
//! taken away, the error names the refused command; the password shows nowhere.

mod common;

use std::time::Duration;

use backbone_core::store::{
    Aggregate, AppendOptions, CachingPolicy, CheckpointPolicy, ExpectedVersion, Projection,
};
use backbone_core::{events_contract, Error, Metadata};
use backbone_redis::store::EventStoreBuilder;
use backbone_redis::testing::{unique_name, RedisServer, ServerOptions};
use backbone_redis::{acl, DeadLetters, RedisConsumerBuilder, RedisProducerBuilder, StreamAdmin};
use common::*;
use tokio::sync::mpsc;

/// A user `name` with `rule` on the keys of `uri`; returns its URL (password inside).
async fn user(server: &RedisServer, uri: &str, commands: &str, minus: &str) -> (String, String) {
    let name = unique_name("acl-user");
    let password = format!("Pw-{}", unique_name("secret"));
    let rule = acl::rule(commands, &format!("bb:{{{uri}}}:*"));
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER")
        .arg(&name)
        .arg("reset")
        .arg("on")
        .arg(format!(">{password}"));
    for part in rule
        .split(' ')
        .chain(minus.split(' ').filter(|m| !m.is_empty()))
    {
        cmd.arg(part);
    }
    let _: () = cmd.query_async(&mut raw(server.url()).await).await.unwrap();
    let url = server
        .url()
        .replacen("://", &format!("://{name}:{password}@"), 1);
    (url, password)
}

fn server() -> RedisServer {
    RedisServer::spawn(ServerOptions::default()).unwrap()
}

/// The error names `command` and never shows `password`.
fn refused(err: &Error, command: &str, password: &str) {
    let (text, debug) = (err.to_string(), format!("{err:?}"));
    let denied = ["NOPERM", "NoPerm", "no permissions"];
    assert!(denied.iter().any(|d| text.contains(d)), "{text}");
    assert!(
        text.to_lowercase().contains(command),
        "{text} does not name {command}"
    );
    assert!(
        !text.contains(password) && !debug.contains(password),
        "{text}"
    );
}

#[tokio::test]
async fn a_producer_needs_exactly_its_rule() {
    let server = server();
    let uri = unique_name("acl-producer");
    let (url, password) = user(&server, &uri, acl::PRODUCER, "").await;
    let producer = RedisProducerBuilder::new()
        .url(&url)
        .uri(&uri)
        .build_kinds_producer()
        .await
        .unwrap();
    producer.text("hello".into()).await.unwrap();
    producer.unit().await.unwrap(); // the sent-record path: EXISTS, SET
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw(server.url()).await)
        .await
        .unwrap();
    producer.text("after a script flush".into()).await.unwrap(); // SCRIPT LOAD
    let inline = RedisProducerBuilder::new()
        .url(&url)
        .uri(&uri)
        .build_inline_kinds_producer()
        .await
        .unwrap();
    inline.text("inline".into()).await.unwrap(); // the sequence record: GET, SET
    inline.unit().await.unwrap();
    assert_eq!(stream_ids(server.url(), &uri).await.len(), 5);

    let (url, password2) = user(&server, &uri, acl::PRODUCER, "-xadd").await;
    let producer = RedisProducerBuilder::new()
        .url(&url)
        .uri(&uri)
        .build_kinds_producer()
        .await
        .unwrap();
    let err = producer.text("refused".into()).await.unwrap_err();
    refused(&err, "xadd", &password2);
    assert!(!err.to_string().contains(&password));
}

#[tokio::test]
async fn a_consumer_needs_exactly_its_rule() {
    let server = server();
    let uri = unique_name("acl-consumer");
    let (url, _) = user(&server, &uri, acl::CONSUMER, "").await;
    let sender = producer(server.url(), &uri).await;
    send(&sender, 0..6).await;
    // A consumer that died holding ticks 0..6: the ACL user's consumer claims them.
    let mut admin = raw(server.url()).await;
    let stream = keys(&uri).stream().to_owned();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("0")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("ghost")
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut admin)
        .await
        .unwrap();
    send(&sender, 6..10).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut recorder = TickRecorder::new("acl", tx);
    recorder.fail = |n| n == 7; // retried, then dead-lettered
    let lifetime = RedisConsumerBuilder::new()
        .url(&url)
        .uri(&uri)
        .group("g")
        .name("acl-1")
        .claim_min_idle(Duration::from_millis(100))
        .remove_idle_consumers(Duration::from_millis(50))
        .group_metrics_interval(Duration::from_millis(100))
        .retry(quick_retry(2))
        .subscribe_ticks_consumer(recorder)
        .await
        .unwrap();
    let seen = collect(&mut rx, 9, WAIT).await;
    let mut ns: Vec<u64> = seen.iter().map(|s| s.n).collect();
    ns.sort();
    assert_eq!(ns, [0, 1, 2, 3, 4, 5, 6, 8, 9]);
    let dead = DeadLetters::connect(server.url(), None, &uri, "g")
        .await
        .unwrap();
    wait_dead_letters(&dead, 1).await;
    lifetime.shutdown().await.unwrap();

    let (url, password) = user(&server, &uri, acl::CONSUMER, "-xreadgroup").await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(&url)
        .uri(&uri)
        .group("g2")
        .subscribe_ticks_consumer(TickRecorder::new("refused", tx))
        .await
        .unwrap();
    let err = tokio::time::timeout(WAIT, lifetime.completion())
        .await
        .expect("a refused XREADGROUP ends the consumer")
        .unwrap_err();
    refused(&err, "xreadgroup", &password);

    // The group gauges' XINFO GROUPS refused: fatal like any other refusal.
    let (url, password) = user(&server, &uri, acl::CONSUMER, "-xinfo|groups").await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(&url)
        .uri(&uri)
        .group("g2")
        .group_metrics_interval(Duration::from_millis(100))
        .subscribe_ticks_consumer(TickRecorder::new("gauges", tx))
        .await
        .unwrap();
    let err = tokio::time::timeout(WAIT, lifetime.completion())
        .await
        .expect("a refused XINFO GROUPS ends the consumer")
        .unwrap_err();
    refused(&err, "xinfo groups", &password);

    // XADD refused on the dead-letter stream: the script checks before its XACK, so the
    // entry stays pending (not lost) and the consumer stops naming XADD.
    let (url, password) = user(&server, &uri, acl::CONSUMER, "-xadd").await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut recorder = TickRecorder::new("bury", tx);
    recorder.fail = |_| true;
    let lifetime = RedisConsumerBuilder::new()
        .url(&url)
        .uri(&uri)
        .group("g3")
        .retry(quick_retry(1))
        .subscribe_ticks_consumer(recorder)
        .await
        .unwrap();
    let err = tokio::time::timeout(WAIT, lifetime.completion())
        .await
        .expect("a refused dead-letter script ends the consumer")
        .unwrap_err();
    refused(&err, "xadd", &password);
    let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("g3")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(pending.0 >= 1, "the refused entry stays pending");
}

#[events_contract]
pub trait Ledger {
    async fn deposited(&self, cents: i64);
}

#[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
struct Balance {
    cents: i64,
}

impl Aggregate for Balance {
    type Event = LedgerEvent;
    const NAME: &'static str = "balance";
    fn apply(&mut self, LedgerEvent::Deposited { cents }: &LedgerEvent) {
        self.cents += cents;
    }
}

impl Projection for Balance {
    type Event = LedgerEvent;
    const NAME: &'static str = "total";
    fn apply(&mut self, LedgerEvent::Deposited { cents }: &LedgerEvent, _: &Metadata) {
        self.cents += cents;
    }
}

#[tokio::test]
async fn an_event_store_needs_exactly_its_rule() {
    let server = server();
    let uri = unique_name("acl-store");
    let (url, _) = user(&server, &uri, acl::EVENT_STORE, "").await;
    let store = EventStoreBuilder::new()
        .url(&url)
        .uri(&uri)
        .caching(CachingPolicy::EveryEvents(1))
        .build::<LedgerEvent>()
        .await
        .unwrap();
    let deposit = |cents| [LedgerEvent::Deposited { cents }];
    let once = AppendOptions::idempotent("first");
    store
        .append(
            "acc-1",
            ExpectedVersion::NoStream,
            &deposit(5),
            once.clone(),
        )
        .await
        .unwrap();
    let again = store
        .append("acc-1", ExpectedVersion::NoStream, &deposit(5), once)
        .await;
    assert!(again.unwrap().replayed);
    store
        .append(
            "acc-1",
            ExpectedVersion::Exact(1),
            &deposit(7),
            AppendOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(store.read("acc-1", 1, 10).await.unwrap().events.len(), 2);
    assert_eq!(
        store.load::<Balance>("acc-1").await.unwrap().state.cents,
        12
    );
    tokio::time::sleep(Duration::from_millis(200)).await; // the snapshot, written in the background
    assert_eq!(
        store.load::<Balance>("acc-1").await.unwrap().state.cents,
        12
    );
    let projection = store
        .project::<Balance>(CheckpointPolicy::default())
        .await
        .unwrap();
    projection.caught_up().await.unwrap();
    assert_eq!(projection.state().cents, 12);
    projection.shutdown().await.unwrap();
    assert!(store.checkpoint::<Balance>().await.unwrap().is_some());
    let stats = store.stats(Duration::from_secs(60)).await.unwrap();
    assert_eq!(stats.appended, 2);
    let now = backbone_core::metadata::now_millis();
    assert_eq!(store.count_between(0, now + 1000).await.unwrap(), 2);

    let (url, password) = user(&server, &uri, acl::EVENT_STORE, "-xadd").await;
    let store = EventStoreBuilder::new()
        .url(&url)
        .uri(&uri)
        .build::<LedgerEvent>()
        .await
        .unwrap();
    let err = store
        .append(
            "acc-2",
            ExpectedVersion::Any,
            &deposit(1),
            AppendOptions::default(),
        )
        .await
        .unwrap_err();
    refused(&err, "xadd", &password);
}

#[tokio::test]
async fn an_admin_needs_exactly_its_rule() {
    let server = server();
    let uri = unique_name("acl-admin");
    // As the default user: ticks handled by group g, ticks 2 and 4 dead-lettered.
    let sender = producer(server.url(), &uri).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut recorder = TickRecorder::new("g", tx);
    recorder.fail = |n| n == 2 || n == 4;
    let lifetime = RedisConsumerBuilder::new()
        .url(server.url())
        .uri(&uri)
        .group("g")
        .retry(quick_retry(1))
        .subscribe_ticks_consumer(recorder)
        .await
        .unwrap();
    send(&sender, 0..5).await;
    collect(&mut rx, 3, WAIT).await;
    let (url, password) = user(&server, &uri, acl::ADMIN, "").await;
    let dead = DeadLetters::connect(&url, None, &uri, "g").await.unwrap();
    wait_dead_letters(&dead, 2).await;
    lifetime.shutdown().await.unwrap();

    let letters = dead.list(None, 10).await.unwrap();
    assert_eq!(letters.len(), 2);
    assert!(dead.get(&letters[0].id).await.unwrap().is_some());
    dead.replay(&letters[0].id).await.unwrap();
    assert_eq!(dead.len().await.unwrap(), 1);
    let (refused_url, password2) = user(&server, &uri, acl::ADMIN, "-xtrim").await;
    let refused_admin = StreamAdmin::connect(&refused_url, None, &uri)
        .await
        .unwrap();
    let err = refused_admin.trim(0).await.unwrap_err();
    refused(&err, "xtrim", &password2);
    assert!(!err.to_string().contains(&password));
    let admin = StreamAdmin::connect(&url, None, &uri).await.unwrap();
    assert_eq!(admin.len().await.unwrap(), 6);
    admin.trim_before("1").await.unwrap();
    let report = admin.trim(0).await.unwrap();
    // Group g has not read the replayed entry: it holds the trim back there.
    assert_eq!(
        (report.entries, report.held_back_by.as_deref()),
        (5, Some("g"))
    );
    // Purging tick 4's dead letter, its last reference, releases its payload.
    assert!(dead.purge(&letters[1].id).await.unwrap());
    assert_eq!(dead.purge_all().await.unwrap(), 0);
    // An orphaned object, two hours old: the sweep reads the holds and deletes it.
    let objects = backbone_core::objects::ObjectStorage::in_memory().threshold(4);
    let mut fields = backbone_core::Fields::new();
    fields.set("s", b"\"an orphan\"".to_vec());
    let orphan = created_ago(Duration::from_secs(7200), 1);
    let stream = admin.keys().stream().to_owned();
    objects
        .offload(&stream, &orphan, &mut fields)
        .await
        .unwrap();
    let admin = admin.object_store(objects);
    let hour = Duration::from_secs(3600);
    assert_eq!(admin.delete_orphan_objects(hour).await.unwrap(), 1);
}

#[test]
fn the_readme_lists_every_rule() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (role, rule) in [
        ("producer", acl::PRODUCER),
        ("consumer", acl::CONSUMER),
        ("event store", acl::EVENT_STORE),
        ("admin", acl::ADMIN),
        ("forgetter", acl::FORGETTER),
    ] {
        // In a Markdown table cell, `|` is written `\|`.
        let cell = rule.replace('|', "\\|");
        assert!(
            readme.contains(&cell),
            "the README lacks the {role} rule `{cell}`"
        );
    }
}

#[tokio::test]
async fn a_producer_fails_at_once_when_its_password_is_rotated() {
    let server = server();
    let uri = unique_name("acl-rotated");
    let (url, password) = user(&server, &uri, acl::PRODUCER, "").await;
    let producer = RedisProducerBuilder::new()
        .url(&url)
        .uri(&uri)
        .send_timeout(Duration::from_secs(30))
        .build_ticks_producer()
        .await
        .unwrap();
    producer.tick(1).await.unwrap();
    let name = url
        .split("://")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    let mut admin = raw(server.url()).await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&name)
        .arg("resetpass")
        .arg(">rotated-elsewhere")
        .query_async(&mut admin)
        .await
        .unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg(&name)
        .query_async(&mut admin)
        .await
        .unwrap();
    let err = producer.tick(2).await.unwrap_err().to_string();
    // Not retried for the 30 s send_timeout: lost authentication is fatal.
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("gave up after"), "{err}");
    assert!(!err.contains(&password), "{err}");
}

#[events_contract]
pub trait Members {
    async fn joined(&self, #[subject] member: String, #[personal] email: String);
    async fn seen(&self, #[subject] member: String, #[personal(ttl = "1h")] ip: String);
}

struct Joined(mpsc::UnboundedSender<Option<String>>);

#[backbone_core::async_trait]
impl MembersConsumer for Joined {
    async fn joined(
        &self,
        _: &backbone_core::ConsumerContext,
        _member: String,
        email: backbone_core::personal::Personal<String>,
    ) -> backbone_core::HandlerResult {
        let _ = self.0.send(email.into_known());
        Ok(())
    }

    async fn seen(
        &self,
        _: &backbone_core::ConsumerContext,
        _member: String,
        ip: backbone_core::personal::Personal<String>,
    ) -> backbone_core::HandlerResult {
        let _ = self.0.send(ip.into_known());
        Ok(())
    }
}

#[tokio::test]
async fn personal_data_needs_the_key_store_keys_and_refusal_is_fatal() {
    let server = server();
    let uri = unique_name("acl-keys");
    let sealing = acl::key_store_keys("bbkeys:", true);
    let (url, _) = user(&server, &uri, acl::PRODUCER, &sealing).await;
    let producer = RedisProducerBuilder::new()
        .url(&url)
        .uri(&uri)
        .build_members_producer()
        .await
        .unwrap();
    producer
        .joined("m-1".into(), "m1@example.com".into())
        .await
        .unwrap();
    // An expiring key takes PERSONAL_TTL too.
    let err = producer
        .seen("m-1".into(), "10.0.0.1".into())
        .await
        .unwrap_err();
    refused(&err, "sadd", "never shown");
    let with_ttl = format!("{sealing} {}", acl::PERSONAL_TTL);
    let (url, _) = user(&server, &uri, acl::PRODUCER, &with_ttl).await;
    RedisProducerBuilder::new()
        .url(&url)
        .uri(&uri)
        .build_members_producer()
        .await
        .unwrap()
        .seen("m-1".into(), "10.0.0.1".into())
        .await
        .unwrap();
    let reading = acl::key_store_keys("bbkeys:", false);
    let (url, _) = user(&server, &uri, acl::CONSUMER, &reading).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(&url)
        .uri(&uri)
        .group("readers")
        .max_messages(2)
        .subscribe_members_consumer(Joined(tx))
        .await
        .unwrap();
    lifetime.completion().await.unwrap();
    assert_eq!(rx.recv().await.unwrap().as_deref(), Some("m1@example.com"));
    assert_eq!(rx.recv().await.unwrap().as_deref(), Some("10.0.0.1"));

    // Without the key store's keys: the send and the consumer fail at once with NOPERM.
    let (url, password) = user(&server, &uri, acl::PRODUCER, "").await;
    let producer = RedisProducerBuilder::new()
        .url(&url)
        .uri(&uri)
        .send_timeout(Duration::from_secs(30))
        .build_members_producer()
        .await
        .unwrap();
    let err = producer
        .joined("m-2".into(), "m2@example.com".into())
        .await
        .unwrap_err();
    refused(&err, "bbkeys:{m-2}", &password);
    let (url, password) = user(&server, &uri, acl::CONSUMER, "").await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(&url)
        .uri(&uri)
        .group("blind")
        .subscribe_members_consumer(Joined(tx))
        .await
        .unwrap();
    let err = tokio::time::timeout(WAIT, lifetime.completion())
        .await
        .expect("a NOPERM on the key store ends the consumer")
        .unwrap_err();
    refused(&err, "bbkeys:{m-1}", &password);
    // And forgetting takes its own rule.
    let (url, _) = user(&server, &uri, acl::FORGETTER, &sealing).await;
    let connection = backbone_redis::RedisSettings::new()
        .url(&url)
        .open_connection("forget")
        .await
        .unwrap();
    let keys = backbone_redis::RedisKeyStore::new(connection);
    use backbone_core::personal::KeyStore;
    assert!(keys.forget("m-1").await.unwrap());
}
