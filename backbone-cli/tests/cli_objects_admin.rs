//! Administering `storage = "object"` streams from the command line, with objects in files
//! (`object_store`'s local-filesystem backend in a temporary directory, as `--objects
//! file://<dir>`): `backbone trim` without the store refuses object events and removes
//! nothing, with it deletes their files too; `dead purge` deletes a dead-lettered event's
//! object once its entry is trimmed; `objects sweep` deletes orphaned and expired objects; an
//! unsupported store URL is refused without echoing its credentials.

mod common;

use std::sync::Arc;
use std::time::Duration;

use backbone_core::objects::object_store::local::LocalFileSystem;
use backbone_core::objects::ObjectStorage;
use backbone_core::{async_trait, events_contract, ConsumerContext, Fields, HandlerResult};
use backbone_core::{RetryPolicy, StreamAddress};
use backbone_redis::keys::StreamKeys;
use backbone_redis::testing::unique_name;
use backbone_redis::{RedisConsumerBuilder, RedisProducerBuilder};
use common::*;
use redis::streams::StreamInfoGroupsReply;
use tempfile::TempDir;

#[events_contract(storage = "object")]
pub trait Scans {
    async fn scanned(&self, image: String, note: String);
}

/// Above it, a parameter goes to the store: the image, not the note.
const THRESHOLD: usize = 1000;

/// Objects in files under `dir`, under the default root.
fn files(dir: &TempDir) -> ObjectStorage {
    let store = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
    ObjectStorage::new(Arc::new(store)).threshold(THRESHOLD)
}

/// `--objects file://<dir>`.
fn objects_url(dir: &TempDir) -> String {
    format!("file://{}", dir.path().display())
}

/// The files under `dir`, as paths relative to it.
fn stored(dir: &TempDir) -> Vec<String> {
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

/// The stream key of the single-partition stream `uri`.
fn stream_key(uri: &str) -> String {
    StreamKeys::new(&StreamAddress::new(None, uri).unwrap())
        .stream()
        .to_owned()
}

/// Sends `n` `scanned` events to `uri` through `objects`, each with one object; their
/// message ids.
async fn send_scans(url: &str, uri: &str, objects: &ObjectStorage, n: usize) -> Vec<String> {
    let producer = RedisProducerBuilder::new()
        .url(url)
        .uri(uri)
        .object_store(objects.clone())
        .build_scans_producer()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let id = producer
            .scanned(format!("{i}{}", "x".repeat(5000)), "small".into())
            .await
            .unwrap();
        ids.push(id.to_string());
    }
    ids
}

/// Handles every event, or fails every one.
struct Handler {
    fail: bool,
}

#[async_trait]
impl ScansConsumer for Handler {
    async fn scanned(&self, _: &ConsumerContext, image: String, _: String) -> HandlerResult {
        assert!(image.len() > THRESHOLD, "read with its object");
        if self.fail {
            Err("fails on purpose".into())
        } else {
            Ok(())
        }
    }
}

/// Has group `group` consume `uri` (through `objects`) with `handler` until it has read and
/// acknowledged every entry; fails after 20 s.
async fn consume(url: &str, uri: &str, group: &str, objects: &ObjectStorage, handler: Handler) {
    let consumer = RedisConsumerBuilder::new()
        .url(url)
        .uri(uri)
        .group(group)
        .object_store(objects.clone())
        .block(Duration::from_millis(100))
        .retry(RetryPolicy {
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
            max_deliveries: 1,
        })
        .subscribe_scans_consumer(handler)
        .await
        .unwrap();
    let key = stream_key(uri);
    let mut raw = raw(url).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let reply: StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&key)
            .query_async(&mut raw)
            .await
            .unwrap();
        let done = reply
            .groups
            .iter()
            .any(|g| g.name == group && g.pending == 0 && g.lag == Some(0));
        if done {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?}", reply.groups);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consumer.shutdown().await.unwrap();
}

