//! Scenario 6: Redis memory per event. M events are written the framework's way, the raw
//! baseline's way (the same HSET + XADD), and, for reference, inline (one XADD carrying the
//! metadata and the parameters, no hash). Every key under the stream's tag is counted with
//! `MEMORY USAGE <key> SAMPLES 0` (exact); the stream's share is its usage / XLEN.

use backbone_core::MessageId;
use backbone_redis::keys::StreamKeys;
use futures::StreamExt;
use serde_json::json;

use crate::common::{raw_fields, scan, xadd, Ctx, Res, OPERATION, PARAMS};
use crate::produce::{produce, Writer};
use crate::report::{bytes, Row};

/// The memory of one stream and every other key under its tag.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    pub keys: usize,
    pub stream_bytes: i64,
    pub other_bytes: i64,
    pub entries: i64,
}

impl Usage {
    /// All the bytes over the stream's entries.
    pub fn per_event(&self) -> f64 {
        (self.stream_bytes + self.other_bytes) as f64 / self.entries.max(1) as f64
    }

    pub fn json(&self) -> serde_json::Value {
        let entries = self.entries.max(1) as f64;
        json!({
            "keys": self.keys,
            "entries": self.entries,
            "bytes_per_event": self.per_event(),
            "stream_bytes_per_entry": self.stream_bytes as f64 / entries,
            "other_keys_bytes_per_event": self.other_bytes as f64 / entries,
        })
    }
}

/// What the keys of `keys`' tag hold (its partition count left out).
pub async fn usage(ctx: &Ctx, keys: &StreamKeys) -> Res<Usage> {
    let mut conn = ctx.conn().await?;
    let tag = keys.stream().trim_end_matches(":events");
    // The partition count the framework records (`…:partitions`, one per stream, since the
    // partitioned streams) is not a per-event cost: left out.
    let count_key = keys.partition_count();
    let mut found = scan(&mut conn, &format!("{tag}:*")).await?;
    found.retain(|key| *key != count_key);
    let mut usage = Usage {
        keys: found.len(),
        ..Usage::default()
    };
    for chunk in found.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0);
        }
        let sizes: Vec<Option<i64>> = pipe.query_async(&mut conn).await?;
        for (key, size) in chunk.iter().zip(sizes) {
            match key == keys.stream() {
                true => usage.stream_bytes += size.unwrap_or(0),
                false => usage.other_bytes += size.unwrap_or(0),
            }
        }
    }
    usage.entries = redis::cmd("XLEN")
        .arg(keys.stream())
        .query_async(&mut conn)
        .await?;
    Ok(usage)
}

/// The inline layout: one XADD with the metadata and the parameters' JSON.
async fn inline(ctx: &Ctx, keys: &StreamKeys, n: u64) -> Res<()> {
    let conn = ctx.conn().await?;
    let chunks = (0..n.div_ceil(500)).map(|c| {
        let mut conn = conn.clone();
        let keys = keys.clone();
        async move {
            let mut pipe = redis::pipe();
            for i in c * 500..((c + 1) * 500).min(n) {
                let fields = raw_fields(i, crate::common::now_ns())?;
                let mut cmd = redis::cmd("XADD");
                xadd(&mut cmd, keys.stream(), &MessageId::new(), OPERATION);
                for (name, value) in PARAMS.iter().zip(fields) {
                    cmd.arg(name).arg(value);
                }
                pipe.add_command(cmd);
            }
            pipe.query_async::<Vec<String>>(&mut conn).await?;
            Res::Ok(())
        }
    });
    let mut running = futures::stream::iter(chunks).buffer_unordered(4);
    while let Some(done) = running.next().await {
        done?;
    }
    Ok(())
}

pub async fn run(ctx: &Ctx) -> Res<(Vec<Row>, serde_json::Value)> {
    let m = ctx.opts.events.min(10_000);
    // Short names of equal length, as a deployment would have: the tag is in every payload
    // hash's key and in every entry's `payload` field, so long names cost twice per event.
    let (fw_uri, raw_uri, inline_uri) = ("mem.fw", "mem.rw", "mem.in");
    produce(ctx, Writer::Framework, fw_uri, m).await?;
    produce(ctx, Writer::RawPipeline, raw_uri, m).await?;
    inline(ctx, &ctx.keys(inline_uri), m).await?;
    let fw = usage(ctx, &ctx.keys(fw_uri)).await?;
    let raw = usage(ctx, &ctx.keys(raw_uri)).await?;
    let inl = usage(ctx, &ctx.keys(inline_uri)).await?;
    let payload_key_len = ctx.keys(fw_uri).payload(&MessageId::new()).len();
    ctx.cleanup().await?;
    for (name, u) in [("framework", fw), ("raw", raw)] {
        if u.keys as i64 != u.entries + 1 || u.entries != m as i64 {
            return Err(format!("{name} layout: {} keys for {} entries", u.keys, u.entries).into());
        }
    }
    let rows = vec![
        Row::new(
            format!("6 memory/event ({m} ev: hash + stream share)"),
            bytes(fw.per_event()),
            bytes(raw.per_event()),
        )
        .ratio(fw.per_event() / raw.per_event()),
        Row::new(
            "  memory/event vs inline XADD (no hash)",
            bytes(fw.per_event()),
            bytes(inl.per_event()),
        )
        .ratio(fw.per_event() / inl.per_event()),
    ];
    let figures = json!({
        "events": m,
        "payload_key_example_len": payload_key_len,
        "framework": fw.json(),
        "raw": raw.json(),
        "inline": inl.json(),
        "ratio": fw.per_event() / raw.per_event(),
        "ratio_vs_inline": fw.per_event() / inl.per_event(),
    });
    Ok((rows, figures))
}
