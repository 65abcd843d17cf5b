//! The `#[events_contract]` attribute macro of backbone. Use it through `backbone_core`
//! (`backbone_core::events_contract`), which re-exports it next to the types the generated code
//! needs.
//!
//! The crate is laid out like jsonrpsee's proc-macros: `attr` parses the macro's own
//! attributes, `model` reads and checks the annotated trait into a `Contract` model, and
//! `render` turns the model into code, one file per generated side.

mod attr;
mod errors;
mod model;
mod render;

use proc_macro::TokenStream;

/// Turns a trait describing events into a contract: the event type, a typed producer, a
/// consumer trait and the builder methods to create them.
///
/// ```ignore
/// /// Tracks shipments.
/// #[events_contract]
/// pub trait ShipmentTracking {
///     /// An order was placed.
///     async fn order_placed(&self, user: User, product: Product, time: u64);
///     #[event(version = 1)]
///     async fn packing(&self, email: String, product_id: u64, time: u64);
///     #[event(name = "delivered")]
///     async fn on_delivery(&self, email: String, product_id: u64, time: u64);
///     async fn ping(&self);
/// }
/// ```
///
/// Each method is one *operation*; its parameters are the event's fields, each encoded as its
/// own JSON value (so every parameter type implements `Serialize`, `DeserializeOwned`, `Clone`,
/// `Debug`, `Send`, `Sync` and is `'static`). The trait is replaced by these items, all with
/// the trait's visibility (`X` is the trait's name, `x` its snake_case form):
///
/// - `struct X;` a zero-sized type implementing `Contract` (it carries the trait's docs);
/// - `enum XEvent`, one struct variant per method (`order_placed` → `OrderPlaced { user,
///   product, time }`), implementing `ContractEvent` (operations, encode, decode);
/// - `trait XConsumer` (an `async_trait`), with one handler method per operation that receives
///   `ctx: &ConsumerContext` first and returns `HandlerResult`; `XEvent` implements
///   `Dispatch<H>` for every `H: XConsumer`;
/// - `struct XProducer`, wrapping a channel's `Producer`, with one `async` method per operation
///   returning `Result<MessageId, Error>`;
/// - `trait XProducerBuilderExt` adding `build_x_producer()` to every `ProducerBuilder`, and
///   `trait XConsumerBuilderExt` adding `subscribe_x_consumer(handler)` to every
///   `ConsumerBuilder`.
///
/// # Method attributes
///
/// - `#[event(name = "delivered")]`: the operation's stable name on the wire (default: the
///   method name). Rename methods freely as long as the name stays.
/// - `#[event(version = 1)]`: the operation's version (default 0). Two methods may share a name
///   with different versions, so one contract can handle old and new events side by side.
///
/// Doc comments on the trait and its methods are carried to the generated items; lint
/// attributes (`#[allow(...)]`, ...) are carried too.
///
/// # Macro arguments
///
/// - `crate = "some::path"`: where generated code finds backbone-core (default
///   `::backbone_core`), for crates that re-export it under another path.
///
/// # Rules
///
/// Methods are `async fn name(&self, param: Type, ...);` with no body, no return type, no
/// generics; parameters are plain names (not patterns, not `ctx`, which handlers receive) with
/// owned types (no references, no `impl Trait`). Operation (name, version) pairs and variant
/// names are unique; `new` and `producer` are taken by the producer. Every violation is a
/// compile error pointing at the offending tokens, all reported at once.
#[proc_macro_attribute]
pub fn events_contract(attr: TokenStream, item: TokenStream) -> TokenStream {
    match model::Contract::from_item(attr.into(), item.into()) {
        Ok(contract) => render::render(&contract).into(),
        Err(errors) => errors.to_compile_error().into(),
    }
}
