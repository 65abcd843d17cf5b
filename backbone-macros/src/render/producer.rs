//! The producer side: the typed `XProducer`, with one `async` method per operation.

use proc_macro2::TokenStream;
use quote::quote;

use super::{doc, docs_or, item_attrs, method_attrs, version_suffix};
use crate::model::Contract;

/// `pub struct XProducer { inner: Producer }`.
pub(super) fn producer_struct(contract: &Contract) -> TokenStream {
    let krate = &contract.krate;
    let vis = &contract.vis;
    let producer = contract.producer_ident();
    let attrs = item_attrs(contract);
    let struct_doc = doc(&format!(
        "Sends events of the [`{}`] contract through one channel: one method per operation. \
         Get one with [`{build}`]({}::{build}); it is cheap to clone.",
        contract.name,
        contract.producer_ext_ident(),
        build = contract.build_fn_ident(),
    ));
    quote! {
        #struct_doc
        #attrs
        #[derive(Clone, Debug)]
        #vis struct #producer {
            inner: #krate::Producer,
        }
    }
}

/// `impl XProducer`: `new`, `producer`, `with_key`, `with_header`, `with_correlation_id`,
/// `caused_by`, `with_subject` and one sending method per operation.
pub(super) fn producer_impl(contract: &Contract) -> TokenStream {
    let krate = &contract.krate;
    let link = contract.krate_link();
    let producer = contract.producer_ident();
    let event = contract.event_ident();
    let attrs = item_attrs(contract);
    let new_doc = doc(&format!(
        "Wraps a channel's [`Producer`]({link}::Producer)."
    ));
    let producer_doc = doc(&format!(
        "The channel's untyped [`Producer`]({link}::Producer)."
    ));
    let with_key_doc = doc(&format!(
        "A producer whose events carry the ordering key `key`: consumers never handle two \
         events with the same key at once, and handle them in the order they were sent \
         (see [`Producer::with_key`]({link}::Producer::with_key))."
    ));
    let with_header_doc = doc(&format!(
        "A producer whose events carry the header `name` = `value` \
         (see [`Producer::with_header`]({link}::Producer::with_header))."
    ));
    let with_correlation_doc = doc(&format!(
        "A producer whose events belong to the workflow `id` \
         (see [`Producer::with_correlation_id`]({link}::Producer::with_correlation_id))."
    ));
    let caused_by_doc = doc(&format!(
        "A producer whose events are caused by the event `ctx` handles: automatic inside a \
         handler, needed in tasks it spawns \
         (see [`Producer::caused_by`]({link}::Producer::caused_by))."
    ));
    let with_subject_doc = doc(&format!(
        "A producer whose events name `subject` as their data subject: their `#[personal]` \
         parameters are sealed with its key \
         (see [`Producer::with_subject`]({link}::Producer::with_subject))."
    ));
    let methods = contract.operations.iter().map(|op| {
        let (method, variant) = (&op.method, &op.variant);
        let docs = docs_or(
            &op.docs,
            &format!("Sends a `{}` event{}.", op.name, version_suffix(op)),
        );
        let attrs = method_attrs(op);
        let deprecated = op
            .deprecated
            .as_ref()
            .map(|why| quote!(#[deprecated(note = #why)]));
        let params = op.params.iter().map(|p| {
            let (ident, ty) = (&p.ident, &p.ty);
            quote!(#ident: #ty)
        });
        let fields = op.params.iter().map(|p| {
            let ident = &p.ident;
            match p.personal {
                true => quote!(#ident: #krate::personal::Personal::Known(#ident)),
                false => quote!(#ident),
            }
        });
        quote! {
            #docs
            #attrs
            #deprecated
            pub async fn #method(
                &self,
                #(#params),*
            ) -> ::core::result::Result<#krate::MessageId, #krate::Error> {
                self.inner.send(&#event::#variant { #(#fields),* }).await
            }
        }
    });
    quote! {
        #attrs
        impl #producer {
            #new_doc
            pub fn new(inner: #krate::Producer) -> Self {
                Self { inner }
            }

            #producer_doc
            pub fn producer(&self) -> &#krate::Producer {
                &self.inner
            }

            #with_key_doc
            pub fn with_key(&self, key: impl ::core::convert::Into<::std::string::String>) -> Self {
                Self { inner: self.inner.with_key(key) }
            }

            #with_header_doc
            pub fn with_header(
                &self,
                name: impl ::core::convert::Into<::std::string::String>,
                value: impl ::core::convert::Into<::std::string::String>,
            ) -> Self {
                Self { inner: self.inner.with_header(name, value) }
            }

            #with_correlation_doc
            pub fn with_correlation_id(
                &self,
                id: impl ::core::convert::Into<::std::string::String>,
            ) -> Self {
                Self { inner: self.inner.with_correlation_id(id) }
            }

            #caused_by_doc
            pub fn caused_by(&self, ctx: &#krate::ConsumerContext) -> Self {
                Self { inner: self.inner.caused_by(ctx.metadata()) }
            }

            #with_subject_doc
            pub fn with_subject(
                &self,
                subject: impl ::core::convert::Into<::std::string::String>,
            ) -> Self {
                Self { inner: self.inner.with_subject(subject) }
            }

            #(#methods)*
        }
    }
}
