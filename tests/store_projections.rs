//! Checkpointed projections over real Redis: the fold equals a full replay; checkpoints every N
//! events and after T; a projection killed mid-way resumes exactly once; a restart does not
//! re-read what its checkpoint holds; `rebuild` starts from zero; an undecodable entry stops
//! the projection at it; a Redis outage loses and repeats nothing.

mod common;

use std::time::Duration;

use backbone_core::metadata::now_millis;
use backbone_core::store::{AppendOptions, CheckpointPolicy, ExpectedVersion, Projection};
use backbone_core::{events_contract, MessageId, Metadata};
use backbone_redis::store::{EventStore, EventStoreBuilder};
use backbone_redis::testing::{shared, unique_name, RedisServer, ServerOptions};
use common::{raw, WAIT};
use serde::{Deserialize, Serialize};

#[events_contract]
pub trait Tally {
    async fn added(&self, n: u64);
    async fn noted(&self, text: String);
}

/// Reveals a duplicated or missing event: `seen` lists every position folded, in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Sum {
    sum: u64,
    notes: Vec<String>,
    seen: Vec<String>,
    /// Events applied by this process (not saved): what a restart re-read.
    #[serde(skip)]
    applied_here: u64,
}

impl Sum {
    fn saved_part(&self) -> (u64, &[String], &[String]) {
        (self.sum, &self.notes, &self.seen)
    }
}

impl Projection for Sum {
    type Event = TallyEvent;
    const NAME: &'static str = "sum-v1";
    fn apply(&mut self, event: &TallyEvent, metadata: &Metadata) {
        match event {
            TallyEvent::Added { n } => self.sum += n,
            TallyEvent::Noted { text } => self.notes.push(text.clone()),
        }
        self.seen.push(metadata.stream_id.clone());
        self.applied_here += 1;
    }
}

async fn store() -> EventStore<TallyEvent> {
    let redis = shared().await.unwrap();
    EventStoreBuilder::new()
        .url(redis.url())
        .uri(unique_name("projections"))
        .build::<TallyEvent>()
        .await
        .unwrap()
}

fn policy(every_events: u64, every: Duration) -> CheckpointPolicy {
    CheckpointPolicy {
        every_events,
        every,
    }
}

/// Appends `count` events numbered from `from` to a few aggregates (every fifth is a note);
/// returns their positions.
async fn append(store: &EventStore<TallyEvent>, from: u64, count: u64) -> Vec<String> {
    let mut positions = Vec::new();
    for chunk_start in (from..from + count).step_by(10) {
        let events: Vec<_> = (chunk_start..(chunk_start + 10).min(from + count))
            .map(|n| match n % 5 {
                4 => TallyEvent::Noted {
                    text: format!("note {n}"),
                },
                _ => TallyEvent::Added { n },
            })
            .collect();
        let aggregate = format!("agg-{}", chunk_start % 3);
        let result = store
            .append(
                &aggregate,
                ExpectedVersion::Any,
                &events,
                AppendOptions::default(),
            )
            .await
            .unwrap();
        positions.extend(result.positions);
    }
    positions
}

/// The brute-force fold of every event in the stream, read with the store's own reads.
async fn full_replay(store: &EventStore<TallyEvent>) -> Sum {
    let mut sum = Sum::default();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .read_between(0, u64::MAX, after.as_deref(), 100)
            .await
            .unwrap();
        for stored in &page.events {
            sum.apply(&stored.event, &stored.metadata);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return sum,
        }
    }
}

#[tokio::test]
async fn the_fold_equals_a_full_replay_and_follows_new_events() {
    let store = store().await;
    let positions = append(&store, 0, 250).await;
    let handle = store
        .project::<Sum>(CheckpointPolicy::default())
        .await
        .unwrap();
    handle.caught_up().await.unwrap();
    let expected = full_replay(&store).await;
    assert_eq!(expected.seen, positions);
    assert_eq!(handle.state().saved_part(), expected.saved_part());
    // It keeps following the stream.
    let more = append(&store, 250, 5).await;
    handle.caught_up().await.unwrap();
    assert_eq!(
        handle.state().saved_part(),
        full_replay(&store).await.saved_part()
    );
    let progress = handle.progress();
    assert_eq!(progress.position.as_ref(), more.last());
    assert_eq!((progress.events, progress.applied), (255, 255));
    // Default policy: every 100 events.
    assert_eq!(progress.checkpoints, 2);
    handle.shutdown().await.unwrap();
    let checkpoint = store.checkpoint::<Sum>().await.unwrap().unwrap();
    assert_eq!(checkpoint.position, more[4]);
    assert_eq!(checkpoint.events, 255);
}

