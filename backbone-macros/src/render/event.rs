//! The event side: the `XEvent` enum (one struct variant per operation) and its
//! `ContractEvent` impl (operation table, `operation`, `encode`, `decode`).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::{doc, docs_or, internal, item_attrs, version_suffix};
use crate::errors::compact;
use crate::model::{Contract, Operation};

/// `pub enum XEvent { OrderPlaced { user: User, ... }, ... }`.
pub(super) fn event_enum(contract: &Contract) -> TokenStream {
    let vis = &contract.vis;
    let event = contract.event_ident();
    let attrs = item_attrs(contract);
    let enum_doc = doc(&format!(
        "An event of the [`{}`] contract: one variant per operation, holding its parameters.",
        contract.name
    ));
    let variants = contract.operations.iter().map(|op| {
        let variant = &op.variant;
        let docs = docs_or(
            &op.docs,
            &format!("The `{}` operation{}.", op.name, version_suffix(op)),
        );
        let fields = op.params.iter().map(|p| {
            let (ident, ty) = (&p.ident, p.field_ty(&contract.krate));
            let field_doc = doc(&format!(
                "The `{}` parameter{}.",
                p.name,
                if p.personal { " (personal)" } else { "" }
            ));
            quote!(#field_doc #ident: #ty)
        });
        quote!(#docs #variant { #(#fields),* })
    });
    quote! {
        #enum_doc
        #attrs
        #[derive(Debug, Clone)]
        #vis enum #event {
            #(#variants),*
        }
    }
}

/// `impl ContractEvent for XEvent`.
pub(super) fn event_impl(contract: &Contract) -> TokenStream {
    let krate = &contract.krate;
    let name = &contract.name;
    let event = contract.event_ident();
    let operations = operations_const(contract);
    let operation = operation_fn(contract);
    let encode = encode_fn(contract);
    let decode = decode_fn(contract);
    let upcast = upcast_fn(contract);
    quote! {
        impl #krate::ContractEvent for #event {
            const CONTRACT: &'static str = #name;
            #operations
            #operation
            #encode
            #decode
            #upcast
        }
    }
}

