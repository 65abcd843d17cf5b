//! The schema side, for `#[events_contract(schema)]`: `impl ContractSchema for X`, wrapped in
//! `__with_schema!`, which keeps it with backbone-core's `schema` feature and says to turn the
//! feature on without it.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, Meta, Type};

use super::internal;
use crate::model::{Contract, Operation};

/// `impl ContractSchema for X`, for `#[events_contract(schema)]`: each operation's parameters
/// with their schemas, and its docs.
pub(super) fn schema_impl(contract: &Contract) -> TokenStream {
    if !contract.schema {
        return TokenStream::new();
    }
    let krate = &contract.krate;
    let ident = &contract.ident;
    let generator = internal("__generator");
    let operations = contract.operations.iter().map(|op| {
        let params = op.params.iter().map(|p| {
            let (name, ty) = (&p.name, &p.ty);
            let required = !is_option(ty);
            let schema = match p.personal {
                true => quote_spanned! {ty.span()=>
                    #krate::schema::personal_schema(#generator.subschema_for::<#ty>())
                },
                false => quote_spanned! {ty.span()=> #generator.subschema_for::<#ty>() },
            };
            quote_spanned! {ty.span()=>
                #krate::schema::ParameterSchema {
                    name: #name,
                    required: #required,
                    schema: #schema,
                }
            }
        });
        quote!(::std::vec![#(#params),*])
    });
    let descriptions = contract.operations.iter().map(|op| match description(op) {
        Some(text) => quote!(::core::option::Option::Some(#text)),
        None => quote!(::core::option::Option::None),
    });
    quote! {
        #krate::__with_schema! {
            impl #krate::schema::ContractSchema for #ident {
                fn parameter_schemas(
                    #generator: &mut #krate::schema::SchemaGenerator,
                ) -> ::std::vec::Vec<::std::vec::Vec<#krate::schema::ParameterSchema>> {
                    let _ = &#generator;
                    ::std::vec![#(#operations),*]
                }

                fn descriptions() -> &'static [::core::option::Option<&'static str>] {
                    &[#(#descriptions),*]
                }
            }
        }
    }
}

/// Whether a parameter is optional: its type is `Option<..>` (decoding a missing field gives
/// `None`).
fn is_option(ty: &Type) -> bool {
    match ty {
        Type::Path(p) if p.qself.is_none() => {
            p.path.segments.last().is_some_and(|s| s.ident == "Option")
        }
        Type::Group(g) => is_option(&g.elem),
        Type::Paren(p) => is_option(&p.elem),
        _ => false,
    }
}

/// The method's doc comment, one line per `///` line.
fn description(op: &Operation) -> Option<String> {
    let lines: Vec<String> = op
        .docs
        .iter()
        .filter_map(|attr| match &attr.meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) => Some(s.value().trim().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}
