//! Runtime behaviour of the code `#[events_contract]` generates, exercised against the core API
//! only (no broker): the operation table, encode/decode round trips, dispatch to the handler,
//! the typed producer and the builder extension traits.

use std::sync::{Arc, Mutex};

use backbone_core::{
    async_trait, events_contract, Acknowledge, ConsumerBuilder, ConsumerContext, ConsumerLifetime,
    Contract, ContractEvent, Dispatch, Error, EventHandler, Fields, HandleError, HandlerResult,
    MessageId, Metadata, Operation, OutgoingEvent, Producer, ProducerBuilder, Publish,
};
use serde::{Deserialize, Serialize};

/// A customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The customer's id.
    pub id: u64,
    /// The customer's email.
    pub email: String,
}

/// A product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// The product's id.
    pub id: u64,
    /// The product's name.
    pub name: String,
}

/// Tracks shipments.
#[events_contract]
pub trait ShipmentTracking {
    /// An order was placed.
    async fn order_placed(&self, user: User, product: Product, time: u64);
    #[event(version = 1)]
    async fn packing(&self, email: String, product_id: u64, time: u64);
    #[event(name = "delivered")]
    async fn on_delivery(&self, email: String, product_id: u64, time: u64);
    async fn ping(&self);
}

/// Parameter names that the generated code also uses internally, and a raw identifier.
#[events_contract]
pub trait Hygiene {
    async fn clash(
        &self,
        __fields: u32,
        __handler: String,
        __ctx: bool,
        __operation: u8,
        __version: u16,
        inner: Option<String>,
        r#type: String,
    );
    #[event(name = "clash", version = 2)]
    async fn clash_v2(&self, self_: u32);
}

fn user() -> User {
    User {
        id: 7,
        email: "ada@example.com".into(),
    }
}

fn product() -> Product {
    Product {
        id: 42,
        name: "lamp".into(),
    }
}

/// One of each variant.
fn every_event() -> Vec<ShipmentTrackingEvent> {
    vec![
        ShipmentTrackingEvent::OrderPlaced {
            user: user(),
            product: product(),
            time: 1_700_000_000_000,
        },
        ShipmentTrackingEvent::Packing {
            email: "ada@example.com".into(),
            product_id: 42,
            time: 1,
        },
        ShipmentTrackingEvent::OnDelivery {
            email: "bob@example.com".into(),
            product_id: 43,
            time: 2,
        },
        ShipmentTrackingEvent::Ping {},
    ]
}

fn metadata(operation: &str, version: u32) -> Metadata {
    let mut m = Metadata::new(MessageId::new(), operation, version, "shipments");
    m.produced_at = 0;
    m.stream_id = "1-0".into();
    m
}

struct NoAck;

#[async_trait]
impl Acknowledge for NoAck {
    async fn ack(&self, _metadata: &Metadata) -> Result<(), Error> {
        Ok(())
    }
}

fn context(operation: &str, version: u32) -> ConsumerContext {
    ConsumerContext::new(metadata(operation, version), Arc::new(NoAck))
}

/// Records every handler call as text: the method, the context's operation and the params.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl Recorder {
    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl ShipmentTrackingConsumer for Recorder {
    async fn order_placed(
        &self,
        ctx: &ConsumerContext,
        user: User,
        product: Product,
        time: u64,
    ) -> HandlerResult {
        let op = &ctx.metadata().operation;
        self.record(format!(
            "order_placed[{op}] {} {} {time}",
            user.email, product.name
        ));
        Ok(())
    }

    async fn packing(
        &self,
        ctx: &ConsumerContext,
        email: String,
        product_id: u64,
        time: u64,
    ) -> HandlerResult {
        let op = &ctx.metadata().operation;
        self.record(format!("packing[{op}] {email} {product_id} {time}"));
        Ok(())
    }

    async fn on_delivery(
        &self,
        ctx: &ConsumerContext,
        email: String,
        product_id: u64,
        time: u64,
    ) -> HandlerResult {
        let op = &ctx.metadata().operation;
        self.record(format!("on_delivery[{op}] {email} {product_id} {time}"));
        Err("not delivered yet".into())
    }

    async fn ping(&self, ctx: &ConsumerContext) -> HandlerResult {
        let op = &ctx.metadata().operation;
        self.record(format!("ping[{op}]"));
        Ok(())
    }
}

