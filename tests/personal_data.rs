//! Personal data that can be forgotten: `#[personal]` parameters are sealed with the data
//! subject's key; after `forget` every read yields `Personal::Forgotten` (consumers, the event
//! store, aggregates, replayed dead letters), and the data is nowhere in Redis in the clear.

mod common;

use std::time::Duration;

use backbone_core::personal::{KeyStore, Personal};
use backbone_core::store::{AppendOptions, CachingPolicy, ExpectedVersion};
use backbone_core::{async_trait, events_contract, ConsumerContext, Error, HandlerResult};
use backbone_core::{memory::InMemoryBroker, HandlerError};
use backbone_redis::store::EventStoreBuilder;
use backbone_redis::testing::{shared, unique_name, RedisServer, ServerOptions};
use backbone_redis::{DeadLetters, RedisConsumerBuilder, RedisKeyStore, RedisProducerBuilder};
use common::WAIT;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// The address the tests look for, everywhere.
const EMAIL: &str = "ada.lovelace.7f3a@example.com";
/// A marker in a parameter that is not personal: found in the clear, it proves the search.
const PLAN: &str = "plan-marker-91c2-not-personal";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    pub age: Option<u8>,
    pub tags: Vec<String>,
}

#[events_contract]
pub trait Customers {
    async fn registered(
        &self,
        #[subject] customer: String,
        #[personal] email: String,
        #[personal] profile: Profile,
        plan: String,
    );
    async fn email_changed(&self, #[subject] customer: String, #[personal] email: String);
    async fn noted(&self, #[personal] note: Option<String>, #[personal] score: i64, count: u32);
    async fn visited(
        &self,
        #[subject] customer: String,
        #[personal(ttl = "2s")] ip: String,
        #[personal(ttl = "1d")] page: String,
    );
}

fn profile() -> Profile {
    Profile {
        name: "Ada \"Countess\" Lovelace".into(),
        age: Some(36),
        tags: vec!["math".into(), "ü\n".into()],
    }
}

/// What a consumer saw: the operation and its personal values (as text, `None` forgotten).
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    operation: &'static str,
    subject: Option<String>,
    values: Vec<Option<String>>,
    plain: String,
}

fn shown<T: std::fmt::Debug>(value: &Personal<T>) -> Option<String> {
    value.known().map(|v| format!("{v:?}"))
}

/// Records everything; fails `email_changed` while `fail` is set (to dead-letter it).
struct Recorder {
    tx: mpsc::UnboundedSender<Seen>,
    fail: bool,
}

#[async_trait]
impl CustomersConsumer for Recorder {
    async fn registered(
        &self,
        ctx: &ConsumerContext,
        customer: String,
        email: Personal<String>,
        profile: Personal<Profile>,
        plan: String,
    ) -> HandlerResult {
        let _ = self.tx.send(Seen {
            operation: "registered",
            subject: ctx.metadata().subject.clone(),
            values: vec![shown(&email), shown(&profile)],
            plain: format!("{customer} {plan}"),
        });
        Ok(())
    }

    async fn email_changed(
        &self,
        ctx: &ConsumerContext,
        customer: String,
        email: Personal<String>,
    ) -> HandlerResult {
        if self.fail {
            return Err(HandlerError::fatal("mail server refused the change"));
        }
        let _ = self.tx.send(Seen {
            operation: "email_changed",
            subject: ctx.metadata().subject.clone(),
            values: vec![shown(&email)],
            plain: customer,
        });
        Ok(())
    }

    async fn visited(
        &self,
        _: &ConsumerContext,
        _: String,
        _: Personal<String>,
        _: Personal<String>,
    ) -> HandlerResult {
        Ok(())
    }

