//! The model of a contract: [`Contract::from_item`] reads the annotated trait, checks that it
//! is a valid contract and turns it into a [`Contract`] with one [`Operation`] per method
//! (methods are read in `model/method.rs`).
//!
//! Every mistake is recorded (see [`Errors`]) and reported together, each error spanned on the
//! token that is wrong, so a user fixes all of them in one round.

mod method;

use std::collections::HashMap;

use heck::ToSnakeCase;
use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, ToTokens};
use syn::ext::IdentExt;
use syn::{Attribute, Item, ItemTrait, TraitItem, Type, Visibility};

use crate::attr::{ContractArgs, EventArgs};
use crate::errors::{compact, Errors};

/// Lint attributes carried from the trait and its methods onto the generated items.
const LINT_ATTRIBUTES: &[&str] = &["allow", "warn", "deny", "forbid", "expect"];

/// A contract, read from the annotated trait.
pub(crate) struct Contract {
    /// The path generated code uses to reach backbone-core.
    pub(crate) krate: syn::Path,
    /// The trait's visibility, given to every generated item.
    pub(crate) vis: Visibility,
    /// The trait's identifier, reused for the contract type.
    pub(crate) ident: Ident,
    /// The contract's name ([`Contract::ident`] without `r#`).
    pub(crate) name: String,
    /// The trait's doc attributes.
    pub(crate) docs: Vec<Attribute>,
    /// The trait's lint attributes (`#[allow(...)]` and friends).
    pub(crate) lints: Vec<Attribute>,
    /// One operation per method, in declaration order.
    pub(crate) operations: Vec<Operation>,
    /// `#[events_contract(schema)]`: implement `ContractSchema`.
    pub(crate) schema: bool,
}

/// One operation: a method of the contract trait.
pub(crate) struct Operation {
    /// The method's identifier, reused for the consumer and producer methods.
    pub(crate) method: Ident,
    /// The event variant: the method name in PascalCase.
    pub(crate) variant: Ident,
    /// The stable operation name: the method name unless `#[event(name = "...")]`.
    pub(crate) name: String,
    /// Where the name comes from (the `name = "..."` literal or the method's identifier).
    pub(crate) name_span: Span,
    /// The version from `#[event(version = N)]`, 0 by default.
    pub(crate) version: u32,
    /// The method's doc attributes.
    pub(crate) docs: Vec<Attribute>,
    /// The method's lint attributes.
    pub(crate) lints: Vec<Attribute>,
    /// The parameters after `&self`, in declaration order.
    pub(crate) params: Vec<Param>,
    /// `#[event(deprecated = "...")]`.
    pub(crate) deprecated: Option<syn::LitStr>,
    /// `#[event(upcast = path)]`: consumers never see this operation, only what it becomes.
    pub(crate) upcast: Option<syn::Path>,
    /// `#[event(storage = "...")]`, or the contract's, or `hash`.
    pub(crate) storage: String,
}

impl Operation {
    /// Whether consumers see this operation (it has no upcaster).
    pub(crate) fn is_current(&self) -> bool {
        self.upcast.is_none()
    }
}

/// One parameter of an operation: one field of the event variant and of the payload.
pub(crate) struct Param {
    /// The parameter's identifier, as written (possibly raw, like `r#type`).
    pub(crate) ident: Ident,
    /// The field name on the wire: the identifier without `r#`.
    pub(crate) name: String,
    /// The parameter's type, as written.
    pub(crate) ty: Type,
    /// `#[personal]`: sealed with the data subject's key; the event holds `Personal<ty>`.
    pub(crate) personal: bool,
    /// `#[subject]`: its value names the event's data subject.
    pub(crate) subject: bool,
    /// `#[personal(ttl = "...")]`, in seconds.
    pub(crate) ttl_secs: Option<u64>,
}

