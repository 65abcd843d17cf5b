//! Object storage over real Redis, with `object_store`'s local-filesystem backend: parameters
//! above the threshold are files under `<root>/<stream key>/<message id>/<parameter>`, their
//! entry fields hold references and the entry's `objects` field names them. Every parameter
//! kind round-trips through a consumer; a missing or replaced object, and a consumer without
//! an object store, dead-letter the event with the reason; a producer without an object store
//! writes nothing.

mod common;

use std::sync::Arc;

use backbone_core::objects::object_store::local::LocalFileSystem;
use backbone_core::objects::ObjectStorage;
use backbone_core::storage::Storage;
use backbone_core::{ContractEvent, Error, MessageId};
use backbone_redis::testing::{shared, unique_name};
use backbone_redis::{DeadLetters, RedisConsumerBuilder, RedisProducerBuilder, StreamAdmin};
use common::*;
use redis::AsyncCommands;
use tokio::sync::mpsc;

/// A test's Redis, stream and object store (files in a temporary directory).
struct Setup {
    url: String,
    uri: String,
    dir: tempfile::TempDir,
    objects: ObjectStorage,
}

async fn setup(prefix: &str) -> Setup {
    let redis = shared().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    Setup {
        url: redis.url().to_owned(),
        uri: unique_name(prefix),
        objects: files(&dir),
        dir,
    }
}

/// Objects in files under `dir`, for parameters above 64 bytes.
fn files(dir: &tempfile::TempDir) -> ObjectStorage {
    let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    ObjectStorage::new(Arc::new(store)).threshold(64)
}

async fn object_producer(url: &str, uri: &str, objects: &ObjectStorage) -> ObjectKindsProducer {
    RedisProducerBuilder::new()
        .url(url)
        .uri(uri)
        .object_store(objects.clone())
        .build_object_kinds_producer()
        .await
        .unwrap()
}

/// The files under `dir`, as paths relative to it.
fn stored(dir: &tempfile::TempDir) -> Vec<String> {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir.path(), dir.path(), &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn every_parameter_kind_round_trips_through_an_object_store() {
    let Setup {
        url,
        uri,
        dir,
        objects,
    } = setup("object-kinds").await;
    let producer = object_producer(&url, &uri, &objects).await;
    let sent = kinds_cases();
    let converted: Vec<ObjectKindsEvent> = sent.iter().map(convert).collect();
    assert!(converted
        .iter()
        .all(|e| e.operation().storage == Storage::Object));
    let mut ids = Vec::new();
    for event in &converted {
        ids.push(producer.producer().send(event).await.unwrap());
    }

    // The large parameters are files at the derived paths; the entries refer to them.
    let stream = keys(&uri).stream().to_owned();
    let mut raw = raw(&url).await;
    let entries: redis::streams::StreamRangeReply = raw.xrange_all(&stream).await.unwrap();
    let mut expected = Vec::new();
    for (entry, id) in entries.ids.iter().zip(&ids) {
        let Some(names) = entry.get::<String>("objects") else {
            continue;
        };
        for name in names.split(',') {
            let field: String = entry.get(&format!("param.{name}")).unwrap();
            assert!(field.starts_with("obj.v1."), "{field}");
            expected.push(objects.path(&stream, id, name).to_string());
        }
    }
    // The 2 MiB text, the nested user and its list (the map and the rest are at most 64 bytes).
    assert_eq!(expected.len(), 3, "{expected:?}");
    expected.sort();
    assert_eq!(stored(&dir), expected);
    assert!(
        entries
            .ids
            .iter()
            .all(|e| e.get::<String>("payload").is_none()),
        "no payload hash"
    );

    let consumer = RedisConsumerBuilder::new()
        .url(&url)
        .uri(&uri)
        .object_store(objects)
        .max_messages(sent.len() as u64);
    assert_kinds_consumed_through(consumer, &ids, &sent).await;
}

#[tokio::test]
async fn missing_and_replaced_objects_and_a_consumer_without_a_store_dead_letter() {
    let Setup {
        url,
        uri,
        dir,
        objects,
    } = setup("object-bad").await;
    let producer = object_producer(&url, &uri, &objects).await;
    let big = || ObjectKindsEvent::Text { s: "y".repeat(500) };
    let missing = producer.producer().send(&big()).await.unwrap();
    let replaced = producer.producer().send(&big()).await.unwrap();
    let good = producer.producer().send(&big()).await.unwrap();
    let stream = keys(&uri).stream().to_owned();
    let path = |id: &MessageId| dir.path().join(objects.path(&stream, id, "s").as_ref());
    std::fs::remove_file(path(&missing)).unwrap();
    std::fs::write(path(&replaced), format!("\"{}\"", "z".repeat(500))).unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(&url)
        .uri(&uri)
        .object_store(objects.clone())
        .subscribe_kinds_consumer(KindsRecorder(tx))
        .await
        .unwrap();
    let dead = DeadLetters::connect(&url, None, &uri, "default")
        .await
        .unwrap();
    wait_dead_letters(&dead, 2).await;
    let got = collect(&mut rx, 1, WAIT).await;
    lifetime.shutdown().await.unwrap();
    assert_eq!(got[0].0.message_id, good, "the consumer went on");
    let letters = dead.list(None, 10).await.unwrap();
    let reason = |id: MessageId| {
        let letter = letters.iter().find(|l| l.message_id == Some(id)).unwrap();
        letter.reason.clone()
    };
    let gone = reason(missing);
    assert!(
        gone.contains("parameter `s` in the object store") && gone.contains("is missing"),
        "{gone}"
    );
    let other = reason(replaced);
    assert!(
        other.contains("is not the one the entry refers to"),
        "{other}"
    );
    assert!(!other.contains("zzz"), "never the value: {other}");

    // A consumer of another group without an object store: dead letters saying so.
    let dead = dead_letter_without_a_store(&url, &uri, 3).await;
    let letters = dead.list(None, 10).await.unwrap();
    let letter = letters.iter().find(|l| l.message_id == Some(good)).unwrap();
    assert!(
        letter.reason.contains("this consumer has none"),
        "{}",
        letter.reason
    );
}

#[tokio::test]
async fn a_producer_without_an_object_store_writes_nothing() {
    let redis = shared().await.unwrap();
    let uri = unique_name("object-none");
    let producer = RedisProducerBuilder::new()
        .url(redis.url())
        .uri(&uri)
        .build_object_kinds_producer()
        .await
        .unwrap();
    let err = producer
        .producer()
        .send(&ObjectKindsEvent::Unit {})
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("operation `unit`") && text.contains("object_store"),
        "{text}"
    );
    let mut raw = raw(redis.url()).await;
    let exists: bool = raw.exists(keys(&uri).stream()).await.unwrap();
    assert!(!exists);
}

