//! What travels with an event besides its operation and parameters: user [`Headers`], the
//! correlation and causation ids, and the W3C [`TraceContext`] of the span that sent it.
//!
//! A producer fills an [`Envelope`] for every send: its own headers and correlation id (see
//! [`Producer::with_header`](crate::Producer::with_header) and
//! [`Producer::with_correlation_id`](crate::Producer::with_correlation_id)), and, when it sends
//! from inside a handler, the handled event's correlation id and its message id as the
//! causation id (see [`cause`](crate::cause)). Channels store it in the entry (the fields are
//! specified in `docs/wire-format.md`) and hand it back in [`Metadata`](crate::Metadata).

use std::collections::BTreeMap;
use std::fmt;

use crate::Error;

/// The longest header name, in bytes.
pub const MAX_HEADER_NAME: usize = 128;

/// User headers: a small map of names to strings, set per producer and sent with each event.
///
/// Names are 1 to [`MAX_HEADER_NAME`] bytes of ASCII letters, digits, `-`, `_` and `.`
/// (they become entry field names, `header.<name>`); values are any UTF-8 text.
///
/// ```
/// use backbone_core::envelope::Headers;
///
/// let mut headers = Headers::new();
/// headers.insert("tenant", "acme").unwrap();
/// assert_eq!(headers.get("tenant"), Some("acme"));
/// let err = headers.insert("bad name", "x").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid configuration: header name \"bad name\": byte 3 is ' '; a header name holds \
///      only ASCII letters, digits, '-', '_' and '.'"
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, replacing an earlier value; refuses a name that could not be an
    /// entry field.
    pub fn insert(
        &mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), Error> {
        let name = name.into();
        check_header_name(&name)?;
        self.0.insert(name, value.into());
        Ok(())
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Every header, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds a header read back from a channel, unchecked (a foreign producer's name is kept
    /// as it came).
    pub fn insert_unchecked(&mut self, name: String, value: String) {
        self.0.insert(name, value);
    }
}

/// Checks a header name (see [`Headers`]).
pub fn check_header_name(name: &str) -> Result<(), Error> {
    let bad = |why: String| Err(Error::Config(format!("header name {name:?}: {why}")));
    if name.is_empty() {
        return bad("is empty".into());
    }
    if name.len() > MAX_HEADER_NAME {
        return bad(format!(
            "is {} bytes long, more than {MAX_HEADER_NAME}",
            name.len()
        ));
    }
    if let Some((at, b)) = name
        .bytes()
        .enumerate()
        .find(|(_, b)| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    {
        return bad(format!(
            "byte {at} is {:?}; a header name holds only ASCII letters, digits, '-', '_' and '.'",
            b as char
        ));
    }
    Ok(())
}

/// The W3C Trace Context of the span that sent an event: `traceparent`
/// (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`) and the optional `tracestate`.
/// Written only with the `otel` feature (see [`observe`](crate::observe)); read always.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The `traceparent` header's value.
    pub traceparent: String,
    /// The `tracestate` header's value, if any.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The trace id: the 32 hex digits of a well-formed `traceparent`.
    ///
    /// ```
    /// use backbone_core::envelope::TraceContext;
    ///
    /// let t = TraceContext {
    ///     traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    ///     tracestate: None,
    /// };
    /// assert_eq!(t.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    /// ```
    pub fn trace_id(&self) -> Option<&str> {
        let mut parts = self.traceparent.split('-');
        let (_, trace) = (parts.next()?, parts.next()?);
        (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit())).then_some(trace)
    }
}

/// Everything an event carries besides operation and parameters, as a producer sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The workflow this event belongs to. `None` means the event starts one: its own message
    /// id is its correlation id (and no `correlation_id` field is written).
    pub correlation_id: Option<String>,
    /// The message id of the event whose handling sent this one.
    pub causation_id: Option<String>,
    /// User headers.
    pub headers: Headers,
    /// The sending span's trace context (`otel` feature).
    pub trace: Option<TraceContext>,
    /// The data subject, if the event names one (a `#[subject]` parameter or
    /// [`Producer::with_subject`](crate::Producer::with_subject)); stored in the clear.
    pub subject: Option<String>,
    /// The parameters sealed with the subject's key (see [`personal`](crate::personal)); the
    /// channel records their names so that readers open them.
    pub personal: Vec<&'static str>,
    /// The parameters whose values are in an object store, their fields holding references
    /// (see [`objects`](crate::objects)); the channel records their names.
    pub objects: Vec<String>,
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent)
    }
}
