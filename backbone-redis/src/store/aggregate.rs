//! Aggregates: `EventStore::load` with snapshots (being written).
