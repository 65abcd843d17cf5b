//! Parsing of the macro's own attributes: the arguments of `#[events_contract(...)]`
//! ([`ContractArgs`]) and the `#[event(...)]` attribute of contract methods ([`EventArgs`]).
//!
//! Every key is checked: an unknown key or a value of the wrong kind is an error spanned on the
//! offending token, and all problems of an attribute are reported together.

use proc_macro2::TokenStream;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Attribute, Expr, ExprLit, Lit, LitStr, Meta, Token};

use crate::errors::{compact, Errors};

/// The arguments of `#[events_contract(...)]`.
#[derive(Default)]
pub(crate) struct ContractArgs {
    /// `crate = "some::path"`: the path generated code uses to reach backbone-core
    /// (`::backbone_core` when absent), like serde's `#[serde(crate = "...")]`.
    pub(crate) krate: Option<syn::Path>,
    /// `schema`: implement `ContractSchema` (needs backbone-core's `schema` feature and
    /// parameter types deriving `schemars::JsonSchema`).
    pub(crate) schema: bool,
    /// `storage = "hash" | "inline" | "object"`: where the operations' parameters live by default.
    pub(crate) storage: Option<LitStr>,
}

impl ContractArgs {
    /// Parses the tokens between the parentheses of `#[events_contract(...)]`.
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Self> {
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(tokens)?;
        let mut errors = Errors::default();
        let mut args = ContractArgs::default();
        for meta in &metas {
            if meta.path().is_ident("schema") {
                match meta {
                    Meta::Path(_) if !args.schema => args.schema = true,
                    Meta::Path(_) => {
                        errors.spanned(meta, "duplicate key `schema` in #[events_contract]")
                    }
                    other => errors.spanned(
                        other,
                        "`schema` takes no value: write `#[events_contract(schema)]`",
                    ),
                }
            } else if meta.path().is_ident("storage") {
                if let Some(lit) = errors.ok(storage_value(meta)) {
                    if args.storage.is_some() {
                        errors
                            .spanned(meta.path(), "duplicate key `storage` in #[events_contract]");
                    } else {
                        args.storage = Some(lit);
                    }
                }
            } else if meta.path().is_ident("crate") {
                let Some(lit) = errors.ok(string_value(meta, "crate", "::backbone_core")) else {
                    continue;
                };
                if args.krate.is_some() {
                    errors.spanned(meta.path(), "duplicate key `crate` in #[events_contract]");
                    continue;
                }
                match lit.parse::<syn::Path>() {
                    Ok(path) => args.krate = Some(path),
                    Err(_) => errors.at(
                        lit.span(),
                        format_args!(
                            "`crate` must be a path to backbone-core, such as \
                             \"::backbone_core\"; found {:?}",
                            lit.value()
                        ),
                    ),
                }
            } else {
                errors.spanned(
                    meta.path(),
                    format_args!(
                        "unknown key `{}` in #[events_contract]; expected `crate`, `schema` or \
                         `storage`",
                        compact(meta.path())
                    ),
                );
            }
        }
        errors.finish()?;
        Ok(args)
    }
}

/// The keys of a method's `#[event(...)]` attribute.
#[derive(Default)]
pub(crate) struct EventArgs {
    /// `name = "..."`: the operation's stable name, instead of the method name.
    pub(crate) name: Option<LitStr>,
    /// `version = N`: the operation's version (0 when absent).
    pub(crate) version: Option<u32>,
    /// `deprecated = "why"`: the producer method carries `#[deprecated]`; consumers keep
    /// receiving it.
    pub(crate) deprecated: Option<LitStr>,
    /// `upcast = path`: the function reading this (old) operation as a newer one.
    pub(crate) upcast: Option<syn::Path>,
    /// `storage = "hash" | "inline" | "object"`: where this operation's parameters live.
    pub(crate) storage: Option<LitStr>,
}

impl EventArgs {
    /// Whether `attr` is an `#[event(...)]` attribute.
    pub(crate) fn is_event_attr(attr: &Attribute) -> bool {
        attr.path().is_ident("event")
    }