#[test]
fn operation_table() {
    let expected = [
        Operation {
            name: "order_placed",
            version: 0,
            parameters: &["user", "product", "time"],
            deprecated: None,
            upcast: None,
            storage: backbone_core::storage::Storage::Hash,
            personal: &[],
            subject: None,
        },
        Operation {
            name: "packing",
            version: 1,
            parameters: &["email", "product_id", "time"],
            deprecated: None,
            upcast: None,
            storage: backbone_core::storage::Storage::Hash,
            personal: &[],
            subject: None,
        },
        Operation {
            name: "delivered",
            version: 0,
            parameters: &["email", "product_id", "time"],
            deprecated: None,
            upcast: None,
            storage: backbone_core::storage::Storage::Hash,
            personal: &[],
            subject: None,
        },
        Operation {
            name: "ping",
            version: 0,
            parameters: &[],
            deprecated: None,
            upcast: None,
            storage: backbone_core::storage::Storage::Hash,
            personal: &[],
            subject: None,
        },
    ];
    assert_eq!(<ShipmentTracking as Contract>::NAME, "ShipmentTracking");
    assert_eq!(<ShipmentTracking as Contract>::OPERATIONS, &expected[..]);
    assert_eq!(
        <ShipmentTrackingEvent as ContractEvent>::CONTRACT,
        "ShipmentTracking"
    );
    assert_eq!(
        <ShipmentTrackingEvent as ContractEvent>::OPERATIONS,
        &expected[..]
    );
    for (event, op) in every_event().iter().zip(&expected) {
        assert_eq!(event.operation(), op);
    }
    // The contract type is a plain zero-sized value.
    assert_eq!(std::mem::size_of::<ShipmentTracking>(), 0);
    assert_eq!(ShipmentTracking, ShipmentTracking);
}

#[test]
fn knows_names_and_versions() {
    assert!(ShipmentTrackingEvent::knows("order_placed", 0));
    assert!(ShipmentTrackingEvent::knows("packing", 1));
    assert!(ShipmentTrackingEvent::knows("delivered", 0));
    assert!(ShipmentTrackingEvent::knows("ping", 0));
    assert!(!ShipmentTrackingEvent::knows("packing", 0));
    assert!(!ShipmentTrackingEvent::knows("on_delivery", 0));
    assert!(!ShipmentTrackingEvent::knows("unknown", 0));
}

#[test]
fn every_variant_round_trips() {
    for event in every_event() {
        let op = event.operation();
        let fields = event.encode().unwrap();
        let names: Vec<&str> = fields.iter().map(|(name, _)| name).collect();
        assert_eq!(names, op.parameters, "fields of {}", op.name);
        let decoded = ShipmentTrackingEvent::decode(op.name, op.version, &fields).unwrap();
        assert_eq!(format!("{decoded:?}"), format!("{event:?}"));
    }
}

