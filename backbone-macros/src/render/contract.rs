//! The contract side: the zero-sized type that replaces the trait, and its `Contract` impl.

use proc_macro2::TokenStream;
use quote::quote;

use super::{doc, item_attrs};
use crate::model::Contract;

/// `pub struct X;` carrying the trait's docs plus a generated line.
pub(super) fn contract_struct(contract: &Contract) -> TokenStream {
    let Contract {
        vis, ident, docs, ..
    } = contract;
    let attrs = item_attrs(contract);
    let separator = (!docs.is_empty()).then(|| doc(""));
    let generated = doc(&format!(
        "The `{}` contract, as a type: it implements [`Contract`]({}::Contract). Its events \
         are [`{}`], sent by [`{}`] and handled by a [`{}`].",
        contract.name,
        contract.krate_link(),
        contract.event_ident(),
        contract.producer_ident(),
        contract.consumer_ident(),
    ));
    quote! {
        #(#docs)*
        #separator
        #generated
        #attrs
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        #vis struct #ident;
    }
}

/// `impl Contract for X`.
pub(super) fn contract_impl(contract: &Contract) -> TokenStream {
    let Contract {
        krate, ident, name, ..
    } = contract;
    let event = contract.event_ident();
    quote! {
        impl #krate::Contract for #ident {
            const NAME: &'static str = #name;
            const OPERATIONS: &'static [#krate::Operation] =
                <#event as #krate::ContractEvent>::OPERATIONS;
            type Event = #event;
        }
    }
}