#[tokio::test]
async fn a_send_that_is_not_written_deletes_its_objects() {
    let Setup {
        url,
        uri,
        dir,
        objects,
    } = setup("object-unwritten").await;
    let producer = object_producer(&url, &uri, &objects).await;
    // The stream key holds a string: the publish script refuses before writing anything.
    let mut raw = raw(&url).await;
    let _: () = raw.set(keys(&uri).stream(), "not a stream").await.unwrap();
    let big = ObjectKindsEvent::Text { s: "w".repeat(500) };
    let err = producer.producer().send(&big).await.unwrap_err();
    assert!(err.to_string().contains("not written"), "{err}");
    assert_eq!(stored(&dir), Vec::<String>::new());
}

/// Runs a consumer of group `no-store`, which has no object store, until its group holds
/// `n` dead letters: each object event it reads is dead-lettered, holding its objects.
async fn dead_letter_without_a_store(url: &str, uri: &str, n: u64) -> DeadLetters {
    let (tx, _rx) = mpsc::unbounded_channel();
    let lifetime = RedisConsumerBuilder::new()
        .url(url)
        .uri(uri)
        .group("no-store")
        .subscribe_kinds_consumer(KindsRecorder(tx))
        .await
        .unwrap();
    let dead = DeadLetters::connect(url, None, uri, "no-store")
        .await
        .unwrap();
    wait_dead_letters(&dead, n).await;
    lifetime.shutdown().await.unwrap();
    dead
}

