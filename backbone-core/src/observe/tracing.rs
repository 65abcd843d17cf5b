//! [`TracingMiddleware`]: `send`, `process` and `settle` spans.

use async_trait::async_trait;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::middleware::{ChannelInfo, Middleware, NextHandle, NextSend, Settled, SpanOperation};
use crate::{ConsumerContext, Error, Fields, HandleError, MessageId, OutgoingEvent};

/// Spans named and attributed after the OpenTelemetry messaging conventions, at `DEBUG` level,
/// target `backbone` (one to three per event: a service logging at `INFO` does not build them;
/// give the OpenTelemetry layer a filter such as `backbone=debug` to trace):
///
/// - `send <destination>` around each send (`messaging.operation.type` = `send`, span kind
///   producer);
/// - `process <destination>` around each handler call (`process`, span kind consumer), with
///   `messaging.consumer.group.name`, `messaging.client.id` and `backbone.delivery_count`;
/// - `settle <destination>` for how each delivery ended (`backbone.outcome`: `ack`, `skip`,
///   `retry`, `dead_letter`, `pending`).
///
/// All carry `messaging.system`, `messaging.destination.name`, `messaging.message.id`,
/// `messaging.message.conversation_id` (the correlation id), `backbone.operation` and
/// `backbone.version`; a failure records `error.type` (and `otel.status_code` = `ERROR`). The
/// span name is set through `otel.name`; `tracing` itself names them `send`, `process`, `settle`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingMiddleware;

#[async_trait]
impl Middleware for TracingMiddleware {
    async fn send(
        &self,
        channel: &ChannelInfo,
        event: OutgoingEvent,
        next: NextSend<'_>,
    ) -> Result<MessageId, Error> {
        let span = tracing::debug_span!(
            target: "backbone",
            "send",
            otel.name = channel.span_name(SpanOperation::Send),
            otel.kind = "producer",
            otel.status_code = Empty,
            messaging.system = channel.system(),
            messaging.operation.type = "send",
            messaging.destination.name = channel.destination(),
            messaging.message.id = %event.message_id,
            messaging.message.conversation_id = event.envelope.correlation_id.as_deref().unwrap_or(""),
            backbone.operation = event.operation,
            backbone.version = event.version,
            error.type = Empty,
        );
        #[cfg(feature = "otel")]
        let event = {
            let mut event = event;
            super::otel::inject(&span, &mut event.envelope);
            event
        };
        let result = next.run(event).instrument(span.clone()).await;
        if let Err(e) = &result {
            failed(&span, e.kind());
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
        let meta = ctx.metadata();
        let span = tracing::debug_span!(
            target: "backbone",
            "process",
            otel.name = channel.span_name(SpanOperation::Process),
            otel.kind = "consumer",
            otel.status_code = Empty,
            messaging.system = channel.system(),
            messaging.operation.type = "process",
            messaging.destination.name = channel.destination(),
            messaging.destination.partition.id = channel.partition(),
            messaging.consumer.group.name = channel.group(),
            messaging.client.id = channel.consumer_name(),
            messaging.message.id = %meta.message_id,
            messaging.message.conversation_id = meta.correlation_id.as_str(),
            backbone.operation = meta.operation.as_str(),
            backbone.version = meta.version,
            backbone.delivery_count = meta.delivery_count,
            backbone.stream_id = meta.stream_id.as_str(),
            error.type = Empty,
        );
        #[cfg(feature = "otel")]
        if let Some(trace) = &meta.trace {
            super::otel::continue_trace(&span, trace);
        }
        let result = next.run(ctx, fields).instrument(span.clone()).await;
        match &result {
            Ok(()) => {}
            Err(HandleError::BadEvent(e)) => failed(&span, e.kind()),
            Err(HandleError::Handler(e)) if e.is_fatal() => failed(&span, "handler_fatal"),
            Err(HandleError::Handler(_)) => failed(&span, "handler"),
        }
        result
    }

    fn settled(&self, channel: &ChannelInfo, settled: &Settled<'_>) {
        let meta = settled.metadata;
        let span = tracing::debug_span!(
            target: "backbone",
            "settle",
            otel.name = channel.span_name(SpanOperation::Settle),
            otel.kind = "consumer",
            messaging.system = channel.system(),
            messaging.operation.type = "settle",
            messaging.destination.name = channel.destination(),
            messaging.consumer.group.name = channel.group(),
            messaging.message.id = meta.map(|m| tracing::field::display(m.message_id)),
            backbone.operation = meta.map(|m| m.operation.as_str()),
            backbone.stream_id = settled.stream_id,
            backbone.outcome = settled.outcome.name(),
        );
        #[cfg(feature = "otel")]
        if let Some(trace) = meta.and_then(|m| m.trace.as_ref()) {
            super::otel::continue_trace(&span, trace);
        }
        drop(span);
    }
}

fn failed(span: &Span, kind: &str) {
    span.record("error.type", kind);
    span.record("otel.status_code", "ERROR");
}
