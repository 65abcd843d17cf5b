//! Observability built on [middleware](crate::middleware): spans after the OpenTelemetry
//! messaging conventions ([`TracingMiddleware`]) and metrics through the `metrics` facade
//! ([`MetricsMiddleware`]). Every producer and consumer runs both, first in its chain; they
//! cost next to nothing until an application installs a `tracing` subscriber or a `metrics`
//! recorder.
//!
//! With the `otel` feature, the `send` span's W3C trace context is written into each entry
//! (`traceparent`, `tracestate`) and the consumer's `process` span continues that trace, so one
//! trace runs producer → consumer → the next producer. That needs a
//! `tracing_opentelemetry` layer in the application's subscriber.
//!
//! # Metrics
//!
//! Install a recorder (`metrics-exporter-prometheus`, say) before building producers and
//! consumers: they look their counters up once per operation and keep them.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `backbone_sent_total` | counter | destination, operation | events sent |
//! | `backbone_send_errors_total` | counter | destination, operation, error_type | sends that failed |
//! | `backbone_send_duration_seconds` | histogram | destination, operation | time a send took |
//! | `backbone_handled_total` | counter | destination, group, operation | handler calls that succeeded |
//! | `backbone_handler_errors_total` | counter | destination, group, operation, kind (`handler` or `bad_event`) | handler calls that failed; events the handler chain could not decode (a bad parameter, an upcaster's refusal, an unknown operation no fallback took). Entries dead-lettered before any handler (malformed metadata, a missing payload, too many deliveries) count only in `backbone_dead_lettered_total` |
//! | `backbone_handler_duration_seconds` | histogram | destination, group, operation | time in the handler (decoding and inner middleware included) |
//! | `backbone_end_to_end_latency_seconds` | histogram | destination, group, operation | `produced_at` to the handler's success |
//! | `backbone_retries_total` | counter | destination, group | deliveries that will be retried |
//! | `backbone_dead_lettered_total` | counter | destination, group | entries moved to the dead letters |
//! | `backbone_claimed_total` | counter | destination, group | entries claimed from stalled consumers |
//! | `backbone_group_pending` | gauge | destination, group | entries delivered and not acknowledged |
//! | `backbone_group_lag` | gauge | destination, group | entries not yet delivered to the group |
//! | `backbone_group_consumers` | gauge | destination, group | consumers in the group |
//!
//! `destination` is `<environment>:<uri>` (or the uri). On a partitioned stream the counters
//! and histograms sum the partitions, and the gauges carry a `partition` label as well.

mod metrics;
#[cfg(feature = "otel")]
mod otel;
mod tracing;

pub use self::metrics::{names, MetricsMiddleware};
pub use self::tracing::TracingMiddleware;
