//! Stream entries: the field names backbone writes with `XADD`, and the parsing of
//! `XREADGROUP` replies into raw entries. Parsing never panics; whatever is wrong with an
//! entry becomes an [`Error::MalformedEntry`] naming the field.

use std::borrow::Cow;
use std::fmt;

use backbone_core::envelope::{Envelope, Headers, TraceContext};
use backbone_core::objects::{parse_names, OBJECTS_FIELD_SEPARATOR};
use backbone_core::personal::{Sealed, PERSONAL_FIELD_SEPARATOR};
use backbone_core::{Error, Fields, MessageId, Metadata, StreamAddress};
use redis::Value;

/// Entry field: the event's [`MessageId`].
pub const MESSAGE_ID: &str = "message_id";
/// Entry field: the operation's name.
pub const OPERATION: &str = "operation";
/// Entry field: the operation's version.
pub const VERSION: &str = "version";
/// Entry field: when it was produced, ms since the epoch.
pub const PRODUCED_AT: &str = "produced_at";
/// Entry field: the key of the payload hash (absent for operations without parameters).
pub const PAYLOAD: &str = "payload";
/// Entry field: the ordering key (absent when the producer has none).
pub const KEY: &str = "key";
/// Entry field: the aggregate an event-store event belongs to.
pub const AGGREGATE: &str = "aggregate";
/// Entry field: the event's version within its aggregate.
pub const AGGREGATE_VERSION: &str = "aggregate_version";
/// Entry field (aggregate streams only): the event's position in the contract's stream.
pub const POSITION: &str = "position";
/// Entry field: the workflow's correlation id (absent when it is the event's own message id).
pub const CORRELATION_ID: &str = "correlation_id";
/// Entry field: the message id of the event whose handler sent this one (absent otherwise).
pub const CAUSATION_ID: &str = "causation_id";
/// Entry field: the W3C `traceparent` of the sending span (`otel` feature; absent otherwise).
pub const TRACEPARENT: &str = "traceparent";
/// Entry field: the W3C `tracestate` of the sending span (absent when empty).
pub const TRACESTATE: &str = "tracestate";
/// Prefix of the entry fields holding user headers: `header.<name>`.
pub const HEADER_PREFIX: &str = "header.";
/// Prefix of the entry fields holding an inline event's parameters: `param.<name>`, the
/// parameter's JSON (see [`Storage::Inline`](backbone_core::storage::Storage::Inline)).
///
/// ```
/// assert_eq!(backbone_redis::entry::PARAM_PREFIX, "param.");
/// ```
pub const PARAM_PREFIX: &str = "param.";

/// Entry field: the data subject of the event's personal parameters (absent when none).
pub const SUBJECT: &str = "subject";
/// Entry field: the parameters sealed with the subject's key, comma-separated (absent when
/// none).
pub const PERSONAL: &str = "personal";
/// Entry field: the parameters whose fields hold references to objects in an object store
/// (comma-separated; see [`backbone_core::objects`]).
pub const OBJECTS: &str = "objects";
/// Entry field: `1` on an entry written by replaying a dead letter (absent otherwise). Such an
/// entry's reference to its payload is one the stream's holds count (see
/// [`StreamKeys::holds`](crate::keys::StreamKeys::holds)).
pub const REPLAYED: &str = "replayed";

/// The entry fields an event's ordering key and envelope become, in the order they are
/// written (see the constants above).
pub(crate) fn envelope_fields<'a>(
    message_id: &MessageId,
    key: Option<&'a str>,
    envelope: &'a Envelope,
) -> Vec<(Cow<'static, str>, Cow<'a, str>)> {
    let mut out = Vec::new();
    let mut put =
        |name: &'static str, value: &'a str| out.push((Cow::Borrowed(name), Cow::Borrowed(value)));
    if let Some(key) = key {
        put(KEY, key);
    }
    if let Some(id) = envelope.correlation_id.as_deref() {
        // An event that starts its workflow is its own correlation id: nothing to write.
        if id != message_id.to_string() {
            put(CORRELATION_ID, id);
        }
    }
    if let Some(id) = envelope.causation_id.as_deref() {
        put(CAUSATION_ID, id);
    }
    if let Some(trace) = &envelope.trace {
        put(TRACEPARENT, trace.traceparent.as_str());
        if let Some(state) = trace.tracestate.as_deref() {
            put(TRACESTATE, state);
        }
    }
    if let Some(subject) = envelope.subject.as_deref() {
        put(SUBJECT, subject);
    }
    for (name, value) in envelope.headers.iter() {
        out.push((
            Cow::Owned(format!("{HEADER_PREFIX}{name}")),
            Cow::Borrowed(value),
        ));
    }
    if !envelope.personal.is_empty() {
        let names = envelope
            .personal
            .join(&PERSONAL_FIELD_SEPARATOR.to_string());
        out.push((Cow::Borrowed(PERSONAL), Cow::Owned(names)));
    }
    if !envelope.objects.is_empty() {
        let names = envelope.objects.join(&OBJECTS_FIELD_SEPARATOR.to_string());
        out.push((Cow::Borrowed(OBJECTS), Cow::Owned(names)));
    }
    out
}