#[tokio::test]
async fn checkpoints_every_n_events_with_state_and_position_together() {
    let store = store().await;
    let positions = append(&store, 0, 25).await;
    let handle = store
        .project::<Sum>(policy(10, Duration::from_secs(3600)))
        .await
        .unwrap();
    handle.caught_up().await.unwrap();
    let checkpoint = store.checkpoint::<Sum>().await.unwrap().unwrap();
    assert_eq!(
        (checkpoint.events, &checkpoint.position),
        (20, &positions[19])
    );
    assert_eq!(checkpoint.state.seen, positions[..20]);
    assert_eq!(handle.progress().saved.as_ref(), Some(&positions[19]));
    assert_eq!(handle.progress().checkpoints, 2);
    // The hash as written: one field each.
    let mut conn = raw(shared().await.unwrap().url()).await;
    let key = store.keys().projection("sum-v1");
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut fields = fields;
    fields.sort();
    assert_eq!(fields, ["at", "events", "position", "state"]);
    // Shutdown saves the rest.
    handle.shutdown().await.unwrap();
    let checkpoint = store.checkpoint::<Sum>().await.unwrap().unwrap();
    assert_eq!(
        (checkpoint.events, &checkpoint.position),
        (25, &positions[24])
    );
    assert_eq!(checkpoint.state.seen, positions);
}

#[tokio::test]
async fn checkpoints_after_t_with_unsaved_events() {
    let store = store().await;
    let every = Duration::from_millis(300);
    let handle = store.project::<Sum>(policy(1000, every)).await.unwrap();
    let before = now_millis();
    let positions = append(&store, 0, 3).await;
    handle.caught_up().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let checkpoint = loop {
        if let Some(checkpoint) = store.checkpoint::<Sum>().await.unwrap() {
            break checkpoint;
        }
        assert!(tokio::time::Instant::now() < deadline, "no checkpoint");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (checkpoint.events, &checkpoint.position),
        (3, &positions[2])
    );
    assert!(
        checkpoint.at >= before + every.as_millis() as u64,
        "saved {} ms after the append, before T",
        checkpoint.at - before
    );
    // Nothing unsaved, so no further checkpoints while idle.
    tokio::time::sleep(every * 2).await;
    assert_eq!(handle.progress().checkpoints, 1);
    handle.abort();
}

