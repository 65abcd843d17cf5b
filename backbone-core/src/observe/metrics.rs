//! [`MetricsMiddleware`]: counters, histograms and gauges through the `metrics` facade.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use metrics::{counter, gauge, Counter, Histogram};

use crate::metadata::now_millis;
use crate::middleware::{
    ChannelInfo, GroupState, Middleware, NextHandle, NextRead, NextSend, ReadKind, ReadRequest,
    Settled, Settlement,
};
use crate::{ConsumerContext, Error, Fields, HandleError, MessageId, OutgoingEvent};

/// The metric names (see the table in [`observe`](crate::observe)).
pub mod names {
    /// Counter: events sent.
    pub const SENT: &str = "backbone_sent_total";
    /// Counter: sends that failed.
    pub const SEND_ERRORS: &str = "backbone_send_errors_total";
    /// Histogram (seconds): time a send took.
    pub const SEND_DURATION: &str = "backbone_send_duration_seconds";
    /// Counter: handler calls that succeeded.
    pub const HANDLED: &str = "backbone_handled_total";
    /// Counter: handler calls that failed and events that could not be decoded.
    pub const HANDLER_ERRORS: &str = "backbone_handler_errors_total";
    /// Histogram (seconds): time in the handler.
    pub const HANDLER_DURATION: &str = "backbone_handler_duration_seconds";
    /// Histogram (seconds): `produced_at` to the handler's success.
    pub const END_TO_END_LATENCY: &str = "backbone_end_to_end_latency_seconds";
    /// Counter: deliveries that will be retried.
    pub const RETRIES: &str = "backbone_retries_total";
    /// Counter: entries moved to the dead letters.
    pub const DEAD_LETTERED: &str = "backbone_dead_lettered_total";
    /// Counter: entries claimed from stalled consumers.
    pub const CLAIMED: &str = "backbone_claimed_total";
    /// Gauge: entries delivered to the group and not acknowledged.
    pub const GROUP_PENDING: &str = "backbone_group_pending";
    /// Gauge: entries not yet delivered to the group.
    pub const GROUP_LAG: &str = "backbone_group_lag";
    /// Gauge: consumers in the group.
    pub const GROUP_CONSUMERS: &str = "backbone_group_consumers";
}

/// Records backbone's metrics (see [`observe`](crate::observe)) with whatever `metrics`
/// recorder the application installed. Handles are looked up once per (stream, group,
/// operation) and kept, so install the recorder before building producers and consumers.
#[derive(Debug, Default)]
pub struct MetricsMiddleware {
    sends: Mutex<HashMap<String, HashMap<&'static str, Arc<SendMetrics>>>>,
    handles: Mutex<HashMap<String, HashMap<String, Arc<HandleMetrics>>>>,
}

#[derive(Debug)]
struct SendMetrics {
    sent: Counter,
    duration: Histogram,
}

#[derive(Debug)]
struct HandleMetrics {
    handled: Counter,
    failed: Counter,
    bad: Counter,
    duration: Histogram,
    latency: Histogram,
}

