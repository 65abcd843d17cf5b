//! Reading one method of a contract trait into an [`Operation`]: its attributes, its
//! signature (`async`, `&self`, no generics, body or return type) and its parameters (plain
//! names, owned types, not `ctx`).

use heck::ToUpperCamelCase;
use quote::{format_ident, quote};
use syn::ext::IdentExt;
use syn::{FnArg, GenericArgument, Pat, PathArguments, ReturnType, Signature, TraitItemFn, Type};

use super::{split_attrs, Operation, Param};
use crate::attr::EventArgs;
use crate::errors::Errors;

/// The name of the consumer-context parameter every generated handler method receives.
const CONTEXT_PARAMETER: &str = "ctx";

/// Method names the generated producer already defines.
const PRODUCER_METHODS: &[&str] = &[
    "new",
    "producer",
    "with_key",
    "with_header",
    "with_correlation_id",
    "caused_by",
    "with_subject",
];

/// Method names the generated consumer trait already defines.
const CONSUMER_METHODS: &[&str] = &["fallback"];

/// Checks one method and reads it into an [`Operation`].
pub(super) fn read_method(
    method: &TraitItemFn,
    contract_storage: Option<&syn::LitStr>,
    errors: &mut Errors,
) -> Operation {
    let sig = &method.sig;
    let ident = &sig.ident;
    let (docs, lints) = split_attrs(&method.attrs, "a contract method", true, errors);
    let mut event = EventArgs::default();
    for attr in method.attrs.iter().filter(|a| EventArgs::is_event_attr(a)) {
        event.read(attr, errors);
    }
    check_signature(sig, errors);
    if let Some(body) = &method.default {
        errors.spanned(
            body,
            "contract methods cannot have a body: the macro generates the producer and the \
             consumer from the signature; replace the body with `;`",
        );
    }
    let method_name = ident.unraw().to_string();
    if PRODUCER_METHODS.contains(&method_name.as_str()) {
        errors.spanned(
            ident,
            format_args!(
                "`{method_name}` is reserved: the generated producer already has a \
                 `{method_name}` method; rename this operation's method and keep the wire name \
                 with `#[event(name = \"{method_name}\")]`"
            ),
        );
    }
    if CONSUMER_METHODS.contains(&method_name.as_str()) {
        errors.spanned(
            ident,
            format_args!(
                "`{method_name}` is reserved: the generated consumer trait already has a \
                 `{method_name}` method (for events the contract does not know); rename this \
                 operation's method and keep the wire name with \
                 `#[event(name = \"{method_name}\")]`"
            ),
        );
    }
    let variant_name = method_name.to_upper_camel_case();
    let variant = if variant_name.is_empty() || variant_name == "Self" {
        errors.spanned(
            ident,
            format_args!("method `{method_name}` cannot be turned into an event variant name"),
        );
        format_ident!("Invalid", span = ident.span())
    } else {
        format_ident!("{}", variant_name, span = ident.span())
    };
    Operation {
        method: ident.clone(),
        variant,
        name_span: event.name.as_ref().map_or(ident.span(), |lit| lit.span()),
        name: event.name.as_ref().map_or(method_name, |lit| lit.value()),
        version: event.version.unwrap_or(0),
        docs,
        lints,
        params: read_params(sig, errors),
        deprecated: event.deprecated,
        upcast: event.upcast,
        storage: event
            .storage
            .as_ref()
            .or(contract_storage)
            .map_or_else(|| "hash".to_owned(), |lit| lit.value()),
    }
}