    async fn noted(
        &self,
        ctx: &ConsumerContext,
        note: Personal<Option<String>>,
        score: Personal<i64>,
        count: u32,
    ) -> HandlerResult {
        let _ = self.tx.send(Seen {
            operation: "noted",
            subject: ctx.metadata().subject.clone(),
            values: vec![shown(&note), shown(&score)],
            plain: count.to_string(),
        });
        Ok(())
    }
}

#[async_trait]
impl CustomersConsumer for Visits {
    async fn registered(
        &self,
        _: &ConsumerContext,
        _: String,
        _: Personal<String>,
        _: Personal<Profile>,
        _: String,
    ) -> HandlerResult {
        Ok(())
    }
    async fn email_changed(
        &self,
        _: &ConsumerContext,
        _: String,
        _: Personal<String>,
    ) -> HandlerResult {
        Ok(())
    }
    async fn noted(
        &self,
        _: &ConsumerContext,
        _: Personal<Option<String>>,
        _: Personal<i64>,
        _: u32,
    ) -> HandlerResult {
        Ok(())
    }
    async fn visited(
        &self,
        _: &ConsumerContext,
        _: String,
        ip: Personal<String>,
        page: Personal<String>,
    ) -> HandlerResult {
        let _ = self.0.send((ip.into_known(), page.into_known()));
        Ok(())
    }
}

/// Records the `visited` events' personal values.
struct Visits(mpsc::UnboundedSender<(Option<String>, Option<String>)>);

async fn take(rx: &mut mpsc::UnboundedReceiver<Seen>, n: usize) -> Vec<Seen> {
    let mut seen = Vec::new();
    while seen.len() < n {
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(s)) => seen.push(s),
            _ => panic!("only {} of {n} events: {seen:?}", seen.len()),
        }
    }
    seen
}

fn known(operation: &'static str, values: &[&str], plain: &str) -> Seen {
    Seen {
        operation,
        subject: Some("customer-42".into()),
        values: values.iter().map(|v| Some((*v).to_owned())).collect(),
        plain: plain.to_owned(),
    }
}

fn forgotten(operation: &'static str, n: usize, plain: &str) -> Seen {
    Seen {
        operation,
        subject: Some("customer-42".into()),
        values: vec![None; n],
        plain: plain.to_owned(),
    }
}

async fn send_all(producer: &CustomersProducer) -> Result<(), Error> {
    producer
        .registered("customer-42".into(), EMAIL.into(), profile(), PLAN.into())
        .await?;
    producer
        .with_subject("customer-42")
        .noted(Some(format!("called from {EMAIL}")), -7, 3)
        .await?;
    Ok(())
}

fn expected_known() -> Vec<Seen> {
    vec![
        known(
            "registered",
            &[&format!("{EMAIL:?}"), &format!("{:?}", profile())],
            &format!("customer-42 {PLAN}"),
        ),
        known(
            "noted",
            &[&format!("{:?}", Some(format!("called from {EMAIL}"))), "-7"],
            "3",
        ),
    ]
}

fn expected_forgotten() -> Vec<Seen> {
    vec![
        forgotten("registered", 2, &format!("customer-42 {PLAN}")),
        forgotten("noted", 2, "3"),
    ]
}

#[tokio::test]
async fn in_memory_personal_parameters_round_trip_and_are_forgotten() {
    let broker = InMemoryBroker::new();
    let producer = broker
        .producer_builder()
        .uri("customers")
        .build_customers_producer()
        .await
        .unwrap();
    send_all(&producer).await.unwrap();
    let consume = |group: &'static str| {
        let (tx, rx) = mpsc::unbounded_channel();
        let broker = broker.clone();
        async move {
            let lifetime = broker
                .consumer_builder()
                .uri("customers")
                .group(group)
                .max_messages(2)
                .subscribe_customers_consumer(Recorder { tx, fail: false })
                .await
                .unwrap();
            lifetime.completion().await.unwrap();
            rx
        }
    };
    let mut rx = consume("before").await;
    assert_eq!(take(&mut rx, 2).await, expected_known());
    assert!(broker.key_store().forget("customer-42").await.unwrap());
    let mut rx = consume("after").await;
    assert_eq!(take(&mut rx, 2).await, expected_forgotten());
}