#[tokio::test]
async fn objects_live_as_long_as_an_entry_or_a_dead_letter_needs_them() {
    let Setup {
        url,
        uri,
        dir,
        objects,
    } = setup("object-lifetime").await;
    let producer = object_producer(&url, &uri, &objects).await;
    let mut sent = Vec::new();
    for c in ["a", "b", "c"] {
        let big = ObjectKindsEvent::Text { s: c.repeat(500) };
        sent.push(producer.producer().send(&big).await.unwrap());
    }
    let (a, b, c) = (sent[0], sent[1], sent[2]);
    let file = |id: &MessageId| {
        let path = objects.path(keys(&uri).stream(), id, "s");
        dir.path().join(path.as_ref()).exists()
    };
    let dead = dead_letter_without_a_store(&url, &uri, 3).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consume = || async {
        RedisConsumerBuilder::new()
            .url(&url)
            .uri(&uri)
            .object_store(objects.clone())
            .subscribe_kinds_consumer(KindsRecorder(tx.clone()))
            .await
            .unwrap()
    };
    let lifetime = consume().await;
    collect(&mut rx, 3, WAIT).await;
    lifetime.shutdown().await.unwrap();

    // An admin without the object store refuses to trim object events, removing nothing.
    let bare = StreamAdmin::connect(&url, None, &uri).await.unwrap();
    let err = bare.trim(0).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("object_store"), "{err}");
    assert_eq!(bare.len().await.unwrap(), 3);
    let admin = bare.object_store(objects.clone());
    let report = admin.trim(0).await.unwrap();
    assert_eq!(
        (report.entries, report.objects),
        (3, 0),
        "the dead letters hold them"
    );
    assert!(file(&a) && file(&b) && file(&c));

    // Purging b's dead letter, its last reference, deletes b's object; without a store,
    // purging is refused before anything goes.
    let letters = dead.list(None, 10).await.unwrap();
    let letter = |id: MessageId| letters.iter().find(|l| l.message_id == Some(id)).unwrap();
    let err = dead.purge(&letter(b).id).await.unwrap_err();
    assert!(err.to_string().contains("object_store"), "{err}");
    assert_eq!(dead.len().await.unwrap(), 3);
    let dead = dead.object_store(objects.clone());
    assert!(dead.purge(&letter(b).id).await.unwrap());
    assert!(file(&a) && !file(&b) && file(&c));

    // a, replayed, is read with its object; dead-lettered again by no-store, it stays held.
    dead.replay(&letter(a).id).await.unwrap();
    let lifetime = consume().await;
    let got = collect(&mut rx, 1, WAIT).await;
    lifetime.shutdown().await.unwrap();
    let expected = ObjectKindsEvent::Text { s: "a".repeat(500) };
    assert_eq!(got[0].0.message_id, a);
    let expected: KindsEvent = convert(&expected);
    assert_eq!(format!("{:?}", got[0].1), format!("{expected:?}"));
    dead_letter_without_a_store(&url, &uri, 2).await;
    let report = admin.trim(0).await.unwrap();
    assert_eq!((report.entries, report.objects), (1, 0));
    assert!(file(&a) && file(&c));

    assert_eq!(dead.purge_all().await.unwrap(), 2);
    assert_eq!(stored(&dir), Vec::<String>::new(), "every object is gone");
    let mut raw = raw(&url).await;
    let holds: u64 = raw.hlen(keys(&uri).holds()).await.unwrap();
    assert_eq!(holds, 0);
}

#[tokio::test]
async fn orphaned_and_expired_objects_are_swept() {
    let Setup {
        url,
        uri,
        dir: _dir,
        objects,
    } = setup("object-sweep").await;
    let stream = keys(&uri).stream().to_owned();
    let two_hours = std::time::Duration::from_secs(7200);
    // Objects put by sends whose entries were never written (an unknown outcome): one two
    // hours old, one just now; and an old one that a dead letter holds.
    let put = |id: MessageId| {
        let objects = objects.clone();
        let stream = stream.clone();
        async move {
            let mut fields = backbone_core::Fields::new();
            fields.set("s", format!("\"{}\"", "o".repeat(500)).into_bytes());
            objects.offload(&stream, &id, &mut fields).await.unwrap();
        }
    };
    let (orphan, recent, held) = (
        created_ago(two_hours, 1),
        MessageId::new(),
        created_ago(two_hours, 2),
    );
    for id in [orphan, recent, held] {
        put(id).await;
    }
    let mut raw = raw(&url).await;
    let _: i64 = raw
        .hincr(keys(&uri).holds(), held.to_string(), 1)
        .await
        .unwrap();
    let producer = object_producer(&url, &uri, &objects).await;
    let big = ObjectKindsEvent::Text { s: "l".repeat(500) };
    let live = producer.producer().send(&big).await.unwrap();
    let events = objects.events(&stream).await.unwrap();
    assert_eq!(events.len(), 4);

    let bare = StreamAdmin::connect(&url, None, &uri).await.unwrap();
    let err = bare.delete_orphan_objects(two_hours).await.unwrap_err();
    assert!(err.to_string().contains("object_store"), "{err}");
    let admin = bare.object_store(objects.clone());
    let second = std::time::Duration::from_secs(1);
    let err = admin.delete_orphan_objects(second).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(admin.delete_orphan_objects(hour).await.unwrap(), 1);
    let mut left = vec![recent, held, live];
    left.sort();
    assert_eq!(objects.events(&stream).await.unwrap(), left);

    // A retention of an hour deletes the old object, held or not.
    assert_eq!(admin.expire_objects(hour).await.unwrap(), 1);
    let mut left = vec![recent, live];
    left.sort();
    assert_eq!(objects.events(&stream).await.unwrap(), left);
}