/// Checks everything in a method's signature except its parameters after `&self`.
fn check_signature(sig: &Signature, errors: &mut Errors) {
    let (fn_token, ident) = (&sig.fn_token, &sig.ident);
    if let Some(constness) = &sig.constness {
        errors.spanned(constness, "contract methods cannot be `const`");
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.spanned(unsafety, "contract methods cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(abi, "contract methods cannot declare an ABI");
    }
    if sig.asyncness.is_none() {
        errors.spanned(
            quote!(#fn_token #ident),
            format_args!(
                "contract methods must be `async`: write `async fn {}(&self, ...);`",
                ident.unraw()
            ),
        );
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            "contract methods cannot be generic: every parameter type must be concrete so \
             consumers can decode events",
        );
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.spanned(where_clause, "contract methods cannot have a where clause");
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, "contract methods cannot be variadic");
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        errors.spanned(
            ty,
            "contract methods return nothing: remove the return type; the generated producer \
             method returns `Result<MessageId, Error>` and consumer methods return \
             `HandlerResult`",
        );
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(receiver)) => {
            let shared_ref = matches!(receiver.reference, Some((_, None)));
            if !shared_ref || receiver.mutability.is_some() || receiver.colon_token.is_some() {
                errors.spanned(
                    receiver,
                    "contract methods take `&self`: write `&self` as the first parameter",
                );
            }
        }
        _ => errors.at(
            sig.paren_token.span.join(),
            "contract methods take `&self` as their first parameter; add `&self`",
        ),
    }
}

/// Checks and reads the parameters after `&self`.
fn read_params(sig: &Signature, errors: &mut Errors) -> Vec<Param> {
    let mut params: Vec<Param> = Vec::new();
    for (index, input) in sig.inputs.iter().enumerate() {
        let typed = match input {
            FnArg::Receiver(receiver) => {
                if index > 0 {
                    errors.spanned(receiver, "`self` must be the first parameter");
                }
                continue;
            }
            FnArg::Typed(typed) => typed,
        };
        let ParamAttrs {
            personal,
            subject,
            ttl_secs,
        } = param_attrs(&typed.attrs, errors);
        check_type(&typed.ty, errors);
        let ident = match &*typed.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.mutability.is_none() && p.subpat.is_none() => {
                p.ident.clone()
            }
            pat => {
                errors.spanned(
                    pat,
                    "contract parameters need a plain name (no pattern, `_` or `mut`): each \
                     parameter becomes a named field of the event, e.g. `amount: u64`",
                );
                continue;
            }
        };
        let name = ident.unraw().to_string();
        if name == CONTEXT_PARAMETER {
            errors.spanned(
                &ident,
                "`ctx` is reserved for the consumer context (`&ConsumerContext`) that the \
                 generated consumer methods receive first; rename this parameter",
            );
        }
        if params.iter().any(|p| p.name == name) {
            errors.spanned(&ident, format_args!("duplicate parameter `{name}`"));
            continue;
        }
        if subject {
            if let Some(first) = params.iter().find(|p| p.subject) {
                errors.spanned(
                    &ident,
                    format_args!(
                        "`{name}` and `{}` are both `#[subject]`: an event has one data subject",
                        first.name
                    ),
                );
            }
        }
        params.push(Param {
            ident,
            name,
            ty: (*typed.ty).clone(),
            personal,
            subject,
            ttl_secs,
        });
    }
    params
}

/// What `#[personal]`, `#[personal(ttl = "...")]` and `#[subject]` say of one parameter.
#[derive(Default)]
struct ParamAttrs {
    personal: bool,
    subject: bool,
    ttl_secs: Option<u64>,
}

/// Reads `#[personal]`, `#[personal(ttl = "...")]` and `#[subject]` on one parameter; anything
/// else is an error.
fn param_attrs(attrs: &[syn::Attribute], errors: &mut Errors) -> ParamAttrs {
    let (mut personal, mut subject) = (None, None);
    let mut out = ParamAttrs::default();
    for attr in attrs {
        let slot = if attr.path().is_ident("personal") {
            &mut personal
        } else if attr.path().is_ident("subject") {
            &mut subject
        } else {
            errors.spanned(
                attr,
                "unsupported attribute on a contract parameter: expected `#[personal]` (sealed \
                 with the data subject's key) or `#[subject]` (names the data subject)",
            );
            continue;
        };
        if slot.is_some() {
            errors.spanned(attr, "duplicate attribute on a contract parameter");
            continue;
        }
        *slot = Some(attr);
        match &attr.meta {
            syn::Meta::Path(_) => {}
            syn::Meta::List(_) if attr.path().is_ident("personal") => {
                out.ttl_secs = errors.ok(personal_ttl(attr));
            }
            _ => errors.spanned(
                attr,
                "`#[subject]` takes no arguments; `#[personal]` takes only `ttl`, as in \
                 `#[personal(ttl = \"30d\")]`",
            ),
        }
    }
    if let (Some(_), Some(attr)) = (personal, subject) {
        errors.spanned(
            attr,
            "a parameter cannot be both `#[personal]` and `#[subject]`: the subject is stored \
             in the clear to find its key; name the subject with an opaque id (a customer \
             number) and mark the personal data `#[personal]`",
        );
    }
    out.personal = personal.is_some();
    out.subject = subject.is_some();
    out
}