#[tokio::test]
async fn a_send_needs_a_subject_and_a_forgotten_value_cannot_be_sent() {
    let broker = InMemoryBroker::new();
    let producer = broker
        .producer_builder()
        .uri("customers")
        .build_customers_producer()
        .await
        .unwrap();
    let err = producer.noted(None, 1, 1).await.unwrap_err();
    assert!(
        matches!(&err, Error::NoSubject { operation } if operation == "noted"),
        "{err}"
    );
    let forgotten = CustomersEvent::EmailChanged {
        customer: "c".into(),
        email: Personal::Forgotten,
    };
    let err = producer.producer().send(&forgotten).await.unwrap_err();
    assert!(err.to_string().contains("forgotten"), "{err}");
    let err = producer
        .with_subject("bad\nsubject")
        .noted(None, 1, 1)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("control character"), "{err}");
    assert_eq!(broker.len(None, "customers"), 0);
}

#[tokio::test]
async fn redis_consumers_see_personal_values_until_the_subject_is_forgotten() {
    let redis = shared().await.unwrap();
    let uri = unique_name("personal");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_customers_producer()
        .await
        .unwrap();
    send_all(&producer).await.unwrap();
    let consume = |group: &'static str| {
        let (tx, rx) = mpsc::unbounded_channel();
        let (url, uri) = (redis.url().to_owned(), uri.clone());
        async move {
            let lifetime = RedisConsumerBuilder::new()
                .url(url)
                .uri(uri)
                .group(group)
                .max_messages(2)
                .subscribe_customers_consumer(Recorder { tx, fail: false })
                .await
                .unwrap();
            lifetime.completion().await.unwrap();
            rx
        }
    };
    let mut rx = consume("before").await;
    assert_eq!(take(&mut rx, 2).await, expected_known());
    let keys = RedisKeyStore::new(common::inspect(redis.url()).await);
    assert!(keys.forget("customer-42").await.unwrap());
    assert!(!keys.forget("customer-42").await.unwrap(), "forgotten once");
    let mut rx = consume("after").await;
    assert_eq!(take(&mut rx, 2).await, expected_forgotten());

    // A new event of the subject gets a new key and is readable; the old stay forgotten. A
    // producer reuses a key for sealing for up to 10 s (`sealing_cache`), so the one that
    // sealed with the deleted key just now still does: that event is forgotten too.
    producer
        .registered("customer-42".into(), EMAIL.into(), profile(), PLAN.into())
        .await
        .unwrap();
    let uncached =
        RedisKeyStore::new(common::inspect(redis.url()).await).sealing_cache(Duration::ZERO);
    RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .key_store(std::sync::Arc::new(uncached))
        .build_customers_producer()
        .await
        .unwrap()
        .registered("customer-42".into(), EMAIL.into(), profile(), PLAN.into())
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .group("later")
        .max_messages(4)
        .subscribe_customers_consumer(Recorder { tx, fail: false })
        .await
        .unwrap();
    lifetime.completion().await.unwrap();
    let seen = take(&mut rx, 4).await;
    assert_eq!(seen[..2], expected_forgotten()[..]);
    assert_eq!(
        seen[2],
        expected_forgotten()[0],
        "sealed with the cached, deleted key"
    );
    assert_eq!(seen[3], expected_known()[0]);
}

