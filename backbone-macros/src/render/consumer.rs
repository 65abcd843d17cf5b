//! The consumer side: the `XConsumer` trait users implement, and the `Dispatch` impl that
//! calls the handler method matching an event.

use proc_macro2::TokenStream;
use quote::quote;

use super::{doc, docs_or, internal, item_attrs, method_attrs, version_suffix};
use crate::model::Contract;

/// `pub trait XConsumer`: one handler method per operation, `ctx` first.
pub(super) fn consumer_trait(contract: &Contract) -> TokenStream {
    let krate = &contract.krate;
    let vis = &contract.vis;
    let consumer = contract.consumer_ident();
    let attrs = item_attrs(contract);
    let trait_doc = doc(&format!(
        "Handles events of the [`{}`] contract: implement it (with \
         [`#[async_trait]`]({}::async_trait)) and pass it to \
         [`{subscribe}`]({}::{subscribe}). Each method receives the event's context \
         (metadata, manual ack) and parameters.",
        contract.name,
        contract.krate_link(),
        contract.consumer_ext_ident(),
        subscribe = contract.subscribe_fn_ident(),
    ));
    let methods = contract
        .operations
        .iter()
        .filter(|op| op.is_current())
        .map(|op| {
            let method = &op.method;
            let docs = docs_or(
                &op.docs,
                &format!("Handles the `{}` operation{}.", op.name, version_suffix(op)),
            );
            let attrs = method_attrs(op);
            let params = op.params.iter().map(|p| {
                let (ident, ty) = (&p.ident, p.field_ty(krate));
                quote!(#ident: #ty)
            });
            quote! {
                #docs
                #attrs
                async fn #method(
                    &self,
                    ctx: &#krate::ConsumerContext,
                    #(#params),*
                ) -> #krate::HandlerResult;
            }
        });
    let fallback_doc = doc(&format!(
        "Receives the events the contract does not know (an unknown operation or version), \
         with their parameters as JSON, to log, forward or translate them. By default it \
         leaves them to the consumer's `on_unknown` policy (dead-lettered unless told to \
         skip them): return [`unhandled`]({link}::contract::unhandled) for that.",
        link = contract.krate_link(),
    ));
    quote! {
        #trait_doc
        #attrs
        #[#krate::async_trait]
        #vis trait #consumer: ::core::marker::Send + ::core::marker::Sync + 'static {
            #(#methods)*

            #fallback_doc
            async fn fallback(
                &self,
                ctx: &#krate::ConsumerContext,
                event: #krate::contract::RawEvent,
            ) -> #krate::HandlerResult {
                let _ = (ctx, event);
                #krate::contract::unhandled()
            }
        }
    }
}

/// `impl<H: XConsumer + ?Sized> Dispatch<H> for XEvent`.
pub(super) fn dispatch_impl(contract: &Contract) -> TokenStream {
    let krate = &contract.krate;
    let consumer = contract.consumer_ident();
    let event = contract.event_ident();
    let (handler, ctx) = (internal("__handler"), internal("__ctx"));
    let old = internal("__event");
    let arms = contract.operations.iter().map(|op| {
        let (variant, method) = (&op.variant, &op.method);
        if !op.is_current() {
            // Decoding upcasts already; an old shape built by hand is upcast here.
            return quote! {
                #old @ Self::#variant { .. } => {
                    match #krate::ContractEvent::upcast(#old) {
                        ::core::result::Result::Ok(newer) => {
                            #krate::Dispatch::<__H>::dispatch(newer, #handler, #ctx).await
                        }
                        ::core::result::Result::Err(e) => {
                            ::core::result::Result::Err(#krate::HandlerError::fatal(e))
                        }
                    }
                }
            };
        }
        let params: Vec<_> = op.params.iter().map(|p| &p.ident).collect();
        quote! {
            Self::#variant { #(#params),* } => {
                <__H as #consumer>::#method(#handler, #ctx, #(#params),*).await
            }
        }
    });
    quote! {
        #[#krate::async_trait]
        impl<__H: #consumer + ?::core::marker::Sized> #krate::Dispatch<__H> for #event {
            async fn dispatch(
                self,
                #handler: &__H,
                #ctx: &#krate::ConsumerContext,
            ) -> #krate::HandlerResult {
                match self {
                    #(#arms)*
                }
            }

            async fn fallback(
                #handler: &__H,
                #ctx: &#krate::ConsumerContext,
                #old: #krate::contract::RawEvent,
            ) -> #krate::HandlerResult {
                <__H as #consumer>::fallback(#handler, #ctx, #old).await
            }
        }
    }
}