async fn xlen(url: &str, uri: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(stream_key(uri))
        .query_async(&mut raw(url).await)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trim_deletes_the_objects_of_what_it_removes_only_through_the_store() {
    let url = url().await;
    let uri = unique_name("cli-trim-objects");
    let dir = tempfile::tempdir().unwrap();
    let objects = files(&dir);
    send_scans(&url, &uri, &objects, 3).await;
    consume(&url, &uri, "billing", &objects, Handler { fail: false }).await;
    assert_eq!(stored(&dir).len(), 3);

    // Without the store: refused, with the option to give, and nothing removed.
    fails(
        backbone(&url).args(["trim", &uri, "--max-len", "0", "--yes"]),
        2,
        "--objects file:///",
    );
    let later = (backbone_core::metadata::now_millis() + 60_000).to_string();
    fails(
        backbone(&url).args(["trim", &uri, "--before", &later, "--yes"]),
        2,
        "keeps parameters in an object store",
    );
    assert_eq!(xlen(&url, &uri).await, 3);
    assert_eq!(stored(&dir).len(), 3);

    // With it (here from the environment): the entries and their files go.
    let mut trim = backbone(&url);
    trim.env("BACKBONE_OBJECTS", objects_url(&dir))
        .args(["trim", &uri, "--max-len", "0", "--yes"]);
    let rows = json_lines(&mut trim);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["removed_entries"], 3, "{rows:?}");
    assert_eq!(rows[0]["removed_objects"], 3, "{rows:?}");
    assert_eq!(rows[0]["length"], 0, "{rows:?}");
    assert_eq!(stored(&dir), Vec::<String>::new());
    assert_eq!(xlen(&url, &uri).await, 0);

    // People see the column too.
    send_scans(&url, &uri, &objects, 1).await;
    consume(&url, &uri, "billing", &objects, Handler { fail: false }).await;
    let output = backbone(&url)
        .args(["--objects", &objects_url(&dir), "trim", &uri])
        .args(["--max-len", "0", "--yes"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let column = header.iter().position(|c| *c == "removed_objects").unwrap();
    assert_eq!(row[column], "1", "{text}");
    assert_eq!(stored(&dir), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_purge_deletes_a_trimmed_events_object_through_the_store() {
    let url = url().await;
    let uri = unique_name("cli-purge-objects");
    let dir = tempfile::tempdir().unwrap();
    let objects = files(&dir);
    send_scans(&url, &uri, &objects, 1).await;
    consume(&url, &uri, "billing", &objects, Handler { fail: true }).await;
    listed_dead_letters(&url, &uri, "billing", 1).await;
    let store = objects_url(&dir);

    // The trim removes the entry; the dead letter holds its object.
    let rows = json_lines(
        backbone(&url)
            .args(["--objects", &store, "trim", &uri])
            .args(["--max-len", "0", "--yes"]),
    );
    assert_eq!(rows[0]["removed_entries"], 1, "{rows:?}");
    assert_eq!(rows[0]["removed_objects"], 0, "{rows:?}");
    assert_eq!(stored(&dir).len(), 1);

    // Purging its dead letter, the last reference: refused without the store, nothing goes.
    fails(
        backbone(&url).args(["dead", "purge", &uri, "billing", "--all", "--yes"]),
        2,
        "--objects file:///",
    );
    let listed = listed_dead_letters(&url, &uri, "billing", 1).await;
    let letter = listed[0]["id"].as_str().unwrap();
    fails(
        backbone(&url).args(["dead", "purge", &uri, "billing", letter, "--yes"]),
        2,
        "--objects file:///",
    );
    assert_eq!(stored(&dir).len(), 1);

    // With it: the dead letter and the object go.
    let purged = json_lines(
        backbone(&url)
            .args(["dead", "purge", &uri, "billing", letter, "--yes"])
            .args(["--objects", &store]),
    );
    assert_eq!(purged[0]["purged"], 1, "{purged:?}");
    assert_eq!(stored(&dir), Vec::<String>::new());
    listed_dead_letters(&url, &uri, "billing", 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_sweep_deletes_orphaned_then_expired_objects() {
    let url = url().await;
    let uri = unique_name("cli-sweep-objects");
    let dir = tempfile::tempdir().unwrap();
    let objects = files(&dir);
    let sent = send_scans(&url, &uri, &objects, 1).await;
    // An orphan: the object of a two-hour-old event that has no entry.
    let orphan = created_ago(Duration::from_secs(7200), 1);
    let mut fields = Fields::new();
    fields.set("image", format!("\"{}\"", "o".repeat(5000)).into_bytes());
    let moved = objects
        .offload(&stream_key(&uri), &orphan, &mut fields)
        .await
        .unwrap();
    assert_eq!(moved, ["image"]);
    assert_eq!(stored(&dir).len(), 2);
    let store = objects_url(&dir);
    let sweep = |args: &[&str]| {
        let mut cmd = backbone(&url);
        cmd.args(["objects", "sweep", &uri, "--yes"]).args(args);
        cmd
    };

    fails(
        &mut sweep(&["--orphans-older-than", "1h"]),
        2,
        "needs the object store: give --objects",
    );
    fails(
        &mut sweep(&["--orphans-older-than", "30s", "--objects", &store]),
        2,
        "below",
    );
    fails(
        &mut sweep(&["--objects", &store]),
        2,
        "--orphans-older-than",
    );
    assert_eq!(stored(&dir).len(), 2);

    let rows = json_lines(&mut sweep(&[
        "--orphans-older-than",
        "1h",
        "--objects",
        &store,
    ]));
    assert_eq!(rows[0]["deleted_orphans"], 1, "{rows:?}");
    assert_eq!(rows[0]["deleted_expired"], serde_json::Value::Null);
    let left = stored(&dir);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].contains(&sent[0]),
        "the sent event's object stays: {left:?}"
    );

    // Expiry deletes what is older than the retention, whatever refers to it.
    let rows = json_lines(&mut sweep(&["--expire", "1h", "--objects", &store]));
    assert_eq!(rows[0]["deleted_expired"], 0, "{rows:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rows = json_lines(&mut sweep(&["--expire", "1s", "--objects", &store]));
    assert_eq!(rows[0]["deleted_expired"], 1, "{rows:?}");
    assert_eq!(stored(&dir), Vec::<String>::new());
    assert_eq!(xlen(&url, &uri).await, 1, "the entry stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_store_urls_are_refused_without_their_credentials() {
    let url = url().await;
    let uri = unique_name("cli-objects-urls");
    let dir = tempfile::tempdir().unwrap();
    send_scans(&url, &uri, &files(&dir), 1).await;
    let trim = |objects: &str| {
        let mut cmd = backbone(&url);
        cmd.args([
            "trim",
            &uri,
            "--max-len",
            "0",
            "--yes",
            "--objects",
            objects,
        ]);
        cmd
    };
    fails(
        &mut trim("s3://AKIAKEY:secret@bucket/objects"),
        2,
        "the s3:// scheme is not supported: this build reads local files only (file:///",
    );
    fails(&mut trim("memory:///"), 2, "in-memory store");
    fails(
        &mut trim("file:///no/such/backbone/dir"),
        2,
        "no such directory",
    );
    for objects in [
        "s3://AKIAKEY:secret@bucket/objects",
        "file://user:secret@/tmp",
        "file://user:secret@host/tmp",
        "https://user:secret@example.com/objects",
    ] {
        let output = trim(objects).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{objects}: {stderr}");
        assert!(stderr.contains("--objects"), "{objects}: {stderr}");
        assert!(!stderr.contains("secret"), "{objects}: {stderr}");
        assert!(output.stdout.is_empty(), "{objects}");
    }
    // The environment's URL is checked the same way, and never shown by `--help`.
    let output = backbone(&url)
        .env("BACKBONE_OBJECTS", "s3://AKIAKEY:secret@bucket/objects")
        .args(["trim", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(!String::from_utf8_lossy(&output.stdout).contains("secret"));
    assert_eq!(xlen(&url, &uri).await, 1, "nothing was trimmed");
    assert_eq!(stored(&dir).len(), 1);
}
