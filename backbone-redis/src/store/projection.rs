//! Checkpointed projections (being written).
