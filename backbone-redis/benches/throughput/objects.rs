//! Scenario 11: object storage (`#[events_contract(storage = "object")]`). Events with one
//! large parameter, a 256 KiB string, and a small one; the large one goes to an object store
//! (`object_store`'s `LocalFileSystem` in a temporary directory, the default 64 KiB threshold)
//! and the entry keeps a reference (size and SHA-256). Rounds alternate as in scenario 9: the
//! framework sending the same events in the hash layout (256 KiB in each payload hash), the
//! framework with object storage, and the raw baseline doing the same work by hand: the
//! encoded parameter hashed (SHA-256) and put in the same store at the same path, then the
//! same XADD; then the framework's consumer reading each of the two framework streams
//! (fetching and checking the objects), and the raw loop reading the raw stream (XREADGROUP,
//! the batch's objects read at once and checked, one XACK per batch; like scenario 2's raw
//! loop it does not decode the JSON). Then Redis memory per event of the two layouts
//! (scenario 6's count). Events per run: `--events` / 100, at least 100 (1000 by default).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use backbone_core::objects::object_store::local::LocalFileSystem;
use backbone_core::objects::object_store::{ObjectStoreExt, PutPayload};
use backbone_core::objects::ObjectStorage;
use backbone_core::{async_trait, events_contract, ConsumerContext, HandlerResult, MessageId};
use backbone_redis::RedisProducerBuilder;
use futures::future::try_join_all;
use redis::aio::MultiplexedConnection;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::common::{create_group, drive, read_group, xadd, Ctx, ReadEntry, Res};
use crate::compare::{self, rounds, Sides, Versus, HASH, RAW, VARIANT};
use crate::consume::{check_acked, framework_with, limit};
use crate::report::Row;

/// The size of the large parameter (a JSON string of this many bytes, plus its quotes).
pub const BODY: usize = 256 * 1024;

/// The operation of both contracts, and its parameters' names.
const OPERATION: &str = "document_stored";

/// Documents in the hash layout: every parameter in the payload hash.
#[events_contract]
pub trait Documents {
    async fn document_stored(&self, id: u64, body: String);
}

/// The same operation with object storage, so the hash-layout contract's consumer reads
/// these entries too.
#[events_contract(storage = "object")]
pub trait ObjectDocuments {
    async fn document_stored(&self, id: u64, body: String);
}

/// The large parameter every event carries (printable, nothing to escape in JSON).
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    (0..BODY)
        .map(|j| char::from(b'a' + (j % 26) as u8))
        .collect()
});

/// A handler that adds up the length of the bodies it gets.
struct Bodies(Arc<AtomicU64>);

#[async_trait]
impl DocumentsConsumer for Bodies {
    async fn document_stored(&self, _: &ConsumerContext, _: u64, body: String) -> HandlerResult {
        self.0.fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// The framework's producer of one of the two layouts.
#[derive(Clone)]
enum Framework {
    Hash(DocumentsProducer),
    Object(ObjectDocumentsProducer),
}

impl Framework {
    async fn send(&self, i: u64) -> Res<()> {
        match self {
            Framework::Hash(p) => p.document_stored(i, DOCUMENT.clone()).await?,
            Framework::Object(p) => p.document_stored(i, DOCUMENT.clone()).await?,
        };
        Ok(())
    }
}

/// The three sides, on one object store (its directory is removed when this is dropped).
struct Objects {
    storage: ObjectStorage,
    _dir: tempfile::TempDir,
}

impl Objects {
    fn new() -> Res<Objects> {
        let dir = tempfile::tempdir()?;
        let store = LocalFileSystem::new_with_prefix(dir.path())?;
        Ok(Objects {
            storage: ObjectStorage::new(Arc::new(store)),
            _dir: dir,
        })
    }

    async fn produce(&self, ctx: &Ctx, side: usize, uri: &str, n: u64) -> Res<Duration> {
        let builder = RedisProducerBuilder::new()
            .url(&ctx.url)
            .environment(&ctx.env)
            .uri(uri);
        let producer = match side {
            HASH => Framework::Hash(builder.build_documents_producer().await?),
            _ => Framework::Object(
                builder
                    .object_store(self.storage.clone())
                    .build_object_documents_producer()
                    .await?,
            ),
        };
        drive(n, ctx.opts.tasks, ctx.opts.in_flight, move |i| {
            let producer = producer.clone();
            async move { producer.send(i).await }
        })
        .await
    }

    /// The raw side: per event, the encoded body hashed and put in the store at the path the
    /// framework derives, then the XADD the framework's script makes (`objects` names it,
    /// `param.<name>` fields), one round trip per event.
    async fn produce_raw(&self, ctx: &Ctx, uri: &str, n: u64) -> Res<Duration> {
        let conn = ctx.conn().await?;
        let stream = ctx.keys(uri).stream().to_owned();
        let storage = self.storage.clone();
        drive(n, ctx.opts.tasks, ctx.opts.in_flight, move |i| {
            let (mut conn, stream, storage) = (conn.clone(), stream.clone(), storage.clone());
            async move {
                let body = serde_json::to_vec(&DOCUMENT.clone())?;
                let id = MessageId::new();
                let reference = format!("obj.v1.{}.{}", body.len(), sha256_hex(&body));
                let path = storage.path(&stream, &id, "body");
                storage.store().put(&path, PutPayload::from(body)).await?;
                xadd(&mut redis::cmd("XADD"), &stream, &id, OPERATION)
                    .arg("objects")
                    .arg("body")
                    .arg("param.id")
                    .arg(serde_json::to_vec(&i)?)
                    .arg("param.body")
                    .arg(reference)
                    .query_async::<String>(&mut conn)
                    .await?;
                Res::Ok(())
            }
        })
        .await
    }

    /// The framework's consumer of the hash-layout contract, with the object store; checks
    /// that every body arrived whole.
    async fn consume(&self, ctx: &Ctx, uri: &str, n: u64) -> Res<Duration> {
        let seen = Arc::new(AtomicU64::new(0));
        let handler = Bodies(seen.clone());
        let storage = self.storage.clone();
        let took = framework_with(ctx, uri, "fw", n, |builder| {
            builder
                .object_store(storage)
                .subscribe_documents_consumer(handler)
        })
        .await?;
        check_bodies(seen.load(Ordering::Relaxed), n)?;
        Ok(took)
    }

    /// The raw loop: XREADGROUP (on a connection of its own), the batch's objects read at
    /// once and checked against their reference, one XACK per batch.
    async fn consume_raw(&self, ctx: &Ctx, uri: &str, n: u64) -> Res<Duration> {
        let stream = ctx.keys(uri).stream().to_owned();
        let started = Instant::now();
        let deadline = started + limit(n);
        let mut reader = ctx.conn().await?;
        let mut commands = ctx.conn().await?;
        create_group(&mut commands, &stream, "raw", "0").await?;
        let (mut handled, mut seen) = (0u64, 0u64);
        while handled < n {
            if Instant::now() > deadline {
                return Err(
                    format!("raw consumer: {handled} of {n} events by the deadline").into(),
                );
            }
            let count = (n - handled).min(ctx.opts.batch as u64);
            let entries = read_group(&mut reader, &stream, "raw", count).await?;
            if entries.is_empty() {
                continue;
            }
            let fetches = entries
                .iter()
                .map(|(_, fields)| self.fetch(&stream, fields));
            seen += try_join_all(fetches).await?.iter().sum::<u64>();
            ack(&mut commands, &stream, &entries).await?;
            handled += entries.len() as u64;
        }
        let took = started.elapsed();
        // The framework hands the decoded string (the JSON's quotes off).
        check_bodies(seen - 2 * n, n)?;
        check_acked(ctx, uri, "raw").await?;
        Ok(took)
    }

    /// The object of one raw entry, read and checked against the entry's reference; its size.
    async fn fetch(&self, stream: &str, fields: &[(String, Vec<u8>)]) -> Res<u64> {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_slice())
                .ok_or_else(|| format!("a raw entry without {name}"))
        };
        let id: MessageId = std::str::from_utf8(field("message_id")?)?.parse()?;
        let reference = std::str::from_utf8(field("param.body")?)?;
        let path = self.storage.path(stream, &id, "body");
        let object = self.storage.store().get(&path).await?.bytes().await?;
        if format!("obj.v1.{}.{}", object.len(), sha256_hex(&object)) != reference {
            return Err(format!("object {path} is not the one {reference} refers to").into());
        }
        Ok(object.len() as u64)
    }
}