/// One entry as read: its stream id and its fields (`None` when the entry was deleted or
/// trimmed while pending).
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    pub id: String,
    pub fields: Option<Vec<(String, Vec<u8>)>>,
}

/// The metadata fields of a well-formed entry.
#[derive(Debug, Clone)]
pub(crate) struct EntryHeader {
    pub message_id: MessageId,
    pub operation: String,
    pub version: u32,
    pub produced_at: u64,
    pub payload: Option<String>,
    /// The entry holds its parameters in `param.<name>` fields ([`RawEntry::params`]).
    pub inline: bool,
    pub key: Option<String>,
    pub aggregate: Option<String>,
    pub aggregate_version: Option<u64>,
    pub position: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub headers: Headers,
    pub trace: Option<TraceContext>,
    pub subject: Option<String>,
    /// The sealed parameters (entry field `personal`).
    pub personal: Vec<String>,
    /// The parameters in an object store (entry field `objects`).
    pub objects: Vec<String>,
}

impl EntryHeader {
    /// The entry's sealed parameters in `fields`, to open, when it has any (a `subject` and a
    /// non-empty `personal` field).
    pub fn sealed<'a>(&'a self, fields: &'a mut Fields) -> Option<Sealed<'a>> {
        let subject = self.subject.as_deref()?;
        (!self.personal.is_empty()).then_some(Sealed {
            subject,
            message_id: &self.message_id,
            personal: &self.personal,
            fields,
        })
    }

    /// The metadata a handler or a reader sees for this entry. `stream_id` is the entry's
    /// position in the contract's stream.
    pub fn metadata(
        &self,
        address: &StreamAddress,
        stream_id: String,
        delivery_count: u32,
    ) -> Metadata {
        let mut m = Metadata::new(
            self.message_id,
            self.operation.clone(),
            self.version,
            address.uri(),
        );
        m.environment = address.environment().map(str::to_owned);
        m.produced_at = self.produced_at;
        m.stream_id = stream_id;
        m.delivery_count = delivery_count;
        m.key = self.key.clone();
        if let Some(id) = &self.correlation_id {
            m.correlation_id = id.clone();
        }
        m.causation_id = self.causation_id.clone();
        m.headers = self.headers.clone();
        m.trace = self.trace.clone();
        m.subject = self.subject.clone();
        m
    }
}