#[tokio::test]
async fn the_event_store_appends_and_reads_object_parameters() {
    use backbone_core::store::{AppendOptions, ExpectedVersion};
    use backbone_redis::store::{EventStore, EventStoreBuilder};

    let Setup {
        url,
        uri,
        dir,
        objects,
    } = setup("object-store").await;
    let builder = || EventStoreBuilder::new().url(&url).uri(&uri);
    let append_all = |store: &EventStore<ObjectKindsEvent>, events: &[ObjectKindsEvent]| {
        let (store, events) = (store.clone(), events.to_vec());
        async move {
            let options = AppendOptions::default();
            store
                .append("doc-1", ExpectedVersion::NoStream, &events, options)
                .await
        }
    };
    let sent = kinds_cases();
    let converted: Vec<ObjectKindsEvent> = sent.iter().map(convert).collect();

    // Without an object store, nothing is written.
    let bare = builder().build::<ObjectKindsEvent>().await.unwrap();
    let err = append_all(&bare, &converted).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(
        err.to_string().contains("EventStoreBuilder::object_store"),
        "{err}"
    );
    assert_eq!(bare.version("doc-1").await.unwrap(), 0);
    assert_eq!(stored(&dir), Vec::<String>::new());

    let store = builder()
        .object_store(objects.clone())
        .build::<ObjectKindsEvent>()
        .await
        .unwrap();
    let result = append_all(&store, &converted).await.unwrap();
    assert_eq!(result.version, sent.len() as u64);
    let files_now = stored(&dir);
    assert_eq!(files_now.len(), 3, "the 2 MiB text, the user and its list");
    let page = store.read("doc-1", 1, 100).await.unwrap();
    let read: Vec<String> = page
        .events
        .iter()
        .map(|e| format!("{:?}", convert::<_, KindsEvent>(&e.event)))
        .collect();
    let expected: Vec<String> = sent.iter().map(|e| format!("{e:?}")).collect();
    assert_eq!(read, expected);
    // The contract's consumers read them from the same objects.
    let ids: Vec<MessageId> = page.events.iter().map(|e| e.metadata.message_id).collect();
    let consumer = RedisConsumerBuilder::new()
        .url(&url)
        .uri(&uri)
        .object_store(objects.clone())
        .max_messages(sent.len() as u64);
    assert_kinds_consumed_through(consumer, &ids, &sent).await;

    // Trimming the contract's stream leaves the aggregate's events whole.
    let admin = StreamAdmin::connect(&url, None, &uri).await.unwrap();
    let report = admin.object_store(objects.clone()).trim(0).await.unwrap();
    assert_eq!((report.entries, report.objects), (sent.len() as u64, 0));
    assert_eq!(stored(&dir), files_now);
    assert_eq!(
        store.read("doc-1", 1, 100).await.unwrap().events.len(),
        sent.len()
    );

    // A refused append deletes the objects it put; a store without objects cannot read them.
    let err = append_all(&store, &converted).await.unwrap_err();
    assert!(matches!(err, Error::WrongExpectedVersion { .. }), "{err:?}");
    assert_eq!(stored(&dir), files_now);
    let err = bare.read("doc-1", 1, 100).await.unwrap_err();
    assert!(matches!(err, Error::BadStoredEvent { .. }), "{err:?}");
    assert!(
        err.to_string().contains("this event store has none"),
        "{err}"
    );
}
