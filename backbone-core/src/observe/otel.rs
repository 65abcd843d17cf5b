//! The `otel` feature: W3C trace context between a `send` span and the entry it wrote, and
//! between an entry and the `process` span that handles it.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::envelope::{Envelope, TraceContext};

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Writes `span`'s context into the envelope (nothing when the span is not recorded by an
/// OpenTelemetry layer).
pub(super) fn inject(span: &Span, envelope: &mut Envelope) {
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    if let Some(traceparent) = carrier.traceparent {
        envelope.trace = Some(TraceContext {
            traceparent,
            tracestate: carrier.tracestate.filter(|s| !s.is_empty()),
        });
    }
}

/// Makes `span` a child of the remote span that `trace` names.
pub(super) fn continue_trace(span: &Span, trace: &TraceContext) {
    let carrier = Carrier {
        traceparent: Some(trace.traceparent.clone()),
        tracestate: trace.tracestate.clone(),
    };
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

#[derive(Default)]
struct Carrier {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE => self.tracestate = Some(value),
            _ => {}
        }
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent.as_deref(),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}