impl RawEntry {
    /// Checks and extracts the metadata fields.
    pub fn header(&self) -> Result<EntryHeader, Error> {
        let fields = self
            .fields
            .as_ref()
            .ok_or_else(|| Error::malformed(&self.id, "the entry was deleted or trimmed"))?;
        let get = |name: &str| -> Result<&str, Error> {
            let value = fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v)
                .ok_or_else(|| Error::malformed(&self.id, format!("field `{name}` is missing")))?;
            std::str::from_utf8(value).map_err(|_| {
                Error::malformed(&self.id, format!("field `{name}` is not valid UTF-8"))
            })
        };
        let parse_err = |name: &str, value: &str, e: &dyn std::fmt::Display| {
            Error::malformed(&self.id, format!("field `{name}` = {value:?}: {e}"))
        };
        let message_id = get(MESSAGE_ID)?;
        let message_id = message_id
            .parse()
            .map_err(|e| parse_err(MESSAGE_ID, message_id, &e))?;
        let operation = get(OPERATION)?;
        if operation.is_empty() {
            return Err(Error::malformed(&self.id, "field `operation` is empty"));
        }
        let version = get(VERSION)?;
        let version = version
            .parse()
            .map_err(|e| parse_err(VERSION, version, &e))?;
        let produced_at = get(PRODUCED_AT)?;
        let produced_at = produced_at
            .parse()
            .map_err(|e| parse_err(PRODUCED_AT, produced_at, &e))?;
        let optional = |name: &str| -> Result<Option<String>, Error> {
            match fields.iter().any(|(n, _)| n == name) {
                true => Ok(Some(get(name)?.to_owned())),
                false => Ok(None),
            }
        };
        let payload = optional(PAYLOAD)?;
        let param = fields.iter().find(|(n, _)| n.starts_with(PARAM_PREFIX));
        if let (Some(_), Some((name, _))) = (&payload, param) {
            return Err(Error::malformed(
                &self.id,
                format!(
                    "field `{name}` beside field `{PAYLOAD}`: an entry holds its parameters \
                     in a payload hash or in `{PARAM_PREFIX}*` fields, not both"
                ),
            ));
        }
        let inline = param.is_some();
        let key = optional(KEY)?;
        let aggregate = optional(AGGREGATE)?;
        let position = optional(POSITION)?;
        let aggregate_version = match optional(AGGREGATE_VERSION)? {
            Some(v) => Some(
                v.parse()
                    .map_err(|e| parse_err(AGGREGATE_VERSION, &v, &e))?,
            ),
            None => None,
        };
        let correlation_id = optional(CORRELATION_ID)?;
        let causation_id = optional(CAUSATION_ID)?;
        let trace = match optional(TRACEPARENT)? {
            Some(traceparent) => Some(TraceContext {
                traceparent,
                tracestate: optional(TRACESTATE)?,
            }),
            None => None,
        };
        let mut headers = Headers::new();
        for (name, value) in fields {
            if let Some(header) = name.strip_prefix(HEADER_PREFIX) {
                let value = std::str::from_utf8(value).map_err(|_| {
                    Error::malformed(&self.id, format!("field `{name}` is not valid UTF-8"))
                })?;
                headers.insert_unchecked(header.to_owned(), value.to_owned());
            }
        }
        let subject = optional(SUBJECT)?;
        let personal: Vec<String> = match optional(PERSONAL)? {
            Some(names) => names
                .split(PERSONAL_FIELD_SEPARATOR)
                .map(str::to_owned)
                .collect(),
            None => Vec::new(),
        };
        if personal.iter().any(String::is_empty) {
            return Err(Error::malformed(
                &self.id,
                "field `personal` holds an empty parameter name",
            ));
        }
        if !personal.is_empty() && subject.is_none() {
            return Err(Error::malformed(
                &self.id,
                "field `personal` names sealed parameters but field `subject` is missing",
            ));
        }
        let objects = match optional(OBJECTS)? {
            Some(names) => parse_names(&names)
                .map_err(|e| Error::malformed(&self.id, format!("field `{OBJECTS}`: {e}")))?,
            None => Vec::new(),
        };
        if !objects.is_empty() && !inline {
            return Err(Error::malformed(
                &self.id,
                format!("field `{OBJECTS}` names parameters, but the entry has none inline"),
            ));
        }
        Ok(EntryHeader {
            subject,
            personal,
            objects,
            correlation_id,
            causation_id,
            headers,
            trace,
            message_id,
            operation: operation.to_owned(),
            version,
            produced_at,
            payload,
            inline,
            key,
            aggregate,
            aggregate_version,
            position,
        })
    }
}

impl RawEntry {
    /// An inline entry's parameters: its `param.<name>` fields, as `<name>` → value (none
    /// when the entry has none, or was deleted).
    pub fn params(&self) -> Fields {
        self.fields
            .iter()
            .flatten()
            .filter_map(|(name, value)| {
                let name = name.strip_prefix(PARAM_PREFIX)?;
                Some((name.to_owned(), value.clone()))
            })
            .collect()
    }
}

/// Parses an `XREADGROUP` reply for one stream (RESP2 or RESP3). `Nil` (a BLOCK that timed
/// out) is an empty batch.
pub(crate) fn parse_read_reply(reply: Value) -> Result<Vec<RawEntry>, String> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => Ok(pair.pop().unwrap_or_default()),
                other => Err(format!("unexpected stream element {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(streams) => streams.into_iter().map(|(_, v)| v).collect(),
        other => return Err(format!("unexpected XREADGROUP reply {other:?}")),
    };
    let mut entries = Vec::new();
    for stream in streams {
        let Value::Array(items) = stream else {
            return Err(format!("unexpected entry list {stream:?}"));
        };
        for item in items {
            entries.push(parse_entry(item)?);
        }
    }
    Ok(entries)
}