    /// Reads one `#[event(...)]` attribute into `self`, recording every problem in `errors`.
    /// A method may carry several `#[event]` attributes, but no key may be given twice.
    pub(crate) fn read(&mut self, attr: &Attribute, errors: &mut Errors) {
        let list = match &attr.meta {
            Meta::List(list) => list,
            _ => {
                errors.spanned(
                    attr,
                    "expected `#[event(name = \"...\")]` and/or `#[event(version = N)]`",
                );
                return;
            }
        };
        let Some(metas) =
            errors.ok(list.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated))
        else {
            return;
        };
        for meta in &metas {
            if meta.path().is_ident("name") {
                let Some(lit) = errors.ok(string_value(meta, "name", "delivered")) else {
                    continue;
                };
                if self.name.is_some() {
                    errors.spanned(meta.path(), "duplicate key `name` in #[event]");
                } else if lit.value().is_empty() {
                    errors.at(lit.span(), "the operation name cannot be empty");
                } else {
                    self.name = Some(lit);
                }
            } else if meta.path().is_ident("version") {
                let Some(version) = errors.ok(version_value(meta)) else {
                    continue;
                };
                if self.version.is_some() {
                    errors.spanned(meta.path(), "duplicate key `version` in #[event]");
                } else {
                    self.version = Some(version);
                }
            } else if meta.path().is_ident("deprecated") {
                let example = "send `packing` v1 instead";
                let Some(lit) = errors.ok(string_value(meta, "deprecated", example)) else {
                    continue;
                };
                if self.deprecated.is_some() {
                    errors.spanned(meta.path(), "duplicate key `deprecated` in #[event]");
                } else if lit.value().trim().is_empty() {
                    errors.at(
                        lit.span(),
                        "say why it is deprecated and what to send instead",
                    );
                } else {
                    self.deprecated = Some(lit);
                }
            } else if meta.path().is_ident("storage") {
                let Some(lit) = errors.ok(storage_value(meta)) else {
                    continue;
                };
                if self.storage.is_some() {
                    errors.spanned(meta.path(), "duplicate key `storage` in #[event]");
                } else {
                    self.storage = Some(lit);
                }
            } else if meta.path().is_ident("upcast") {
                let Some(path) = errors.ok(path_value(meta)) else {
                    continue;
                };
                if self.upcast.is_some() {
                    errors.spanned(meta.path(), "duplicate key `upcast` in #[event]");
                } else {
                    self.upcast = Some(path);
                }
            } else {
                errors.spanned(
                    meta.path(),
                    format_args!(
                        "unknown key `{}` in #[event]; expected `name`, `version`, \
                         `deprecated`, `upcast` or `storage`",
                        compact(meta.path())
                    ),
                );
            }
        }
    }
}

/// The string literal of `key = "..."`; `example` shows a valid value in the error.
fn string_value(meta: &Meta, key: &str, example: &str) -> syn::Result<LitStr> {
    let message = format!("`{key}` expects a string literal, e.g. `{key} = \"{example}\"`");
    match meta {
        Meta::NameValue(nv) => match &nv.value {
            Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            }) => Ok(lit.clone()),
            other => Err(syn::Error::new_spanned(other, message)),
        },
        other => Err(syn::Error::new_spanned(other, message)),
    }
}

/// The storage strategies `storage = "..."` accepts.
pub(crate) const STORAGES: &[&str] = &["hash", "inline", "object"];

/// The string literal of `storage = "hash"` or `storage = "inline"`.
fn storage_value(meta: &Meta) -> syn::Result<LitStr> {
    let lit = string_value(meta, "storage", "inline")?;
    if !STORAGES.contains(&lit.value().as_str()) {
        return Err(syn::Error::new(
            lit.span(),
            format_args!(
                "unknown storage {:?}: expected \"hash\" (a payload hash per event, the \
                 default), \"inline\" (the parameters in the stream entry) or \"object\" (inline, large \
                 parameters in an object store)",
                lit.value()
            ),
        ));
    }
    Ok(lit)
}

/// The function path of `upcast = path::to::function`.
fn path_value(meta: &Meta) -> syn::Result<syn::Path> {
    let message = "`upcast` expects the path of a function, e.g. `upcast = packing_v0_to_v1`";
    let Meta::NameValue(nv) = meta else {
        return Err(syn::Error::new_spanned(meta, message));
    };
    match &nv.value {
        Expr::Path(p) if p.qself.is_none() => Ok(p.path.clone()),
        other => Err(syn::Error::new_spanned(other, message)),
    }
}

/// The `u32` of `version = N`.
fn version_value(meta: &Meta) -> syn::Result<u32> {
    let message = "`version` expects an integer literal (a `u32`), e.g. `version = 1`";
    let Meta::NameValue(nv) = meta else {
        return Err(syn::Error::new_spanned(meta, message));
    };
    let Expr::Lit(ExprLit {
        lit: Lit::Int(lit), ..
    }) = &nv.value
    else {
        return Err(syn::Error::new_spanned(&nv.value, message));
    };
    if lit.base10_digits().starts_with('-') {
        return Err(syn::Error::new(lit.span(), "`version` cannot be negative"));
    }
    if !matches!(lit.suffix(), "" | "u32") {
        return Err(syn::Error::new(lit.span(), message));
    }
    let version = lit.base10_parse::<u32>().map_err(|_| {
        syn::Error::new(
            lit.span(),
            format_args!("`version` must fit in a `u32` (at most {})", u32::MAX),
        )
    })?;
    Ok(version)
}
