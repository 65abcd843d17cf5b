//! The group gauges: every `group_metrics_interval`, `XINFO GROUPS` on the partition's stream,
//! told to the middlewares ([`Middleware::group_observed`]), where
//! [`MetricsMiddleware`](backbone_core::observe::MetricsMiddleware) sets
//! `backbone_group_pending`, `backbone_group_lag` and `backbone_group_consumers`.
//!
//! [`Middleware::group_observed`]: backbone_core::Middleware::group_observed

use std::sync::Arc;
use std::time::Duration;

use backbone_core::middleware::GroupState;
use backbone_core::Error;
use redis::streams::StreamInfoGroupsReply;
use tokio_util::sync::CancellationToken;

use super::job::Shared;
use crate::connection::redis_error;

/// Observes until `stop` is cancelled. A failed observation is logged and tried again next
/// time; a refused one (NOPERM, lost authentication) ends the consumer like any other.
pub(super) async fn gauges(shared: Arc<Shared>, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match observe(&shared).await {
            Ok(Some(state)) => shared.middlewares.group_observed(&shared.info, &state),
            Ok(None) => {}
            Err(e) => {
                if let Some(e) = shared.fatal.raise_if_fatal(e) {
                    tracing::warn!(stream = shared.keys.stream(), group = %shared.group, error = %e,
                        "could not read the group's state for its gauges");
                }
            }
        }
    }
}

async fn observe(shared: &Shared) -> Result<Option<GroupState>, Error> {
    let stream = shared.keys.stream();
    let info: StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut shared.commands.clone())
        .await
        .map_err(|e| redis_error(format!("XINFO GROUPS {stream}"), e))?;
    Ok(info
        .groups
        .into_iter()
        .find(|g| g.name == shared.group)
        .map(|g| GroupState {
            pending: g.pending as u64,
            lag: g.lag.map(|lag| lag as u64),
            consumers: g.consumers as u64,
        }))
}