impl Param {
    /// The type the event and the consumer hold: `Personal<ty>` for a personal parameter.
    pub(crate) fn field_ty(&self, krate: &syn::Path) -> TokenStream {
        let ty = &self.ty;
        match self.personal {
            true => quote!(#krate::personal::Personal<#ty>),
            false => quote!(#ty),
        }
    }
}

impl Contract {
    /// Reads the macro's arguments (`attr`) and the annotated item, checking everything and
    /// returning every problem at once.
    pub(crate) fn from_item(attr: TokenStream, item: TokenStream) -> syn::Result<Contract> {
        let mut errors = Errors::default();
        let args = errors.ok(ContractArgs::parse(attr)).unwrap_or_default();
        let contract = match syn::parse2::<Item>(item) {
            Ok(Item::Trait(item)) => Some(read_trait(args, item, &mut errors)),
            Ok(other) => {
                not_a_trait(&other, &mut errors);
                None
            }
            Err(error) => {
                errors.push(error);
                None
            }
        };
        errors.finish()?;
        // Without errors, the item was a trait.
        Ok(contract.expect("a trait was read"))
    }

    /// The event enum: `XEvent`.
    pub(crate) fn event_ident(&self) -> Ident {
        format_ident!("{}Event", self.name, span = self.ident.span())
    }

    /// The consumer trait: `XConsumer`.
    pub(crate) fn consumer_ident(&self) -> Ident {
        format_ident!("{}Consumer", self.name, span = self.ident.span())
    }

    /// The typed producer: `XProducer`.
    pub(crate) fn producer_ident(&self) -> Ident {
        format_ident!("{}Producer", self.name, span = self.ident.span())
    }

    /// The producer-builder extension trait: `XProducerBuilderExt`.
    pub(crate) fn producer_ext_ident(&self) -> Ident {
        format_ident!("{}ProducerBuilderExt", self.name, span = self.ident.span())
    }

    /// The consumer-builder extension trait: `XConsumerBuilderExt`.
    pub(crate) fn consumer_ext_ident(&self) -> Ident {
        format_ident!("{}ConsumerBuilderExt", self.name, span = self.ident.span())
    }

    /// The producer-builder method: `build_x_producer`.
    pub(crate) fn build_fn_ident(&self) -> Ident {
        let snake = self.name.to_snake_case();
        format_ident!("build_{}_producer", snake, span = self.ident.span())
    }

    /// The consumer-builder method: `subscribe_x_consumer`.
    pub(crate) fn subscribe_fn_ident(&self) -> Ident {
        let snake = self.name.to_snake_case();
        format_ident!("subscribe_{}_consumer", snake, span = self.ident.span())
    }

    /// The crate path as text, for intra-doc links (`::backbone_core`).
    pub(crate) fn krate_link(&self) -> String {
        compact(&self.krate)
    }
}

/// The tokens `a b`, to span an error from `a` to `b` (a keyword and a name).
fn head(a: &impl ToTokens, b: &impl ToTokens) -> TokenStream {
    quote!(#a #b)
}

/// Records the error for an item that is not a trait, spanned on its keyword and name.
fn not_a_trait(item: &Item, errors: &mut Errors) {
    let (kind, head) = match item {
        Item::Struct(i) => ("a struct", head(&i.struct_token, &i.ident)),
        Item::Enum(i) => ("an enum", head(&i.enum_token, &i.ident)),
        Item::Union(i) => ("a union", head(&i.union_token, &i.ident)),
        Item::Fn(i) => ("a function", head(&i.sig.fn_token, &i.sig.ident)),
        Item::Impl(i) => ("an impl block", head(&i.impl_token, &i.self_ty)),
        Item::Mod(i) => ("a module", head(&i.mod_token, &i.ident)),
        Item::Type(i) => ("a type alias", head(&i.type_token, &i.ident)),
        Item::Const(i) => ("a const", head(&i.const_token, &i.ident)),
        Item::Static(i) => ("a static", head(&i.static_token, &i.ident)),
        Item::TraitAlias(i) => ("a trait alias", head(&i.trait_token, &i.ident)),
        other => ("another kind of item", quote!(#other)),
    };
    errors.spanned(
        head,
        format_args!("#[events_contract] applies to a trait; found {kind}"),
    );
}

/// Checks the trait itself and reads its methods.
fn read_trait(args: ContractArgs, item: ItemTrait, errors: &mut Errors) -> Contract {
    if let Some(unsafety) = &item.unsafety {
        errors.spanned(unsafety, "a contract trait cannot be `unsafe`");
    }
    if let Some(auto) = &item.auto_token {
        errors.spanned(auto, "a contract trait cannot be an `auto` trait");
    }
    if !item.generics.params.is_empty() {
        errors.spanned(
            &item.generics,
            "a contract trait cannot be generic: every parameter type must be concrete so \
             consumers can decode events",
        );
    }
    if let Some(where_clause) = &item.generics.where_clause {
        errors.spanned(where_clause, "a contract trait cannot have a where clause");
    }
    if let Some(colon) = &item.colon_token {
        let supertraits = &item.supertraits;
        errors.spanned(
            quote!(#colon #supertraits),
            "a contract trait cannot have supertraits",
        );
    }
    let (docs, lints) = split_attrs(&item.attrs, "a contract trait", false, errors);

    let mut operations = Vec::new();
    for trait_item in &item.items {
        match trait_item {
            TraitItem::Fn(method) => {
                operations.push(method::read_method(method, args.storage.as_ref(), errors))
            }
            TraitItem::Const(c) => not_a_method(
                head(&c.const_token, &c.ident),
                "an associated const",
                errors,
            ),
            TraitItem::Type(t) => {
                not_a_method(head(&t.type_token, &t.ident), "an associated type", errors)
            }
            TraitItem::Macro(m) => not_a_method(&m.mac, "a macro invocation", errors),
            other => not_a_method(other, "an unsupported item", errors),
        }
    }
    check_unique(&operations, errors);

    Contract {
        schema: args.schema,
        krate: args
            .krate
            .unwrap_or_else(|| syn::parse_quote!(::backbone_core)),
        vis: item.vis,
        name: item.ident.unraw().to_string(),
        ident: item.ident,
        docs,
        lints,
        operations,
    }
}

/// Records the error for a trait item that is not a method.
fn not_a_method(tokens: impl ToTokens, kind: &str, errors: &mut Errors) {
    errors.spanned(
        tokens,
        format_args!(
            "a contract trait contains only `async fn` methods, one per event; found {kind}"
        ),
    );
}

/// Splits attributes into doc attributes and lint attributes; anything else is an error.
/// `#[event]` attributes are skipped when `event_allowed` (the caller reads them).
fn split_attrs(
    attrs: &[Attribute],
    on: &str,
    event_allowed: bool,
    errors: &mut Errors,
) -> (Vec<Attribute>, Vec<Attribute>) {
    let mut docs = Vec::new();
    let mut lints = Vec::new();
    for attr in attrs {
        let path = attr.path();
        if path.is_ident("doc") {
            docs.push(attr.clone());
        } else if LINT_ATTRIBUTES.iter().any(|lint| path.is_ident(lint)) {
            lints.push(attr.clone());
        } else if EventArgs::is_event_attr(attr) {
            if !event_allowed {
                errors.spanned(
                    attr,
                    format_args!("`#[event]` belongs on a method, not on {on}"),
                );
            }
        } else {
            errors.spanned(
                attr,
                format_args!(
                    "unsupported attribute `#[{}]` on {on}: only doc comments and lint \
                     attributes (`allow`, `warn`, `deny`, `forbid`, `expect`) are carried to \
                     the generated items",
                    compact(path)
                ),
            );
        }
    }
    (docs, lints)
}

/// Rejects two methods with the same event variant, or the same operation name and version.
fn check_unique(operations: &[Operation], errors: &mut Errors) {
    let mut variants: HashMap<String, &Operation> = HashMap::new();
    let mut names: HashMap<(&str, u32), &Operation> = HashMap::new();
    for op in operations {
        if let Some(first) = variants.insert(op.variant.to_string(), op) {
            errors.spanned(
                &op.method,
                format_args!(
                    "methods `{}` and `{}` both become the event variant `{}`; rename one",
                    first.method.unraw(),
                    op.method.unraw(),
                    op.variant
                ),
            );
            variants.insert(op.variant.to_string(), first);
        }
        if let Some(first) = names.insert((op.name.as_str(), op.version), op) {
            errors.at(
                op.name_span,
                format_args!(
                    "duplicate operation `{}` version {}: method `{}` already declares it; \
                     give this one another `#[event(name = \"...\")]` or `#[event(version = \
                     N)]`",
                    op.name,
                    op.version,
                    first.method.unraw()
                ),
            );
            names.insert((first.name.as_str(), first.version), first);
        }
    }
}
