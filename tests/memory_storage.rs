//! The storage strategies on the in-memory channel: every parameter kind round-trips in the
//! `hash`, `inline` and `object` layouts; `object` parameters above the threshold are in the
//! broker's object store, at the path derived from the stream address, and nowhere else; an
//! object that is missing or replaced makes its event bad (dead-lettered at once, as on Redis)
//! while the consumer goes on with the next one. A personal parameter is sealed before it is
//! stored and opened after it is fetched: the object holds ciphertext, and forgetting the
//! subject forgets it.

mod common;

use std::sync::{Arc, Mutex};

use backbone_core::memory::InMemoryBroker;
use backbone_core::middleware::{ChannelInfo, Settled, Settlement};
use backbone_core::objects::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use backbone_core::objects::ObjectStorage;
use backbone_core::personal::Personal;
use backbone_core::storage::Storage;
use backbone_core::{async_trait, events_contract, ConsumerContext, HandlerResult};
use backbone_core::{ContractEvent, MessageId, Metadata, Middleware, ProducerBuilder};
use common::*;
use futures::TryStreamExt;
use tokio::sync::mpsc;

/// Sends `events` to `uri` on `broker`, then consumes as many with a [`KindsRecorder`]; asserts
/// they come back as `sent` (the same operations as [`KindsEvent`]s). Returns the message ids.
async fn round_trip<E: ContractEvent>(
    broker: &InMemoryBroker,
    uri: &str,
    events: &[E],
    sent: &[KindsEvent],
) -> Vec<MessageId> {
    let producer = broker
        .producer_builder()
        .uri(uri)
        .build_producer()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for event in events {
        ids.push(producer.send(event).await.unwrap());
    }
    let builder = broker
        .consumer_builder()
        .uri(uri)
        .max_messages(sent.len() as u64);
    assert_kinds_consumed_through(builder, &ids, sent).await;
    assert_eq!(broker.pending(None, uri, "default"), 0);
    ids
}

/// The paths of every object in `objects`' store, sorted.
async fn stored(objects: &ObjectStorage) -> Vec<String> {
    let listed: Vec<_> = objects.store().list(None).try_collect().await.unwrap();
    let mut paths: Vec<String> = listed.iter().map(|o| o.location.to_string()).collect();
    paths.sort();
    paths
}

/// The object of `parameter` of event `id` in `stream`.
async fn object(objects: &ObjectStorage, stream: &str, id: &MessageId, parameter: &str) -> Vec<u8> {
    let path = objects.path(stream, id, parameter);
    let found = objects.store().get(&path).await.unwrap();
    found.bytes().await.unwrap().to_vec()
}

/// `kinds_cases()` as events of contract `T`, each of `storage`.
fn cases_as<T: ContractEvent>(storage: Storage) -> Vec<T> {
    let converted: Vec<T> = kinds_cases().iter().map(convert).collect();
    assert!(converted.iter().all(|e| e.operation().storage == storage));
    converted
}

#[tokio::test]
async fn every_parameter_kind_round_trips_in_the_hash_layout() {
    let broker = InMemoryBroker::new();
    let sent = kinds_cases();
    assert!(sent.iter().all(|e| e.operation().storage == Storage::Hash));
    round_trip(&broker, "kinds-hash", &sent, &sent).await;
    assert_eq!(stored(broker.object_store()).await, Vec::<String>::new());
}

#[tokio::test]
async fn every_parameter_kind_round_trips_inline() {
    let broker = InMemoryBroker::new();
    let converted: Vec<InlineKindsEvent> = cases_as(Storage::Inline);
    round_trip(&broker, "kinds-inline", &converted, &kinds_cases()).await;
    assert_eq!(stored(broker.object_store()).await, Vec::<String>::new());
}

#[tokio::test]
async fn every_parameter_kind_round_trips_through_the_object_store() {
    let objects = ObjectStorage::in_memory().threshold(64);
    let broker = InMemoryBroker::new().with_object_store(objects.clone());
    let sent = kinds_cases();
    let converted: Vec<ObjectKindsEvent> = cases_as(Storage::Object);
    let ids = round_trip(&broker, "kinds-object", &converted, &sent).await;

    // The parameters encoded above 64 bytes are objects at the paths of stream `kinds-object`
    // (the address), holding the encoded values: the 2 MiB text, the nested user and its list
    // (the map and every other parameter are at most 64 bytes).
    let mut expected = Vec::new();
    for (event, id) in converted.iter().zip(&ids) {
        for (name, value) in outgoing(event).fields.iter() {
            if value.len() <= 64 {
                continue;
            }
            let stored = object(&objects, "kinds-object", id, name).await;
            assert_eq!(stored, value, "object {name} of {id}");
            expected.push(objects.path("kinds-object", id, name).to_string());
        }
    }
    assert_eq!(expected.len(), 3, "{expected:?}");
    expected.sort();
    assert_eq!(stored(&objects).await, expected);
}

#[tokio::test]
async fn the_default_object_store_keeps_parameters_above_64_kib() {
    let broker = InMemoryBroker::new();
    let converted: Vec<ObjectKindsEvent> = cases_as(Storage::Object);
    let ids = round_trip(&broker, "kinds-default", &converted, &kinds_cases()).await;
    // Only the 2 MiB text (the third case) is above the default threshold.
    let path = broker.object_store().path("kinds-default", &ids[2], "s");
    assert_eq!(stored(broker.object_store()).await, [path.to_string()]);
}

/// A delivery's message id (when its entry was well formed) and how it ended.
type Outcome = (Option<MessageId>, String);

/// Records the outcome of every delivery.
#[derive(Clone, Default)]
struct Outcomes(Arc<Mutex<Vec<Outcome>>>);