fn group_labels(channel: &ChannelInfo) -> [(&'static str, String); 2] {
    [
        ("destination", channel.destination().to_owned()),
        ("group", channel.group().unwrap_or_default().to_owned()),
    ]
}

impl MetricsMiddleware {
    fn send_metrics(&self, channel: &ChannelInfo, operation: &'static str) -> Arc<SendMetrics> {
        let mut all = self.sends.lock().unwrap_or_else(|e| e.into_inner());
        let by_op = match all.get_mut(channel.destination()) {
            Some(by_op) => by_op,
            None => all.entry(channel.destination().to_owned()).or_default(),
        };
        by_op
            .entry(operation)
            .or_insert_with(|| {
                let labels = [
                    ("destination", channel.destination().to_owned()),
                    ("operation", operation.to_owned()),
                ];
                Arc::new(SendMetrics {
                    sent: counter!(names::SENT, &labels),
                    duration: metrics::histogram!(names::SEND_DURATION, &labels),
                })
            })
            .clone()
    }

    fn handle_metrics(&self, channel: &ChannelInfo, operation: &str) -> Arc<HandleMetrics> {
        let mut all = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let key = channel.metrics_key();
        let by_op = match all.get_mut(key) {
            Some(by_op) => by_op,
            None => all.entry(key.to_owned()).or_default(),
        };
        if let Some(found) = by_op.get(operation) {
            return found.clone();
        }
        let [destination, group] = group_labels(channel);
        let labels = [destination, group, ("operation", operation.to_owned())];
        let kind = |kind: &str| {
            let mut with_kind = labels.to_vec();
            with_kind.push(("kind", kind.to_owned()));
            counter!(names::HANDLER_ERRORS, &with_kind)
        };
        let made = Arc::new(HandleMetrics {
            handled: counter!(names::HANDLED, &labels),
            failed: kind("handler"),
            bad: kind("bad_event"),
            duration: metrics::histogram!(names::HANDLER_DURATION, &labels),
            latency: metrics::histogram!(names::END_TO_END_LATENCY, &labels),
        });
        by_op.insert(operation.to_owned(), made.clone());
        made
    }
}

#[async_trait]
impl Middleware for MetricsMiddleware {
    async fn send(
        &self,
        channel: &ChannelInfo,
        event: OutgoingEvent,
        next: NextSend<'_>,
    ) -> Result<MessageId, Error> {
        let operation = event.operation;
        let started = Instant::now();
        let result = next.run(event).await;
        let m = self.send_metrics(channel, operation);
        m.duration.record(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => m.sent.increment(1),
            Err(e) => counter!(
                names::SEND_ERRORS,
                "destination" => channel.destination().to_owned(),
                "operation" => operation,
                "error_type" => e.kind(),
            )
            .increment(1),
        }
        result
    }

    async fn handle(
        &self,
        channel: &ChannelInfo,
        ctx: &ConsumerContext,
        fields: &Fields,
        next: NextHandle<'_>,
    ) -> Result<(), HandleError> {
        let started = Instant::now();
        let result = next.run(ctx, fields).await;
        let meta = ctx.metadata();
        let m = self.handle_metrics(channel, &meta.operation);
        m.duration.record(started.elapsed().as_secs_f64());
        match &result {
            Ok(()) => {
                m.handled.increment(1);
                let latency_ms = now_millis().saturating_sub(meta.produced_at);
                m.latency.record(latency_ms as f64 / 1000.0);
            }
            Err(HandleError::BadEvent(_)) => m.bad.increment(1),
            Err(HandleError::Handler(_)) => m.failed.increment(1),
        }
        result
    }

    async fn read(
        &self,
        channel: &ChannelInfo,
        read: ReadRequest,
        next: NextRead<'_>,
    ) -> Result<usize, Error> {
        let result = next.run().await;
        if let (ReadKind::Claim, Ok(n)) = (read.kind, &result) {
            if *n > 0 {
                counter!(names::CLAIMED, &group_labels(channel)).increment(*n as u64);
            }
        }
        result
    }

    fn settled(&self, channel: &ChannelInfo, settled: &Settled<'_>) {
        let name = match settled.outcome {
            Settlement::Retrying { .. } => names::RETRIES,
            Settlement::DeadLettered { .. } => names::DEAD_LETTERED,
            _ => return,
        };
        counter!(name, &group_labels(channel)).increment(1);
    }

    fn group_observed(&self, channel: &ChannelInfo, state: &GroupState) {
        let mut labels = group_labels(channel).to_vec();
        if let Some(p) = channel.partition() {
            labels.push(("partition", p.to_string()));
        }
        gauge!(names::GROUP_PENDING, &labels).set(state.pending as f64);
        gauge!(names::GROUP_CONSUMERS, &labels).set(state.consumers as f64);
        if let Some(lag) = state.lag {
            gauge!(names::GROUP_LAG, &labels).set(lag as f64);
        }
    }
}