/// The SHA-256 of `bytes`, in lowercase hex.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn ack(conn: &mut MultiplexedConnection, stream: &str, entries: &[ReadEntry]) -> Res<()> {
    let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    redis::cmd("XACK")
        .arg(stream)
        .arg("raw")
        .arg(&ids)
        .query_async::<i64>(conn)
        .await?;
    Ok(())
}

fn check_bodies(seen: u64, n: u64) -> Res<()> {
    match seen == n * BODY as u64 {
        true => Ok(()),
        false => Err(format!("{seen} bytes of bodies for {n} events of {BODY}").into()),
    }
}

impl Sides for Objects {
    fn name(&self) -> &'static str {
        "object"
    }

    async fn write(&self, ctx: &Ctx, side: usize, uri: &str, n: u64) -> Res<Duration> {
        match side {
            RAW => self.produce_raw(ctx, uri, n).await,
            _ => self.produce(ctx, side, uri, n).await,
        }
    }

    async fn read(&self, ctx: &Ctx, side: usize, uri: &str, n: u64) -> Res<Duration> {
        match side {
            RAW => self.consume_raw(ctx, uri, n).await,
            _ => self.consume(ctx, uri, n).await,
        }
    }
}

pub async fn run(ctx: &Ctx) -> Res<(Vec<Row>, serde_json::Value)> {
    let n = (ctx.opts.events / 100).max(100);
    let sides = Objects::new()?;
    let rounds = rounds(ctx, &sides, n).await?;
    let (p, c) = (rounds.produce_rates(), rounds.consume_rates());
    let (hash, object, memory) = compare::memory(ctx, &sides, n).await?;
    let kib = BODY / 1024;
    let mut rows = rounds.rows(
        "object",
        Versus::Raw,
        [
            format!(
                "11 produce object ({n} ev of {kib} KiB, {} tasks x {} in flight)",
                ctx.opts.tasks, ctx.opts.in_flight
            ),
            format!("11 consume object ({n} ev, batch {})", ctx.opts.batch),
        ],
    );
    rows.push(compare::memory_row(
        format!("11 memory/event object vs hash layout ({n} ev, Redis only)"),
        (hash, object),
    ));
    let figures = json!({
        "events": n,
        "parameter_bytes": BODY,
        "store": "object_store::local::LocalFileSystem (temporary directory)",
        "produce_events_per_s": compare::rates_json("object", p),
        "consume_events_per_s": compare::rates_json("object", c),
        "produce_object_over_raw": p[VARIANT] / p[RAW],
        "produce_object_over_hash": p[VARIANT] / p[HASH],
        "consume_object_over_raw": c[VARIANT] / c[RAW],
        "consume_object_over_hash": c[VARIANT] / c[HASH],
        "memory": { "hash": hash.json(), "object": object.json(), "object_over_hash": memory },
        "rounds": rounds.json("object"),
    });
    Ok((rows, figures))
}
