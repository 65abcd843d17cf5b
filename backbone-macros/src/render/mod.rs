//! Code generation: [`render`] emits every item of a contract, each built by one generator
//! function in the file of its side (contract type, event, consumer, producer, builders).
//! Helpers shared by those files (doc attributes, common item attributes, hygienic names) live
//! here.

mod builders;
mod consumer;
mod contract;
mod event;
mod producer;
mod schema;

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;
use syn::Attribute;

use crate::model::{Contract, Operation};

/// Every item generated for `contract`, in place of the trait.
pub(crate) fn render(contract: &Contract) -> TokenStream {
    let items = [
        contract::contract_struct(contract),
        contract::contract_impl(contract),
        event::event_enum(contract),
        event::event_impl(contract),
        consumer::consumer_trait(contract),
        consumer::dispatch_impl(contract),
        producer::producer_struct(contract),
        producer::producer_impl(contract),
        builders::producer_builder_ext(contract),
        builders::producer_builder_ext_impl(contract),
        builders::consumer_builder_ext(contract),
        builders::consumer_builder_ext_impl(contract),
        schema::schema_impl(contract),
    ];
    quote!(#(#items)*)
}

/// A `#[doc = "..."]` attribute.
fn doc(text: &str) -> TokenStream {
    quote!(#[doc = #text])
}

/// The user's doc attributes, or `fallback` as the only doc line when there are none.
fn docs_or(docs: &[Attribute], fallback: &str) -> TokenStream {
    if docs.is_empty() {
        doc(fallback)
    } else {
        quote!(#(#docs)*)
    }
}

/// Attributes for every generated item: the trait's lint attributes, and `allow(dead_code)`,
/// because a service usually uses only one side (producer or consumer) of a contract.
fn item_attrs(contract: &Contract) -> TokenStream {
    let lints = &contract.lints;
    quote!(#(#lints)* #[allow(dead_code)])
}

/// Attributes for the consumer and producer methods of `op`: the method's lint attributes,
/// and `allow(clippy::too_many_arguments)` when the operation has many parameters (the
/// contract decides how many there are).
fn method_attrs(op: &Operation) -> TokenStream {
    let lints = &op.lints;
    let many = (op.params.len() + 2 > 7).then(|| quote!(#[allow(clippy::too_many_arguments)]));
    quote!(#(#lints)* #many)
}

/// An identifier for the generated code's own locals and parameters. Its mixed-site hygiene
/// keeps it apart from the user's parameter names, even one spelled the same way.
fn internal(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// `version N` in docs, or nothing for version 0.
fn version_suffix(op: &Operation) -> String {
    if op.version == 0 {
        String::new()
    } else {
        format!(", version {}", op.version)
    }
}
