//! The builder side: two extension traits, implemented for every channel's builders, that add
//! `build_x_producer()` to producer builders and `subscribe_x_consumer(handler)` to consumer
//! builders.

use proc_macro2::TokenStream;
use quote::quote;

use super::{doc, item_attrs};
use crate::model::Contract;

/// `pub trait XProducerBuilderExt: ProducerBuilder` with `build_x_producer`.
pub(super) fn producer_builder_ext(contract: &Contract) -> TokenStream {
    let krate = &contract.krate;
    let vis = &contract.vis;
    let (ext, producer, build) = (
        contract.producer_ext_ident(),
        contract.producer_ident(),
        contract.build_fn_ident(),
    );
    let attrs = item_attrs(contract);
    let trait_doc = doc(&format!(
        "Adds `{build}` to every channel's [`ProducerBuilder`]({}::ProducerBuilder).",
        contract.krate_link()
    ));
    let method_doc = doc(&format!("Connects and returns a [`{producer}`]."));
    quote! {
        #trait_doc
        #attrs
        #vis trait #ext: #krate::ProducerBuilder {
            #method_doc
            fn #build(
                self,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<#producer, #krate::Error>,
            > + ::core::marker::Send {
                async move {
                    ::core::result::Result::Ok(#producer::new(
                        #krate::ProducerBuilder::build_producer(self).await?,
                    ))
                }
            }
        }
    }
}

/// `impl<B: ProducerBuilder> XProducerBuilderExt for B {}`.
pub(super) fn producer_builder_ext_impl(contract: &Contract) -> TokenStream {
    let krate = &contract.krate;
    let ext = contract.producer_ext_ident();
    quote! {
        impl<__B: #krate::ProducerBuilder> #ext for __B {}
    }
}

/// `pub trait XConsumerBuilderExt: ConsumerBuilder` with `subscribe_x_consumer`.
pub(super) fn consumer_builder_ext(contract: &Contract) -> TokenStream {
    let krate = &contract.krate;
    let vis = &contract.vis;
    let (ext, consumer, event, subscribe) = (
        contract.consumer_ext_ident(),
        contract.consumer_ident(),
        contract.event_ident(),
        contract.subscribe_fn_ident(),
    );
    let attrs = item_attrs(contract);
    let trait_doc = doc(&format!(
        "Adds `{subscribe}` to every channel's [`ConsumerBuilder`]({}::ConsumerBuilder).",
        contract.krate_link()
    ));
    let method_doc = doc(&format!(
        "Starts a consumer that feeds every event to `handler` (a [`{consumer}`]); keep the \
         returned [`ConsumerLifetime`]({}::ConsumerLifetime) for as long as it should run.",
        contract.krate_link()
    ));
    quote! {
        #trait_doc
        #attrs
        #vis trait #ext: #krate::ConsumerBuilder {
            #method_doc
            fn #subscribe<__H: #consumer>(
                self,
                handler: __H,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<#krate::ConsumerLifetime, #krate::Error>,
            > + ::core::marker::Send {
                #krate::ConsumerBuilder::subscribe(
                    self,
                    ::std::sync::Arc::new(#krate::ContractHandler::<#event, __H>::new(handler)),
                )
            }
        }
    }
}

/// `impl<B: ConsumerBuilder> XConsumerBuilderExt for B {}`.
pub(super) fn consumer_builder_ext_impl(contract: &Contract) -> TokenStream {
    let krate = &contract.krate;
    let ext = contract.consumer_ext_ident();
    quote! {
        impl<__B: #krate::ConsumerBuilder> #ext for __B {}
    }
}
