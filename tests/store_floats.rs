//! `f64` values come back from the event store bit for bit (`to_bits`): appended and read
//! back, folded into an aggregate loaded from its snapshot, and folded into a projection and
//! restored from its checkpoint. Regression: `-1.5e-300` once came back as
//! `-1.4999999999999998e-300` (serde_json without `float_roundtrip`).

mod common;

use std::time::Duration;

use backbone_core::store::{Aggregate, AppendOptions, CachingPolicy, CheckpointPolicy};
use backbone_core::store::{ExpectedVersion, Projection};
use backbone_core::{events_contract, Metadata};
use backbone_redis::store::{EventStore, EventStoreBuilder};
use backbone_redis::testing::{shared, unique_name};
use common::FLOATS;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

#[events_contract]
pub trait Gauge {
    async fn measured(&self, value: f64, several: Vec<f64>);
}

/// Every value folded, in order; `applied` (not saved) counts what this process applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Values {
    values: Vec<f64>,
    #[serde(skip)]
    applied: u64,
}

impl Values {
    fn fold(&mut self, GaugeEvent::Measured { value, several }: &GaugeEvent) {
        self.values.push(*value);
        self.values.extend(several);
        self.applied += 1;
    }
}

impl Aggregate for Values {
    type Event = GaugeEvent;
    const NAME: &'static str = "values-v1";
    fn apply(&mut self, event: &GaugeEvent) {
        self.fold(event);
    }
}

impl Projection for Values {
    type Event = GaugeEvent;
    const NAME: &'static str = "values-v1";
    fn apply(&mut self, event: &GaugeEvent, _: &Metadata) {
        self.fold(event);
    }
}

fn bits(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// One event per value, each also carrying every value in a list.
fn events() -> Vec<GaugeEvent> {
    FLOATS
        .iter()
        .map(|&value| GaugeEvent::Measured {
            value,
            several: FLOATS.to_vec(),
        })
        .collect()
}

/// What folding [`events`] gives.
fn folded() -> Vec<u64> {
    let mut expected = Values::default();
    events().iter().for_each(|e| expected.fold(e));
    bits(&expected.values)
}

async fn store(caching: CachingPolicy) -> EventStore<GaugeEvent> {
    let redis = shared().await.unwrap();
    let store = EventStoreBuilder::new()
        .url(redis.url())
        .uri(unique_name("floats"))
        .caching(caching)
        .build::<GaugeEvent>()
        .await
        .unwrap();
    store
        .append(
            "g",
            ExpectedVersion::NoStream,
            &events(),
            AppendOptions::default(),
        )
        .await
        .unwrap();
    store
}

fn assert_event_bits(got: &[GaugeEvent]) {
    assert_eq!(got.len(), FLOATS.len());
    for (event, expected) in got.iter().zip(FLOATS) {
        let GaugeEvent::Measured { value, several } = event;
        assert_eq!(
            value.to_bits(),
            expected.to_bits(),
            "{value:e} != {expected:e}"
        );
        assert_eq!(bits(several), bits(&FLOATS), "{several:?}");
    }
}

#[tokio::test]
async fn append_then_read_keeps_every_bit() {
    let store = store(CachingPolicy::Never).await;
    let page = store.read("g", 1, 100).await.unwrap();
    let got: Vec<_> = page.events.into_iter().map(|e| e.event).collect();
    assert_event_bits(&got);
    let streamed: Vec<_> = store
        .stream("g", 1)
        .map_ok(|e| e.event)
        .try_collect()
        .await
        .unwrap();
    assert_event_bits(&streamed);
    let between = store.read_between(0, u64::MAX, None, 100).await.unwrap();
    let got: Vec<_> = between.events.into_iter().map(|e| e.event).collect();
    assert_event_bits(&got);
}

#[tokio::test]
async fn an_aggregate_loaded_from_its_snapshot_keeps_every_bit() {
    let store = store(CachingPolicy::EveryEvents(1)).await;
    let replayed = store.load::<Values>("g").await.unwrap();
    assert_eq!(bits(&replayed.state.values), folded());
    // The load wrote a snapshot at version 7 in the background.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.snapshot::<Values>("g").await.unwrap().map(|s| s.0) != Some(7) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cached = store.load::<Values>("g").await.unwrap();
    assert_eq!(cached.version, 7);
    assert_eq!(cached.state.applied, 0, "the state came from the snapshot");
    assert_eq!(bits(&cached.state.values), folded());
}

#[tokio::test]
async fn a_projection_s_checkpoint_keeps_every_bit() {
    let store = store(CachingPolicy::Never).await;
    let handle = store
        .project::<Values>(CheckpointPolicy::default())
        .await
        .unwrap();
    handle.caught_up().await.unwrap();
    assert_eq!(bits(&handle.state().values), folded());
    handle.shutdown().await.unwrap(); // saves the checkpoint
    let checkpoint = store.checkpoint::<Values>().await.unwrap().unwrap();
    assert_eq!(checkpoint.events, 7);
    assert_eq!(bits(&checkpoint.state.values), folded());
    // A restart starts from the checkpoint's state, applying nothing.
    let handle = store
        .project::<Values>(CheckpointPolicy::default())
        .await
        .unwrap();
    handle.caught_up().await.unwrap();
    let state = handle.state();
    assert_eq!(state.applied, 0, "the state came from the checkpoint");
    assert_eq!(bits(&state.values), folded());
    handle.shutdown().await.unwrap();
}