#[tokio::test]
async fn an_altered_ciphertext_is_dead_lettered_without_showing_anything() {
    let redis = shared().await.unwrap();
    let uri = unique_name("altered");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_customers_producer()
        .await
        .unwrap();
    producer
        .email_changed("customer-9".into(), EMAIL.into())
        .await
        .unwrap();
    // Swap the sealed e-mail for another value.
    let mut conn = common::raw(redis.url()).await;
    let hashes: Vec<String> = redis::cmd("KEYS")
        .arg(format!("bb:{{{uri}}}:payload:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let sealed: String = redis::cmd("HGET")
        .arg(&hashes[0])
        .arg("email")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        sealed.starts_with("v1.") && !sealed.contains("ada"),
        "{sealed}"
    );
    let (head, _) = sealed.rsplit_once('.').unwrap();
    let altered = format!("{head}.{}", "A".repeat(60));
    let _: () = redis::cmd("HSET")
        .arg(&hashes[0])
        .arg("email")
        .arg(&altered)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let _lifetime = RedisConsumerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .subscribe_customers_consumer(Recorder { tx, fail: false })
        .await
        .unwrap();
    let dead = DeadLetters::connect(redis.url(), None, &uri, "default")
        .await
        .unwrap();
    common::wait_dead_letters(&dead, 1).await;
    let letter = dead.list(None, 10).await.unwrap().remove(0);
    assert_eq!(
        letter.reason,
        "personal parameter `email` cannot be decrypted: authentication failed (the value was \
         altered, or sealed for another event)"
    );
}

/// The aggregate keeps the e-mail in its state: a derived copy that `forget` cannot reach.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Customer {
    email: Option<Personal<String>>,
    plan: String,
    changes: u32,
}

impl backbone_core::store::Aggregate for Customer {
    type Event = CustomersEvent;
    const NAME: &'static str = "customer-v1";
    fn apply(&mut self, event: &CustomersEvent) {
        match event {
            CustomersEvent::Registered { email, plan, .. } => {
                self.email = Some(email.clone());
                self.plan = plan.clone();
            }
            CustomersEvent::EmailChanged { email, .. } => {
                self.email = Some(email.clone());
                self.changes += 1;
            }
            CustomersEvent::Noted { .. } | CustomersEvent::Visited { .. } => {}
        }
    }
}

