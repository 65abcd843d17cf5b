//! One trace across three services (order placed → packing → delivery) on Redis: each `send`
//! span's W3C context is written into the entry (`traceparent`), each `process` span continues
//! it, and the next hop's `send` is a child of that `process`. Spans are caught with
//! OpenTelemetry's in-memory exporter (the `otel` feature is on for the tests).

mod common;

use std::collections::HashMap;

use backbone_redis::testing::{shared, unique_name};
use common::flow::*;
use opentelemetry::trace::{SpanId, SpanKind, TracerProvider as _};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_through_three_services() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("backbone-test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let redis = shared().await.unwrap();
    let uris = ["orders", "packing", "delivery"].map(unique_name);
    let (lifetimes, mut rx) = redis_hops(redis.url(), &uris, |i| format!("svc-{i}")).await;
    redis_producer(redis.url(), &uris[0])
        .await
        .placed(1)
        .await
        .unwrap();
    let hops = three_seen(&mut rx).await;
    for lifetime in lifetimes {
        lifetime.shutdown().await.unwrap();
    }
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let by_name: HashMap<String, &SpanData> = spans
        .iter()
        .filter(|s| s.name.starts_with("send ") || s.name.starts_with("process "))
        .map(|s| (s.name.to_string(), s))
        .collect();
    let span = |op: &str, uri: &str| -> &SpanData {
        by_name
            .get(&format!("{op} {uri}"))
            .unwrap_or_else(|| panic!("no span `{op} {uri}` among {:?}", by_name.keys()))
    };
    let trace_id = span("send", &uris[0]).span_context.trace_id();
    let mut parent = SpanId::INVALID;
    for (i, uri) in uris.iter().enumerate() {
        let (send, process) = (span("send", uri), span("process", uri));
        assert_eq!(send.span_kind, SpanKind::Producer);
        assert_eq!(process.span_kind, SpanKind::Consumer);
        for s in [send, process] {
            assert_eq!(
                s.span_context.trace_id(),
                trace_id,
                "{} is in the trace",
                s.name
            );
            assert_eq!(
                attribute(s, "messaging.system")
                    .map(Value::as_str)
                    .as_deref(),
                Some("redis")
            );
            assert_eq!(
                attribute(s, "messaging.destination.name")
                    .map(Value::as_str)
                    .as_deref(),
                Some(uri.as_str())
            );
        }
        assert_eq!(send.parent_span_id, parent, "send {uri}'s parent");
        assert_eq!(
            process.parent_span_id,
            send.span_context.span_id(),
            "process {uri} continues send {uri}"
        );
        assert!(process.parent_span_is_remote);
        assert_eq!(
            attribute(process, "messaging.consumer.group.name")
                .map(Value::as_str)
                .as_deref(),
            Some(format!("svc-{i}").as_str())
        );
        assert_eq!(
            attribute(process, "messaging.message.id")
                .map(Value::as_str)
                .as_deref(),
            Some(hops[i].message_id.to_string().as_str())
        );
        // The entry carried the send span's context.
        let trace = hops[i].trace.as_ref().expect("a traceparent in the entry");
        assert_eq!(trace.trace_id(), Some(trace_id.to_string().as_str()));
        assert!(trace
            .traceparent
            .contains(&send.span_context.span_id().to_string()));
        parent = process.span_context.span_id();
    }
    // Each delivery also settled, in the same trace.
    let settles = spans
        .iter()
        .filter(|s| s.name.starts_with("settle "))
        .filter(|s| s.span_context.trace_id() == trace_id)
        .count();
    assert_eq!(settles, 3);
}