/// `const OPERATIONS`: the operation table, in declaration order.
fn operations_const(contract: &Contract) -> TokenStream {
    let krate = &contract.krate;
    let entries = contract.operations.iter().map(|op| {
        let (name, version) = (&op.name, op.version);
        let parameters = op.params.iter().map(|p| &p.name);
        let deprecated = match &op.deprecated {
            Some(why) => quote!(::core::option::Option::Some(#why)),
            None => quote!(::core::option::Option::None),
        };
        let upcast = match &op.upcast {
            Some(path) => {
                let path = compact(path);
                quote!(::core::option::Option::Some(#path))
            }
            None => quote!(::core::option::Option::None),
        };
        let storage = match op.storage.as_str() {
            "inline" => quote!(#krate::storage::Storage::Inline),
            "object" => quote!(#krate::storage::Storage::Object),
            _ => quote!(#krate::storage::Storage::Hash),
        };
        let personal = op.params.iter().filter(|p| p.personal).map(|p| {
            let name = &p.name;
            let ttl = match p.ttl_secs {
                Some(secs) => quote!(::core::option::Option::Some(#secs)),
                None => quote!(::core::option::Option::None),
            };
            quote!(#krate::personal::PersonalParameter { name: #name, ttl_secs: #ttl })
        });
        let subject = match op.params.iter().find(|p| p.subject) {
            Some(p) => {
                let name = &p.name;
                quote!(::core::option::Option::Some(#name))
            }
            None => quote!(::core::option::Option::None),
        };
        quote! {
            #krate::Operation {
                name: #name,
                version: #version,
                parameters: &[#(#parameters),*],
                deprecated: #deprecated,
                upcast: #upcast,
                storage: #storage,
                personal: &[#(#personal),*],
                subject: #subject,
            }
        }
    });
    quote! {
        const OPERATIONS: &'static [#krate::Operation] = &[#(#entries),*];
    }
}

/// `fn operation(&self)`: the variant's entry in the operation table.
fn operation_fn(contract: &Contract) -> TokenStream {
    let krate = &contract.krate;
    let arms = contract.operations.iter().enumerate().map(|(index, op)| {
        let variant = &op.variant;
        quote! {
            Self::#variant { .. } => &<Self as #krate::ContractEvent>::OPERATIONS[#index],
        }
    });
    quote! {
        fn operation(&self) -> &'static #krate::Operation {
            match *self {
                #(#arms)*
            }
        }
    }
}

/// `fn encode(&self)`: one JSON value per parameter, in declaration order.
fn encode_fn(contract: &Contract) -> TokenStream {
    let krate = &contract.krate;
    let fields = internal("__fields");
    let arms = contract.operations.iter().map(|op| {
        let variant = &op.variant;
        let bindings = op.params.iter().map(|p| &p.ident);
        let body = if op.params.is_empty() {
            quote!(::core::result::Result::Ok(#krate::Fields::new()))
        } else {
            let count = op.params.len();
            let pushes = op.params.iter().map(|p| {
                let (ident, param) = (&p.ident, &p.name);
                let operation = &op.name;
                let encode = match p.personal {
                    true => quote!(encode_personal),
                    false => quote!(encode),
                };
                quote_spanned! {p.ty.span()=>
                    #fields.push(#param, #krate::codec::#encode(#operation, #param, #ident)?);
                }
            });
            quote! {{
                let mut #fields = #krate::Fields::with_capacity(#count);
                #(#pushes)*
                ::core::result::Result::Ok(#fields)
            }}
        };
        quote!(Self::#variant { #(#bindings),* } => #body,)
    });
    // `match *self {}` for a contract without operations: `&Self` is never empty.
    let scrutinee = if contract.operations.is_empty() {
        quote!(*self)
    } else {
        quote!(self)
    };
    quote! {
        fn encode(&self) -> ::core::result::Result<#krate::Fields, #krate::Error> {
            match #scrutinee {
                #(#arms)*
            }
        }
    }
}

/// `fn decode(operation, version, fields)`: matches (name, version) and decodes every
/// parameter, or fails with `Error::UnknownOperation`.
fn decode_fn(contract: &Contract) -> TokenStream {
    let krate = &contract.krate;
    let name = &contract.name;
    let (operation, version, fields) = (
        internal("__operation"),
        internal("__version"),
        internal("__fields"),
    );
    let arms = contract
        .operations
        .iter()
        .map(|op| decode_arm(contract, op));
    let event = internal("__event");
    let upcasted = match contract.operations.iter().any(|op| !op.is_current()) {
        true => quote!(#krate::ContractEvent::upcast(#event?)),
        false => quote!(#event),
    };
    quote! {
        fn decode(
            #operation: &str,
            #version: u32,
            #fields: &#krate::Fields,
        ) -> ::core::result::Result<Self, #krate::Error> {
            let #event: ::core::result::Result<Self, #krate::Error> = match (#operation, #version) {
                #(#arms)*
                _ => ::core::result::Result::Err(#krate::Error::UnknownOperation {
                    contract: ::std::string::String::from(#name),
                    operation: ::std::string::String::from(#operation),
                    version: #version,
                }),
            };
            #upcasted
        }
    }
}

/// `fn upcast(self)`, when an operation has an upcaster: each old shape goes through its
/// upcaster, again while the result has one (at most once per operation: more is a cycle).
fn upcast_fn(contract: &Contract) -> TokenStream {
    let krate = &contract.krate;
    let name = &contract.name;
    let event = internal("__event");
    let arms: Vec<_> = contract
        .operations
        .iter()
        .filter_map(|op| {
            let path = op.upcast.as_ref()?;
            let (variant, operation, version) = (&op.variant, &op.name, op.version);
            let params: Vec<_> = op.params.iter().map(|p| &p.ident).collect();
            let upcaster = compact(path);
            Some(quote_spanned! {path.span()=>
                Self::#variant { #(#params),* } => match #path(#(#params),*) {
                    ::core::result::Result::Ok(newer) => newer,
                    ::core::result::Result::Err(e) => {
                        return ::core::result::Result::Err(#krate::Error::Upcast {
                            contract: ::std::string::String::from(#name),
                            operation: ::std::string::String::from(#operation),
                            version: #version,
                            upcaster: ::std::string::String::from(#upcaster),
                            reason: ::std::string::ToString::to_string(&e),
                        })
                    }
                },
            })
        })
        .collect();
    if arms.is_empty() {
        return TokenStream::new();
    }
    let steps = arms.len();
    quote! {
        fn upcast(self) -> ::core::result::Result<Self, #krate::Error> {
            let mut #event = self;
            for _ in 0..#steps {
                #event = match #event {
                    #(#arms)*
                    current => return ::core::result::Result::Ok(current),
                };
            }
            let op = #krate::ContractEvent::operation(&#event);
            if op.upcast.is_none() {
                return ::core::result::Result::Ok(#event);
            }
            ::core::result::Result::Err(#krate::Error::Upcast {
                contract: ::std::string::String::from(#name),
                operation: ::std::string::String::from(op.name),
                version: op.version,
                upcaster: ::std::string::String::from(op.upcast.unwrap_or_default()),
                reason: ::std::format!(
                    "still not in a current shape after {} upcasts: the upcasters form a cycle",
                    #steps
                ),
            })
        }
    }
}

/// One arm of `decode`: `("order_placed", 0) => Ok(Self::OrderPlaced { user: decode(..)?, .. })`.
fn decode_arm(contract: &Contract, op: &Operation) -> TokenStream {
    let krate = &contract.krate;
    let fields = internal("__fields");
    let (variant, operation, version) = (&op.variant, &op.name, op.version);
    let values = op.params.iter().map(|p| {
        let (ident, param, ty) = (&p.ident, &p.name, &p.ty);
        let decode = match p.personal {
            true => quote!(decode_personal),
            false => quote!(decode),
        };
        let value = quote_spanned! {ty.span()=>
            #krate::codec::#decode::<#ty>(#operation, #param, #fields)?
        };
        quote!(#ident: #value)
    });
    quote! {
        (#operation, #version) => ::core::result::Result::Ok(Self::#variant { #(#values),* }),
    }
}