/// The seconds of `#[personal(ttl = "30d")]`: a number and a unit, `s`, `m`, `h` or `d`.
fn personal_ttl(attr: &syn::Attribute) -> syn::Result<u64> {
    let example = "expected `#[personal(ttl = \"30d\")]`: a whole number and a unit, `s`, \
                   `m`, `h` or `d`";
    let meta: syn::MetaNameValue = attr.parse_args()?;
    if !meta.path.is_ident("ttl") {
        return Err(syn::Error::new_spanned(&meta.path, example));
    }
    let syn::Expr::Lit(syn::ExprLit {
        lit: syn::Lit::Str(lit),
        ..
    }) = &meta.value
    else {
        return Err(syn::Error::new_spanned(&meta.value, example));
    };
    let text = lit.value();
    let split = text.len().saturating_sub(1);
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if scale > 0 && n > 0 => n
            .checked_mul(scale)
            .ok_or_else(|| syn::Error::new(lit.span(), "the TTL is too long")),
        _ => Err(syn::Error::new(
            lit.span(),
            format!("{example}, longer than zero; found {text:?}"),
        )),
    }
}

/// Rejects borrowed and `impl Trait` parameter types (anywhere in the type): events are
/// decoded into owned values.
fn check_type(ty: &Type, errors: &mut Errors) {
    match ty {
        Type::Reference(reference) => {
            let owned = match &*reference.elem {
                Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => {
                    "e.g. `String` instead of `&str`".to_owned()
                }
                Type::Slice(_) => "e.g. `Vec<T>` instead of `&[T]`".to_owned(),
                elem => format!("e.g. `{}` instead of `&{}`", pretty(elem), pretty(elem)),
            };
            errors.spanned(
                ty,
                format_args!(
                    "contract parameters are taken by value, so events can be decoded into \
                     owned values: use an owned type, {owned}"
                ),
            );
        }
        Type::ImplTrait(_) => errors.spanned(
            ty,
            "contract parameters are taken by value and need a concrete type that can be \
             encoded and decoded: replace `impl Trait` with a concrete type",
        ),
        Type::Array(array) => check_type(&array.elem, errors),
        Type::Group(group) => check_type(&group.elem, errors),
        Type::Paren(paren) => check_type(&paren.elem, errors),
        Type::Slice(slice) => check_type(&slice.elem, errors),
        Type::Tuple(tuple) => tuple.elems.iter().for_each(|elem| check_type(elem, errors)),
        Type::Path(path) => {
            if let Some(qself) = &path.qself {
                check_type(&qself.ty, errors);
            }
            for segment in &path.path.segments {
                if let PathArguments::AngleBracketed(args) = &segment.arguments {
                    for arg in &args.args {
                        match arg {
                            GenericArgument::Type(ty) => check_type(ty, errors),
                            GenericArgument::Lifetime(lifetime) if lifetime.ident != "static" => {
                                errors.spanned(
                                    lifetime,
                                    "contract parameters must own their data: only the \
                                     `'static` lifetime is allowed",
                                )
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// A type as readable source text, for messages.
fn pretty(ty: &Type) -> String {
    quote!(#ty)
        .to_string()
        .replace(" < ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace(":: ", "::")
        .replace(" ::", "::")
}