#[tokio::test]
async fn a_projection_killed_mid_way_resumes_and_applies_each_event_exactly_once() {
    let store = store().await;
    append(&store, 0, 200).await;
    let handle = store
        .project::<Sum>(policy(7, Duration::from_secs(3600)))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while handle.progress().events < 30 {
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let killed_at = handle.progress().events;
    handle.abort(); // no final checkpoint: a crash
    let checkpoint = store.checkpoint::<Sum>().await.unwrap().unwrap();
    assert!(checkpoint.events < 200, "killed after the end");
    assert_eq!(
        checkpoint.events % 7,
        0,
        "only policy checkpoints were written"
    );
    assert_eq!(checkpoint.state.seen.len() as u64, checkpoint.events);
    assert!(checkpoint.events <= killed_at);
    append(&store, 200, 50).await;

    let handle = store
        .project::<Sum>(policy(7, Duration::from_secs(3600)))
        .await
        .unwrap();
    handle.caught_up().await.unwrap();
    let state = handle.state();
    let expected = full_replay(&store).await;
    assert_eq!(expected.seen.len(), 250);
    assert_eq!(state.saved_part(), expected.saved_part());
    let progress = handle.progress();
    assert_eq!(progress.events, 250);
    assert_eq!(progress.applied, 250 - checkpoint.events);
    assert_eq!(state.applied_here, 250 - checkpoint.events);
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restart_resumes_from_the_checkpoint_without_rereading() {
    let store = store().await;
    append(&store, 0, 40).await;
    let handle = store
        .project::<Sum>(CheckpointPolicy::default())
        .await
        .unwrap();
    handle.caught_up().await.unwrap();
    handle.shutdown().await.unwrap();
    assert_eq!(store.checkpoint::<Sum>().await.unwrap().unwrap().events, 40);
    let more = append(&store, 40, 5).await;

    let handle = store
        .project::<Sum>(CheckpointPolicy::default())
        .await
        .unwrap();
    let restored = handle.progress();
    assert_eq!((restored.events, restored.applied), (40, 0));
    assert_eq!(restored.saved, restored.position);
    handle.caught_up().await.unwrap();
    let state = handle.state();
    assert_eq!(state.applied_here, 5, "re-read events the checkpoint holds");
    assert_eq!(state.seen[40..], more);
    assert_eq!(state.saved_part(), full_replay(&store).await.saved_part());
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn rebuild_starts_from_zero_and_converges_to_the_same_state() {
    let store = store().await;
    append(&store, 0, 30).await;
    let handle = store
        .project::<Sum>(CheckpointPolicy::default())
        .await
        .unwrap();
    handle.caught_up().await.unwrap();
    let before = handle.state();
    handle.shutdown().await.unwrap();

    assert!(store.rebuild::<Sum>().await.unwrap());
    assert!(store.checkpoint::<Sum>().await.unwrap().is_none());
    assert!(!store.rebuild::<Sum>().await.unwrap());
    let handle = store
        .project::<Sum>(CheckpointPolicy::default())
        .await
        .unwrap();
    assert_eq!(handle.progress().position, None);
    handle.caught_up().await.unwrap();
    let after = handle.state();
    assert_eq!(after.applied_here, 30);
    assert_eq!(after.saved_part(), before.saved_part());
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_undecodable_entry_stops_the_projection_at_it() {
    let store = store().await;
    let mut conn = raw(shared().await.unwrap().url()).await;
    let stream = store.keys().stream().to_owned();
    let good = append(&store, 0, 3).await;
    // Metadata without a message id.
    let malformed: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg(&[
            ("operation", "added"),
            ("version", "0"),
            ("produced_at", "1"),
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    append(&store, 3, 2).await;
    // Well-formed metadata, a parameter that is not a number.
    let id = MessageId::new();
    let payload = store.keys().payload(&id);
    let _: () = redis::cmd("HSET")
        .arg(&payload)
        .arg("n")
        .arg("\"seven\"")
        .query_async(&mut conn)
        .await
        .unwrap();
    let undecodable: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg(&[
            ("message_id", id.to_string().as_str()),
            ("operation", "added"),
            ("version", "0"),
            ("produced_at", "1"),
            ("payload", payload.as_str()),
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    append(&store, 5, 1).await;

    // It stops at the malformed entry, with everything before it saved.
    let handle = store
        .project::<Sum>(CheckpointPolicy::default())
        .await
        .unwrap();
    let err = handle.caught_up().await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("cannot decode entry {malformed}")),
        "{err}"
    );
    assert!(err.contains("field `message_id` is missing"), "{err}");
    assert_eq!(handle.state().seen, good);
    let shutdown = handle.shutdown().await.unwrap_err().to_string();
    assert_eq!(shutdown, err);
    let checkpoint = store.checkpoint::<Sum>().await.unwrap().unwrap();
    assert_eq!((checkpoint.events, &checkpoint.position), (3, &good[2]));

    // A restart stops there again; deleted, the next bad one stops it.
    let handle = store
        .project::<Sum>(CheckpointPolicy::default())
        .await
        .unwrap();
    assert!(handle.caught_up().await.is_err());
    assert_eq!(handle.progress().applied, 0);
    handle.abort();
    let _: u64 = redis::cmd("XDEL")
        .arg(&stream)
        .arg(&malformed)
        .query_async(&mut conn)
        .await
        .unwrap();
    let handle = store
        .project::<Sum>(CheckpointPolicy::default())
        .await
        .unwrap();
    let err = handle.caught_up().await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("cannot decode entry {undecodable}")),
        "{err}"
    );
    assert!(err.contains("parameter `n`"), "{err}");
    assert_eq!(handle.progress().applied, 2);
    assert!(handle.shutdown().await.is_err());
    assert_eq!(store.checkpoint::<Sum>().await.unwrap().unwrap().events, 5);

    // Repaired, it converges to the fold of the good events, each once.
    let _: () = redis::cmd("HSET")
        .arg(&payload)
        .arg("n")
        .arg("7")
        .query_async(&mut conn)
        .await
        .unwrap();
    let handle = store
        .project::<Sum>(CheckpointPolicy::default())
        .await
        .unwrap();
    handle.caught_up().await.unwrap();
    assert_eq!(handle.progress().applied, 2);
    let state = handle.state();
    assert_eq!(state.saved_part(), full_replay(&store).await.saved_part());
    assert_eq!(state.sum, (0..6).filter(|n| n % 5 != 4).sum::<u64>() + 7);
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stopped_projection_says_that_the_projection_stopped() {
    let store = store().await;
    let mut conn = raw(shared().await.unwrap().url()).await;
    append(&store, 0, 2).await;
    let bad: String = redis::cmd("XADD")
        .arg(store.keys().stream())
        .arg("*")
        .arg(&[("operation", "added")])
        .query_async(&mut conn)
        .await
        .unwrap();
    let handle = store
        .project::<Sum>(CheckpointPolicy::default())
        .await
        .unwrap();
    let err = handle.caught_up().await.unwrap_err();
    assert!(matches!(err, backbone_core::Error::Stopped(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "projection `sum-v1` stopped: cannot decode entry {bad} of {}: ",
            store.keys().stream()
        )),
        "{text}"
    );
    let shutdown = handle.shutdown().await.unwrap_err();
    assert!(matches!(shutdown, backbone_core::Error::Stopped(_)));
    assert_eq!(shutdown.to_string(), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rides_out_a_redis_outage_without_losing_or_repeating_events() {
    let blocking = |mut server: RedisServer, start: bool| {
        tokio::task::spawn_blocking(move || {
            match start {
                true => server.start().unwrap(),
                false => server.stop().unwrap(),
            }
            server
        })
    };
    let options = ServerOptions {
        appendonly: true,
        ..Default::default()
    };
    let server = tokio::task::spawn_blocking(|| RedisServer::spawn(options))
        .await
        .unwrap()
        .expect("spawn a redis-server with AOF");
    let store = EventStoreBuilder::new()
        .url(server.url())
        .uri(unique_name("outage"))
        .build::<TallyEvent>()
        .await
        .unwrap();
    append(&store, 0, 10).await;
    let handle = store
        .project::<Sum>(policy(5, Duration::from_secs(3600)))
        .await
        .unwrap();
    handle.caught_up().await.unwrap();

    let server = blocking(server, false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await; // polls fail meanwhile
    assert!(!handle.is_finished(), "an unreachable Redis stopped it");
    let _server = blocking(server, true).await.unwrap();
    let events: Vec<_> = (10..15).map(|n| TallyEvent::Added { n }).collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    let options = AppendOptions::idempotent("after-the-outage");
    while let Err(e) = store
        .append("agg-0", ExpectedVersion::Any, &events, options.clone())
        .await
    {
        assert!(tokio::time::Instant::now() < deadline, "append: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(WAIT, handle.caught_up())
        .await
        .expect("caught up after the outage")
        .unwrap();
    let state = handle.state();
    assert_eq!(state.saved_part(), full_replay(&store).await.saved_part());
    assert_eq!((state.applied_here, state.seen.len()), (15, 15));
    handle.shutdown().await.unwrap();
    assert_eq!(store.checkpoint::<Sum>().await.unwrap().unwrap().events, 15);
}