impl Middleware for Outcomes {
    fn settled(&self, _: &ChannelInfo, settled: &Settled<'_>) {
        let outcome = match &settled.outcome {
            Settlement::LeftPending { reason } => format!("left pending: {reason}"),
            Settlement::DeadLettered { reason } => format!("dead-lettered: {reason}"),
            other => other.name().to_owned(),
        };
        let id = settled.metadata.map(|m: &Metadata| m.message_id);
        self.0.lock().unwrap().push((id, outcome));
    }
}

#[tokio::test]
async fn a_missing_or_replaced_object_is_a_bad_event_and_the_consumer_goes_on() {
    let objects = ObjectStorage::in_memory().threshold(64);
    let broker = InMemoryBroker::new().with_object_store(objects.clone());
    let uri = "objects-bad";
    let producer = broker
        .producer_builder()
        .environment("test")
        .uri(uri)
        .build_object_kinds_producer()
        .await
        .unwrap();
    let big = || "y".repeat(500);
    let missing = producer.text(big()).await.unwrap();
    let replaced = producer.text(big()).await.unwrap();
    let good = producer.text(big()).await.unwrap();
    // With an environment, the stream part of the path is `<environment>:<uri>`.
    let path = |id: &MessageId| objects.path(&format!("test:{uri}"), id, "s");
    objects.store().delete(&path(&missing)).await.unwrap();
    let other = PutPayload::from(format!("\"{}\"", "z".repeat(500)));
    objects.store().put(&path(&replaced), other).await.unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let outcomes = Outcomes::default();
    let lifetime = broker
        .consumer_builder()
        .environment("test")
        .uri(uri)
        .middleware(outcomes.clone())
        .max_messages(1)
        .subscribe_kinds_consumer(KindsRecorder(tx))
        .await
        .unwrap();
    let got = collect(&mut rx, 1, WAIT).await;
    lifetime.completion().await.unwrap();
    assert_eq!(got[0].0.message_id, good, "the consumer went on");
    assert_eq!(
        format!("{:?}", got[0].1),
        format!("{:?}", KindsEvent::Text { s: big() })
    );
    // The bad events are dead-lettered at once, with the reason, as on Redis.
    assert_eq!(broker.pending(Some("test"), uri, "default"), 0);
    let dead = broker.dead_letters(Some("test"), uri, "default").unwrap();
    let letters = dead.list(None, 10).await.unwrap();
    assert_eq!(buried(&letters), [(Some(missing), 1), (Some(replaced), 1)]);

    let outcomes = outcomes.0.lock().unwrap().clone();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    let outcome = |id: MessageId| {
        let found = outcomes.iter().find(|(m, _)| *m == Some(id));
        found.unwrap().1.clone()
    };
    let gone = outcome(missing);
    assert!(
        gone.starts_with("dead-lettered: parameter `s` in the object store")
            && gone.contains("is missing"),
        "{gone}"
    );
    let altered = outcome(replaced);
    assert!(
        altered.starts_with("dead-lettered: parameter `s` in the object store")
            && altered.contains("is not the one the entry refers to"),
        "{altered}"
    );
    assert!(!altered.contains("zzz"), "never the value: {altered}");
    assert_eq!(format!("dead-lettered: {}", letters[0].reason), gone);
    assert_eq!(format!("dead-lettered: {}", letters[1].reason), altered);
    assert_eq!(outcome(good), Settlement::Acked.name());
}

/// A large personal parameter beside a large plain one.
#[events_contract(storage = "object")]
pub trait Scans {
    async fn scanned(&self, #[subject] customer: String, #[personal] scan: String, note: String);
}

/// Forwards the scan (`None` when forgotten) and the note.
struct ScanRecorder(mpsc::UnboundedSender<(Option<String>, String)>);

#[async_trait]
impl ScansConsumer for ScanRecorder {
    async fn scanned(
        &self,
        _: &ConsumerContext,
        _: String,
        scan: Personal<String>,
        note: String,
    ) -> HandlerResult {
        self.0.send((scan.known().cloned(), note))?;
        Ok(())
    }
}

#[tokio::test]
async fn a_personal_object_holds_ciphertext_and_is_forgotten_with_its_subject() {
    let objects = ObjectStorage::in_memory().threshold(64);
    let broker = InMemoryBroker::new().with_object_store(objects.clone());
    let producer = broker
        .producer_builder()
        .uri("scans")
        .build_scans_producer()
        .await
        .unwrap();
    let scan = "secret-scan-".repeat(20);
    let note = "plain-note-".repeat(20);
    let id = producer
        .scanned("customer-7".into(), scan.clone(), note.clone())
        .await
        .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    let sealed = text(object(&objects, "scans", &id, "scan").await);
    assert!(!sealed.contains("secret-scan"), "sealed before stored");
    let plain = text(object(&objects, "scans", &id, "note").await);
    assert!(plain.contains("plain-note"));

    let consume = |group: &str| {
        let (tx, rx) = mpsc::unbounded_channel();
        let lifetime = broker
            .consumer_builder()
            .uri("scans")
            .group(group)
            .max_messages(1)
            .subscribe_scans_consumer(ScanRecorder(tx));
        async move {
            let lifetime = lifetime.await.unwrap();
            let mut rx = rx;
            let got = collect(&mut rx, 1, WAIT).await.remove(0);
            lifetime.completion().await.unwrap();
            got
        }
    };
    assert_eq!(consume("before").await, (Some(scan), note.clone()));
    assert!(broker.key_store().forget("customer-7").await.unwrap());
    assert_eq!(consume("after").await, (None, note));
}