#[test]
fn each_parameter_is_one_json_field() {
    let event = ShipmentTrackingEvent::OrderPlaced {
        user: user(),
        product: product(),
        time: 5,
    };
    let fields = event.encode().unwrap();
    assert_eq!(fields.len(), 3);
    assert_eq!(
        fields.get("user"),
        Some(&br#"{"id":7,"email":"ada@example.com"}"#[..])
    );
    assert_eq!(
        fields.get("product"),
        Some(&br#"{"id":42,"name":"lamp"}"#[..])
    );
    assert_eq!(fields.get("time"), Some(&b"5"[..]));
    assert!(ShipmentTrackingEvent::Ping {}.encode().unwrap().is_empty());
}

#[test]
fn unknown_operation_or_version_is_an_error() {
    let fields = Fields::new();
    for (operation, version) in [("nope", 0), ("packing", 0), ("on_delivery", 0), ("ping", 3)] {
        match ShipmentTrackingEvent::decode(operation, version, &fields) {
            Err(Error::UnknownOperation {
                contract,
                operation: op,
                version: v,
            }) => {
                assert_eq!(contract, "ShipmentTracking");
                assert_eq!(op, operation);
                assert_eq!(v, version);
            }
            other => panic!("expected UnknownOperation for {operation} v{version}, got {other:?}"),
        }
    }
}

#[test]
fn decode_errors_name_the_parameter() {
    let mut fields = ShipmentTrackingEvent::Packing {
        email: "ada@example.com".into(),
        product_id: 1,
        time: 2,
    }
    .encode()
    .unwrap();
    fields = fields
        .iter()
        .map(|(name, value)| {
            let value = if name == "time" {
                b"\"soon\"".to_vec()
            } else {
                value.to_vec()
            };
            (name.to_owned(), value)
        })
        .collect();
    let err = ShipmentTrackingEvent::decode("packing", 1, &fields).unwrap_err();
    match &err {
        Error::Decode {
            operation,
            parameter,
            ..
        } => {
            assert_eq!(operation, "packing");
            assert_eq!(parameter, "time");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert!(err.is_bad_event());

    let mut missing = Fields::new();
    missing.push("email", b"\"ada@example.com\"".to_vec());
    let err = ShipmentTrackingEvent::decode("packing", 1, &missing).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot decode parameter `product_id` of operation `packing`"),
        "{err}"
    );
}

#[tokio::test]
async fn dispatch_calls_the_matching_method() {
    let recorder = Recorder::default();
    let mut results = Vec::new();
    for event in every_event() {
        let op = event.operation();
        let ctx = context(op.name, op.version);
        results.push(event.dispatch(&recorder, &ctx).await.is_ok());
    }
    assert_eq!(
        recorder.calls(),
        [
            "order_placed[order_placed] ada@example.com lamp 1700000000000",
            "packing[packing] ada@example.com 42 1",
            "on_delivery[delivered] bob@example.com 43 2",
            "ping[ping]",
        ]
    );
    assert_eq!(results, [true, true, false, true]);
}

#[tokio::test]
async fn dispatch_works_through_a_trait_object() {
    let recorder = Recorder::default();
    let handler: &dyn ShipmentTrackingConsumer = &recorder;
    let ctx = context("ping", 0);
    ShipmentTrackingEvent::Ping {}
        .dispatch(handler, &ctx)
        .await
        .unwrap();
    assert_eq!(recorder.calls(), ["ping[ping]"]);
}

#[tokio::test]
async fn handler_failures_keep_their_message() {
    let recorder = Recorder::default();
    let ctx = context("delivered", 0);
    let err = ShipmentTrackingEvent::OnDelivery {
        email: "bob@example.com".into(),
        product_id: 1,
        time: 2,
    }
    .dispatch(&recorder, &ctx)
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), "not delivered yet");
    assert!(!err.is_fatal());
}

/// A channel that keeps what it is asked to publish.
#[derive(Default, Clone)]
struct Outbox {
    sent: Arc<Mutex<Vec<OutgoingEvent>>>,
}

#[async_trait]
impl Publish for Outbox {
    async fn publish(&self, event: OutgoingEvent) -> Result<MessageId, Error> {
        let id = event.message_id;
        self.sent.lock().unwrap().push(event);
        Ok(id)
    }

    fn info(&self) -> backbone_core::middleware::ChannelInfo {
        let address = backbone_core::StreamAddress::new(None, "outbox").unwrap();
        backbone_core::middleware::ChannelInfo::producer("outbox", address)
    }
}

struct OutboxBuilder(Outbox);

impl ProducerBuilder for OutboxBuilder {
    async fn build_producer(self) -> Result<Producer, Error> {
        Ok(Producer::new(Arc::new(self.0)))
    }
}

#[tokio::test]
async fn producer_sends_every_operation() {
    let outbox = Outbox::default();
    let producer = OutboxBuilder(outbox.clone())
        .build_shipment_tracking_producer()
        .await
        .unwrap();
    let first = producer.order_placed(user(), product(), 3).await.unwrap();
    producer.packing("a@b.c".into(), 1, 4).await.unwrap();
    producer.on_delivery("a@b.c".into(), 1, 5).await.unwrap();
    producer.ping().await.unwrap();
    let _untyped: &Producer = producer.producer();

    let sent = outbox.sent.lock().unwrap();
    let summary: Vec<(&str, u32, usize)> = sent
        .iter()
        .map(|e| (e.operation, e.version, e.fields.len()))
        .collect();
    assert_eq!(
        summary,
        [
            ("order_placed", 0, 3),
            ("packing", 1, 3),
            ("delivered", 0, 3),
            ("ping", 0, 0)
        ]
    );
    assert_eq!(sent[0].message_id, first);
    let decoded = ShipmentTrackingEvent::decode("delivered", 0, &sent[2].fields).unwrap();
    assert!(matches!(
        decoded,
        ShipmentTrackingEvent::OnDelivery {
            product_id: 1,
            time: 5,
            ..
        }
    ));
}

/// A consumer builder that hands one delivery to the handler it is given.
struct OneDelivery {
    operation: &'static str,
    version: u32,
    fields: Fields,
    outcome: Arc<Mutex<Option<Result<(), String>>>>,
}

impl ConsumerBuilder for OneDelivery {
    async fn subscribe(self, handler: Arc<dyn EventHandler>) -> Result<ConsumerLifetime, Error> {
        assert_eq!(handler.contract(), "ShipmentTracking");
        assert!(handler.knows("delivered", 0));
        assert!(!handler.knows("on_delivery", 0));
        let ctx = context(self.operation, self.version);
        let outcome = handler
            .handle(&ctx, &self.fields)
            .await
            .map_err(|e| match e {
                HandleError::BadEvent(e) => format!("bad event: {e}"),
                HandleError::Handler(e) => format!("handler: {e}"),
            });
        *self.outcome.lock().unwrap() = Some(outcome);
        let task = tokio::spawn(async { Ok(()) });
        Ok(ConsumerLifetime::new(Default::default(), task))
    }
}

async fn deliver(operation: &'static str, version: u32, fields: Fields) -> (Vec<String>, String) {
    let recorder = Arc::new(Recorder::default());
    let outcome = Arc::new(Mutex::new(None));
    let builder = OneDelivery {
        operation,
        version,
        fields,
        outcome: outcome.clone(),
    };
    let lifetime = builder
        .subscribe_shipment_tracking_consumer(SharedRecorder(recorder.clone()))
        .await
        .unwrap();
    lifetime.completion().await.unwrap();
    let outcome = outcome.lock().unwrap().take().unwrap();
    let outcome = match outcome {
        Ok(()) => "ok".to_owned(),
        Err(e) => e,
    };
    (recorder.calls(), outcome)
}

/// Lets a test keep the recorder while the consumer owns its handler.
struct SharedRecorder(Arc<Recorder>);

#[async_trait]
impl ShipmentTrackingConsumer for SharedRecorder {
    async fn order_placed(
        &self,
        ctx: &ConsumerContext,
        user: User,
        product: Product,
        time: u64,
    ) -> HandlerResult {
        self.0.order_placed(ctx, user, product, time).await
    }

    async fn packing(
        &self,
        ctx: &ConsumerContext,
        email: String,
        product_id: u64,
        time: u64,
    ) -> HandlerResult {
        self.0.packing(ctx, email, product_id, time).await
    }

    async fn on_delivery(
        &self,
        ctx: &ConsumerContext,
        email: String,
        product_id: u64,
        time: u64,
    ) -> HandlerResult {
        self.0.on_delivery(ctx, email, product_id, time).await
    }

    async fn ping(&self, ctx: &ConsumerContext) -> HandlerResult {
        self.0.ping(ctx).await
    }
}

#[tokio::test]
async fn subscribed_consumer_decodes_and_dispatches() {
    let fields = ShipmentTrackingEvent::Packing {
        email: "ada@example.com".into(),
        product_id: 9,
        time: 10,
    }
    .encode()
    .unwrap();
    let (calls, outcome) = deliver("packing", 1, fields).await;
    assert_eq!(calls, ["packing[packing] ada@example.com 9 10"]);
    assert_eq!(outcome, "ok");

    let fields = ShipmentTrackingEvent::OnDelivery {
        email: "bob@example.com".into(),
        product_id: 1,
        time: 2,
    }
    .encode()
    .unwrap();
    let (calls, outcome) = deliver("delivered", 0, fields).await;
    assert_eq!(calls, ["on_delivery[delivered] bob@example.com 1 2"]);
    assert_eq!(outcome, "handler: not delivered yet");
}

#[tokio::test]
async fn subscribed_consumer_rejects_bad_events_without_calling_the_handler() {
    let (calls, outcome) = deliver("packing", 0, Fields::new()).await;
    assert!(calls.is_empty());
    assert_eq!(
        outcome,
        "bad event: contract `ShipmentTracking` has no operation `packing` version 0"
    );

    let mut fields = Fields::new();
    fields.push("email", b"\"ada@example.com\"".to_vec());
    fields.push("product_id", b"\"forty-two\"".to_vec());
    fields.push("time", b"1".to_vec());
    let (calls, outcome) = deliver("packing", 1, fields).await;
    assert!(calls.is_empty());
    assert!(
        outcome
            .starts_with("bad event: cannot decode parameter `product_id` of operation `packing`"),
        "{outcome}"
    );
}

#[derive(Default)]
struct HygieneRecorder(Mutex<Vec<String>>);

#[async_trait]
impl HygieneConsumer for HygieneRecorder {
    async fn clash(
        &self,
        _ctx: &ConsumerContext,
        __fields: u32,
        __handler: String,
        __ctx: bool,
        __operation: u8,
        __version: u16,
        inner: Option<String>,
        r#type: String,
    ) -> HandlerResult {
        self.0.lock().unwrap().push(format!(
            "{__fields} {__handler} {__ctx} {__operation} {__version} {inner:?} {type}",
            type = r#type
        ));
        Ok(())
    }

    async fn clash_v2(&self, _ctx: &ConsumerContext, self_: u32) -> HandlerResult {
        self.0.lock().unwrap().push(format!("v2 {self_}"));
        Ok(())
    }
}

#[tokio::test]
async fn generated_names_do_not_clash_with_parameters() {
    let event = HygieneEvent::Clash {
        __fields: 1,
        __handler: "h".into(),
        __ctx: true,
        __operation: 2,
        __version: 3,
        inner: None,
        r#type: "t".into(),
    };
    assert_eq!(
        event.operation().parameters,
        [
            "__fields",
            "__handler",
            "__ctx",
            "__operation",
            "__version",
            "inner",
            "type"
        ]
    );
    let fields = event.encode().unwrap();
    assert_eq!(fields.get("type"), Some(&b"\"t\""[..]));
    let decoded = HygieneEvent::decode("clash", 0, &fields).unwrap();
    let v2 = HygieneEvent::decode(
        "clash",
        2,
        &HygieneEvent::ClashV2 { self_: 5 }.encode().unwrap(),
    )
    .unwrap();

    let recorder = HygieneRecorder::default();
    decoded
        .dispatch(&recorder, &context("clash", 0))
        .await
        .unwrap();
    v2.dispatch(&recorder, &context("clash", 2)).await.unwrap();
    assert_eq!(*recorder.0.lock().unwrap(), ["1 h true 2 3 None t", "v2 5"]);

    let outbox = Outbox::default();
    let producer = HygieneProducer::new(Producer::new(Arc::new(outbox.clone())));
    producer
        .clash(1, "h".into(), false, 2, 3, Some("i".into()), "t".into())
        .await
        .unwrap();
    producer.clash_v2(9).await.unwrap();
    let sent = outbox.sent.lock().unwrap();
    assert_eq!((sent[0].operation, sent[0].version), ("clash", 0));
    assert_eq!((sent[1].operation, sent[1].version), ("clash", 2));
}