/// Parses an `XRANGE`/`XREVRANGE` reply into entries.
pub(crate) fn parse_range_reply(reply: Value) -> Result<Vec<RawEntry>, String> {
    match reply {
        Value::Array(items) => items.into_iter().map(parse_entry).collect(),
        Value::Nil => Ok(Vec::new()),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

pub(crate) fn parse_entry(item: Value) -> Result<RawEntry, String> {
    let Value::Array(mut parts) = item else {
        return Err(format!("unexpected entry {item:?}"));
    };
    if parts.len() != 2 {
        return Err(format!("entry with {} parts", parts.len()));
    }
    let fields = parts.pop().unwrap_or_default();
    let id = bytes_to_string(parts.pop().unwrap_or_default())
        .ok_or_else(|| "entry id is not a string".to_owned())?;
    let fields = match fields {
        Value::Nil => None,
        other => Some(
            field_pairs(other)
                .map_err(|other| format!("entry {id}: unexpected fields {other:?}"))?,
        ),
    };
    Ok(RawEntry { id, fields })
}

/// The name/value pairs of a flat RESP2 array or a RESP3 map: an entry's fields, or an
/// `HGETALL` reply. Any other value comes back as the error.
pub(crate) fn field_pairs(v: Value) -> Result<Vec<(String, Vec<u8>)>, Value> {
    match v {
        Value::Array(values) => {
            let mut out = Vec::with_capacity(values.len() / 2);
            let mut values = values.into_iter();
            while let (Some(name), Some(value)) = (values.next(), values.next()) {
                out.push((field_name(name), value_bytes(value)));
            }
            Ok(out)
        }
        Value::Map(pairs) => Ok(pairs
            .into_iter()
            .map(|(name, value)| (field_name(name), value_bytes(value)))
            .collect()),
        other => Err(other),
    }
}

pub(crate) fn bytes_to_string(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

/// A field name; one that is not UTF-8 is kept with its bad bytes replaced, so that one odd
/// entry never fails the batch it came in (if it hides a field backbone needs, the entry is
/// dead-lettered for lacking it).
fn field_name(v: Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8(b)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        other => bytes_to_string(other).unwrap_or_default(),
    }
}

fn value_bytes(v: Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b,
        Value::SimpleString(s) => s.into_bytes(),
        Value::VerbatimString { text, .. } => text.into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        _ => Vec::new(),
    }
}

/// A stream entry id, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct StreamId(pub(crate) u64, pub(crate) u64);

impl StreamId {
    /// `<ms>-<seq>`, or `<ms>` (meaning `<ms>-0`) when `ms_alone`.
    pub(crate) fn parse(text: &str, ms_alone: bool) -> Option<StreamId> {
        match text.split_once('-') {
            Some((ms, seq)) => Some(StreamId(digits(ms)?, digits(seq)?)),
            None if ms_alone => Some(StreamId(digits(text)?, 0)),
            None => None,
        }
    }

    /// The smallest id after this one.
    pub(crate) fn next(self) -> StreamId {
        match self.1.checked_add(1) {
            Some(seq) => StreamId(self.0, seq),
            None => StreamId(self.0.saturating_add(1), 0),
        }
    }
}

fn digits(text: &str) -> Option<u64> {
    let ok = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| text.parse().ok()).flatten()
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_a_reply_with_a_deleted_entry() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("operation"), bulk("x")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let entries = parse_read_reply(reply).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, "1-0");
        assert!(entries[1].fields.is_none());
        let err = entries[1].header().unwrap_err().to_string();
        assert_eq!(err, "malformed entry 2-0: the entry was deleted or trimmed");
        let err = entries[0].header().unwrap_err().to_string();
        assert_eq!(err, "malformed entry 1-0: field `message_id` is missing");
    }

    #[test]
    fn names_the_bad_field() {
        let entry = RawEntry {
            id: "5-0".into(),
            fields: Some(vec![
                (
                    "message_id".into(),
                    b"0190b3a0-0000-7000-8000-000000000000".to_vec(),
                ),
                ("operation".into(), b"x".to_vec()),
                ("version".into(), b"-1".to_vec()),
                ("produced_at".into(), b"1".to_vec()),
            ]),
        };
        let err = entry.header().unwrap_err().to_string();
        assert!(
            err.starts_with("malformed entry 5-0: field `version` = \"-1\": "),
            "{err}"
        );
    }

    #[test]
    fn stream_ids_order_numerically() {
        let id = |text| StreamId::parse(text, false);
        assert!(id("10-0") > id("9-5"));
        assert!(id("9-10") > id("9-9"));
        assert_eq!(id("0-0"), Some(StreamId(0, 0)));
        assert_eq!(id("x"), None);
        assert!(
            Some(StreamId(1, 0)) > None,
            "any position is past `nothing yet`"
        );
        assert_eq!(StreamId::parse("7", true), Some(StreamId(7, 0)));
        assert_eq!(StreamId(3, u64::MAX).next(), StreamId(4, 0));
    }

    #[test]
    fn nil_is_an_empty_batch() {
        assert!(parse_read_reply(Value::Nil).unwrap().is_empty());
        assert!(parse_read_reply(Value::Int(3)).is_err());
    }
}