/// Every key's `DUMP`, and the RDB file after `SAVE`, searched for `needle`: where it is.
async fn find_in_redis(server: &RedisServer, needle: &str) -> Vec<String> {
    let mut conn = common::raw(server.url()).await;
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut found = Vec::new();
    for key in keys {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let name = String::from_utf8_lossy(&key).into_owned();
        if contains(&dump, needle.as_bytes()) || name.contains(needle) {
            found.push(name);
        }
    }
    let _: () = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
    let rdb = std::fs::read(server.dir().join("dump.rdb")).expect("SAVE wrote dump.rdb");
    if contains(&rdb, needle.as_bytes()) {
        found.push("dump.rdb".into());
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn after_forget_the_address_is_nowhere_in_redis_in_the_clear() {
    // A server of its own, whose RDB file is not compressed (LZF would hide a clear value).
    let server = tokio::task::spawn_blocking(|| {
        RedisServer::spawn(ServerOptions {
            extra_args: vec!["--rdbcompression".into(), "no".into()],
            ..Default::default()
        })
    })
    .await
    .unwrap()
    .unwrap();
    let url = server.url().to_owned();
    let uri = "customers";
    let producer = RedisProducerBuilder::new()
        .url(&url)
        .uri(uri)
        .build_customers_producer()
        .await
        .unwrap();
    let store = EventStoreBuilder::new()
        .url(&url)
        .uri(uri)
        .caching(CachingPolicy::EveryEvents(1))
        .build::<CustomersEvent>()
        .await
        .unwrap();
    // Events through a producer and through the store.
    send_all(&producer).await.unwrap();
    let events = [
        CustomersEvent::Registered {
            customer: "customer-42".into(),
            email: Personal::Known(EMAIL.into()),
            profile: Personal::Known(profile()),
            plan: PLAN.into(),
        },
        CustomersEvent::EmailChanged {
            customer: "customer-42".into(),
            email: Personal::Known(format!("new.{EMAIL}")),
        },
    ];
    store
        .append(
            "customer-42",
            ExpectedVersion::NoStream,
            &events,
            AppendOptions::default(),
        )
        .await
        .unwrap();
    // One consumer group reads everything and dead-letters the e-mail change.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(&url)
        .uri(uri)
        .group("mailer")
        .subscribe_customers_consumer(Recorder { tx, fail: true })
        .await
        .unwrap();
    let seen = take(&mut rx, 3).await;
    assert_eq!(seen[..2], expected_known()[..]);
    let dead = DeadLetters::connect(&url, None, uri, "mailer")
        .await
        .unwrap();
    common::wait_dead_letters(&dead, 1).await;
    lifetime.shutdown().await.unwrap();
    // A snapshot of the aggregate, holding the (new) address in the clear.
    let loaded = store.load::<Customer>("customer-42").await.unwrap();
    let new_email = format!("new.{EMAIL}");
    assert_eq!(loaded.state.email, Some(Personal::Known(new_email.clone())));
    let deadline = tokio::time::Instant::now() + WAIT;
    while store
        .snapshot::<Customer>("customer-42")
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The search works: the plain marker is found, and the derived copy in the snapshot.
    let snapshot_key = store.keys().snapshot(
        <Customer as backbone_core::store::Aggregate>::NAME,
        "customer-42",
    );
    assert!(!find_in_redis(&server, PLAN).await.is_empty());
    assert_eq!(
        find_in_redis(&server, EMAIL).await,
        [snapshot_key, "dump.rdb".to_owned()]
    );

    // Forget the subject, and drop the derived copy.
    let keys = RedisKeyStore::new(common::inspect(&url).await);
    assert!(keys.forget("customer-42").await.unwrap());
    assert!(store
        .delete_snapshot::<Customer>("customer-42")
        .await
        .unwrap());
    assert_eq!(find_in_redis(&server, EMAIL).await, Vec::<String>::new());
    assert_eq!(
        find_in_redis(&server, "Countess").await,
        Vec::<String>::new()
    );
    assert!(
        find_in_redis(&server, PLAN).await.len() >= 2,
        "the rest stays"
    );

    // Every read now yields forgotten values, and the events and their order stay.
    let reloaded = store
        .load_uncached::<Customer>("customer-42")
        .await
        .unwrap();
    assert_eq!(reloaded.version, 2);
    assert_eq!(reloaded.state.email, Some(Personal::Forgotten));
    assert_eq!(reloaded.state.plan, PLAN);
    let read = store.read("customer-42", 1, 10).await.unwrap().events;
    assert!(matches!(
        &read[0].event,
        CustomersEvent::Registered { email: Personal::Forgotten, profile: Personal::Forgotten, plan, .. } if plan == PLAN
    ));
    // The dead letter replays, forgotten.
    dead.replay_all().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(&url)
        .uri(uri)
        .group("mailer")
        .max_messages(1)
        .subscribe_customers_consumer(Recorder { tx, fail: false })
        .await
        .unwrap();
    lifetime.completion().await.unwrap();
    assert_eq!(
        take(&mut rx, 1).await,
        [forgotten("email_changed", 1, "customer-42")]
    );
}

/// Reads `uri`'s `visited` events through a new group until the first one's `ip` is forgotten;
/// returns what each read saw, first and last.
async fn visits(
    read: impl Fn(
        String,
        mpsc::UnboundedSender<(Option<String>, Option<String>)>,
    ) -> tokio::task::JoinHandle<()>,
) -> Vec<(Option<String>, Option<String>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut reads = Vec::new();
    for round in 0.. {
        let (tx, mut rx) = mpsc::unbounded_channel();
        read(format!("round-{round}"), tx).await.unwrap();
        let seen = rx.recv().await.unwrap();
        let forgotten = seen.0.is_none();
        reads.push(seen);
        if forgotten {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still readable after 10 s: {reads:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    vec![reads[0].clone(), reads[reads.len() - 1].clone()]
}

#[tokio::test]
async fn a_personal_ttl_forgets_that_parameter_alone_in_memory_and_on_redis() {
    let known = (Some("10.0.0.7".to_owned()), Some("/pricing".to_owned()));
    let expired = (None, Some("/pricing".to_owned()));

    let broker = InMemoryBroker::new();
    let producer = broker
        .producer_builder()
        .uri("visits")
        .build_customers_producer()
        .await
        .unwrap();
    producer
        .visited("customer-5".into(), "10.0.0.7".into(), "/pricing".into())
        .await
        .unwrap();
    let seen = visits(|group, tx| {
        let broker = broker.clone();
        tokio::spawn(async move {
            let lifetime = broker
                .consumer_builder()
                .uri("visits")
                .group(group)
                .max_messages(1)
                .subscribe_customers_consumer(Visits(tx))
                .await
                .unwrap();
            lifetime.completion().await.unwrap();
        })
    })
    .await;
    assert_eq!(seen, [known.clone(), expired.clone()]);

    let redis = shared().await.unwrap();
    let uri = unique_name("visits");
    let subject = unique_name("customer");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_customers_producer()
        .await
        .unwrap();
    producer
        .visited(subject.clone(), "10.0.0.7".into(), "/pricing".into())
        .await
        .unwrap();
    let url = redis.url().to_owned();
    let seen = visits(|group, tx| {
        let (url, uri) = (url.clone(), uri.clone());
        tokio::spawn(async move {
            let lifetime = RedisConsumerBuilder::new()
                .url(url)
                .uri(uri)
                .group(group)
                .max_messages(1)
                .subscribe_customers_consumer(Visits(tx))
                .await
                .unwrap();
            lifetime.completion().await.unwrap();
        })
    })
    .await;
    assert_eq!(seen, [known, expired]);

    // Forget deletes the subject's remaining expiring key (the 1 d one) and its index.
    let mut conn = common::raw(redis.url()).await;
    let pattern = format!("bbkeys:{{{subject}}}*");
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left.len(), 2, "the 1 d key and the index: {left:?}");
    let keys = RedisKeyStore::new(common::inspect(redis.url()).await);
    assert!(keys.forget(&subject).await.unwrap());
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, Vec::<String>::new());
}

#[events_contract(storage = "inline")]
pub trait Leads {
    async fn captured(&self, #[subject] lead: String, #[personal] email: String, source: String);
}

struct Captured(mpsc::UnboundedSender<(Option<String>, String)>);

#[async_trait]
impl LeadsConsumer for Captured {
    async fn captured(
        &self,
        _: &ConsumerContext,
        _: String,
        email: Personal<String>,
        source: String,
    ) -> HandlerResult {
        let _ = self.0.send((email.into_known(), source));
        Ok(())
    }
}

#[tokio::test]
async fn inline_personal_parameters_are_sealed_in_the_entry_and_forgotten() {
    let redis = shared().await.unwrap();
    let uri = unique_name("leads");
    let lead = unique_name("lead");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_leads_producer()
        .await
        .unwrap();
    producer
        .captured(lead.clone(), EMAIL.into(), "fair".into())
        .await
        .unwrap();
    let mut conn = common::raw(redis.url()).await;
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(format!("bb:{{{uri}}}:events"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let fields = &entries[0].1;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(field("payload"), None, "inline: no hash");
    assert!(field("param.email").unwrap().starts_with("v1.s."));
    assert_eq!(field("param.source").as_deref(), Some("\"fair\""));
    assert!(fields.iter().all(|(_, v)| !v.contains(EMAIL)));
    let read = |group: &'static str| {
        let (url, uri) = (redis.url().to_owned(), uri.clone());
        async move {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let lifetime = RedisConsumerBuilder::new()
                .url(url)
                .uri(uri)
                .group(group)
                .max_messages(1)
                .subscribe_leads_consumer(Captured(tx))
                .await
                .unwrap();
            lifetime.completion().await.unwrap();
            rx.recv().await.unwrap()
        }
    };
    assert_eq!(
        read("before").await,
        (Some(EMAIL.to_owned()), "fair".into())
    );
    let keys = RedisKeyStore::new(common::inspect(redis.url()).await);
    assert!(keys.forget(&lead).await.unwrap());
    assert_eq!(read("after").await, (None, "fair".into()));
}
