//! [`Error`]: what a producer, a consumer or a channel reports when something fails.

use std::fmt;

/// A boxed error that can cross threads; the currency of [`Error::Channel`] and of
/// [`HandlerError`](crate::HandlerError).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in backbone, each variant saying what failed and where.
///
/// ```
/// use backbone_core::Error;
///
/// let err = Error::decode("order_placed", "time", "invalid type: string \"x\", expected u64");
/// assert_eq!(
///     err.to_string(),
///     "cannot decode parameter `time` of operation `order_placed`: invalid type: string \"x\", expected u64"
/// );
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A builder option or a name was rejected before anything was sent.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A parameter could not be turned into JSON.
    #[error("cannot encode parameter `{parameter}` of operation `{operation}`: {source}")]
    Encode {
        /// The operation (method name) being sent.
        operation: String,
        /// The parameter that failed.
        parameter: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },

    /// A parameter of a received event could not be decoded.
    #[error("cannot decode parameter `{parameter}` of operation `{operation}`: {reason}")]
    Decode {
        /// The operation (method name) received.
        operation: String,
        /// The parameter that failed.
        parameter: String,
        /// What was wrong with it.
        reason: String,
    },

    /// A received entry is not a well-formed backbone event (missing or malformed metadata).
    #[error("malformed entry {entry}: {reason}")]
    MalformedEntry {
        /// The channel's id of the entry (the stream id on Redis).
        entry: String,
        /// Which field was wrong and how.
        reason: String,
    },

    /// The entry names a payload that is no longer there (expired or trimmed).
    #[error("entry {entry}: payload `{key}` is missing (expired or trimmed?)")]
    MissingPayload {
        /// The channel's id of the entry.
        entry: String,
        /// The key that was expected to hold the parameters.
        key: String,
    },

    /// The consumer's contract has no such operation, or not in that version.
    #[error("contract `{contract}` has no operation `{operation}` version {version}")]
    UnknownOperation {
        /// The contract the consumer implements.
        contract: String,
        /// The operation named by the event.
        operation: String,
        /// The version named by the event.
        version: u32,
    },

    /// The channel (Redis, the in-memory broker) failed; `context` says what we were doing.
    #[error("{context}: {source}")]
    Channel {
        /// What backbone was doing, e.g. "XADD to bb:{prod:orders}:events".
        context: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// An append found the aggregate at another version than expected; nothing was written.
    #[error(
        "append to aggregate `{aggregate}`: expected {expected}, but it is at version {actual}"
    )]
    WrongExpectedVersion {
        /// The aggregate appended to.
        aggregate: String,
        /// What the append expected, e.g. "version 3" or "no stream".
        expected: String,
        /// The aggregate's version when the append was refused.
        actual: u64,
    },

    /// An append gave an idempotency key that an earlier append used for another aggregate,
    /// or for the same aggregate with other events: it is not a retry of that append, and
    /// nothing was written. (A retry, same key, same aggregate, same events, is a replay.)
    ///
    /// ```
    /// use backbone_core::error::{Error, KeyReuse};
    ///
    /// let err = Error::IdempotencyKeyReused {
    ///     key: "capture-1".into(),
    ///     aggregate: "pay-2".into(),
    ///     original_aggregate: "pay-1".into(),
    ///     reuse: KeyReuse::OtherAggregate,
    /// };
    /// assert_eq!(
    ///     err.to_string(),
    ///     "append to aggregate `pay-2`: idempotency key `capture-1` was already used by an \
    ///      append to aggregate `pay-1`; nothing was written"
    /// );
    /// ```
    #[error(
        "append to aggregate `{aggregate}`: idempotency key `{key}` was already used by an \
         append to aggregate `{original_aggregate}`{reuse}; nothing was written"
    )]
    IdempotencyKeyReused {
        /// The idempotency key.
        key: String,
        /// The aggregate this append was for.
        aggregate: String,
        /// The aggregate of the append that used the key first.
        original_aggregate: String,
        /// What differs from that append.
        reuse: KeyReuse,
    },

    /// An event read from the event store is bad (its entry is malformed, its payload is
    /// missing, a parameter does not decode, or the contract lacks its operation): `source`
    /// says what is wrong, the other fields say which event it is. A bad event
    /// ([`Error::is_bad_event`]), like its source.
    ///
    /// ```
    /// use backbone_core::Error;
    ///
    /// let err = Error::BadStoredEvent {
    ///     aggregate: Some("acc-1".into()),
    ///     version: Some(3),
    ///     position: Some("1700000000000-0".into()),
    ///     source: Box::new(Error::decode("deposited", "cents", "invalid type: string \"x\", expected i64")),
    /// };
    /// assert_eq!(
    ///     err.to_string(),
    ///     "stored event (aggregate `acc-1`, version 3, position 1700000000000-0): cannot decode \
    ///      parameter `cents` of operation `deposited`: invalid type: string \"x\", expected i64"
    /// );
    /// assert!(err.is_bad_event());
    /// ```
    #[error(
        "stored event ({}, {}, {}): {source}",
        stored_aggregate(aggregate),
        stored_version(version),
        stored_position(position)
    )]
    BadStoredEvent {
        /// The aggregate it belongs to; `None` for an event sent by a plain producer, or when
        /// its entry does not say.
        aggregate: Option<String>,
        /// Its version within the aggregate, when known.
        version: Option<u64>,
        /// Its position (stream id) in the contract's stream, when known.
        position: Option<String>,
        /// What is wrong with it (a bad-event error).
        #[source]
        source: Box<Error>,
    },

    /// Something that runs in the background (a consumer, a projection) has stopped, or its
    /// task ended abnormally. The text starts by saying what stopped, e.g. "consumer stopped:
    /// …" or "projection `total-v1` stopped: …".
    ///
    /// ```
    /// use backbone_core::Error;
    ///
    /// let err = Error::Stopped("projection `total-v1` stopped: its task ended".into());
    /// assert_eq!(err.to_string(), "projection `total-v1` stopped: its task ended");
    /// ```
    #[error("{0}")]
    Stopped(String),

    /// An upcaster (`#[event(upcast = f)]`) refused an old event: the event is bad.
    ///
    /// ```
    /// use backbone_core::Error;
    ///
    /// let err = Error::Upcast {
    ///     contract: "Shipments".into(),
    ///     operation: "packing".into(),
    ///     version: 0,
    ///     upcaster: "packing_v0_to_v1".into(),
    ///     reason: "no e-mail".into(),
    /// };
    /// assert_eq!(
    ///     err.to_string(),
    ///     "upcaster `packing_v0_to_v1` of Shipments::packing v0 failed: no e-mail"
    /// );
    /// assert!(err.is_bad_event());
    /// ```
    #[error("upcaster `{upcaster}` of {contract}::{operation} v{version} failed: {reason}")]
    Upcast {
        /// The contract.
        contract: String,
        /// The old operation's name.
        operation: String,
        /// The old operation's version.
        version: u32,
        /// The upcaster, as the contract names it.
        upcaster: String,
        /// What it said.
        reason: String,
    },

    /// A dead letter (an entry of a group's dead-letter stream) lacks one of its `dead.*`
    /// fields, or holds a malformed one.
    ///
    /// ```
    /// use backbone_core::Error;
    ///
    /// let err = Error::MalformedDeadLetter {
    ///     key: "bb:{orders}:dead:billing".into(),
    ///     id: "1700000000001-0".into(),
    ///     reason: "field `dead.reason` is missing".into(),
    /// };
    /// assert_eq!(
    ///     err.to_string(),
    ///     "malformed dead letter 1700000000001-0 in bb:{orders}:dead:billing: field `dead.reason` is missing"
    /// );
    /// ```
    #[error("malformed dead letter {id} in {key}: {reason}")]
    MalformedDeadLetter {
        /// The dead-letter stream.
        key: String,
        /// The dead letter's id in that stream.
        id: String,
        /// Which field was wrong and how.
        reason: String,
    },

    /// An operation with personal parameters was sent without a data subject: mark a
    /// parameter `#[subject]` or send through `with_subject(id)`.
    ///
    /// ```
    /// use backbone_core::Error;
    ///
    /// let err = Error::NoSubject { operation: "registered".into() };
    /// assert!(err.to_string().starts_with("operation `registered` has personal parameters"));
    /// ```
    #[error(
        "operation `{operation}` has personal parameters but no data subject: mark a \
         parameter #[subject] or send through `with_subject(id)`"
    )]
    NoSubject {
        /// The operation being sent.
        operation: String,
    },

    /// A personal parameter of a received event is not a ciphertext backbone can open (not
    /// the format, or altered: authentication failed). The event is bad. A parameter whose
    /// subject was forgotten is no error: it reads as
    /// [`Personal::Forgotten`](crate::personal::Personal::Forgotten).
    ///
    /// ```
    /// use backbone_core::Error;
    ///
    /// let err = Error::Unsealable { parameter: "email".into(), reason: "authentication failed".into() };
    /// assert_eq!(err.to_string(), "personal parameter `email` cannot be decrypted: authentication failed");
    /// assert!(err.is_bad_event());
    /// ```
    #[error("personal parameter `{parameter}` cannot be decrypted: {reason}")]
    Unsealable {
        /// The parameter.
        parameter: String,
        /// What was wrong.
        reason: String,
    },
    /// A parameter of a received event that lives in an object store
    /// ([`Storage::Object`](crate::storage::Storage::Object)) cannot be had: its object is
    /// missing (deleted by retention), is not the one the entry refers to (size or SHA-256
    /// differ), or its reference is malformed. The event is bad. The object store failing
    /// is [`Error::Channel`] instead.
    ///
    /// ```
    /// use backbone_core::Error;
    ///
    /// let err = Error::BadObject { parameter: "scan".into(), reason: "the object is missing".into() };
    /// assert_eq!(err.to_string(), "parameter `scan` in the object store: the object is missing");
    /// assert!(err.is_bad_event());
    /// ```
    #[error("parameter `{parameter}` in the object store: {reason}")]
    BadObject {
        /// The parameter.
        parameter: String,
        /// What was wrong (never the parameter's value).
        reason: String,
    },
}

/// What differs between an append and the earlier append whose idempotency key it reuses
/// (see [`Error::IdempotencyKeyReused`]).
///
/// ```
/// use backbone_core::error::KeyReuse;
///
/// assert_eq!(KeyReuse::OtherEvents.to_string(), " with other events");
/// assert_eq!(KeyReuse::OtherAggregate.to_string(), "");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyReuse {
    /// The earlier append was to another aggregate.
    OtherAggregate,
    /// The earlier append was to the same aggregate, with other events (other operations,
    /// versions or parameters).
    OtherEvents,
}

impl fmt::Display for KeyReuse {
    /// What follows the original aggregate in [`Error::IdempotencyKeyReused`]'s text: nothing
    /// (the aggregates differ, and the text names both), or " with other events".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyReuse::OtherAggregate => Ok(()),
            KeyReuse::OtherEvents => f.write_str(" with other events"),
        }
    }
}

impl Error {
    /// A [`Error::Decode`] for `parameter` of `operation`.
    pub fn decode(operation: &str, parameter: &str, reason: impl fmt::Display) -> Self {
        Error::Decode {
            operation: operation.to_owned(),
            parameter: parameter.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// A [`Error::MalformedEntry`] for the entry with channel id `entry`.
    pub fn malformed(entry: impl Into<String>, reason: impl fmt::Display) -> Self {
        Error::MalformedEntry {
            entry: entry.into(),
            reason: reason.to_string(),
        }
    }

    /// A [`Error::Channel`] wrapping `source` with what backbone was doing.
    ///
    /// ```
    /// use backbone_core::Error;
    ///
    /// let io = std::io::Error::other("connection refused");
    /// let err = Error::channel("connect to redis://127.0.0.1:1", io);
    /// assert_eq!(err.to_string(), "connect to redis://127.0.0.1:1: connection refused");
    /// ```
    pub fn channel(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Channel {
            context: context.into(),
            source: source.into(),
        }
    }

    /// A short, stable name of the kind of error, for `error.type` in spans and the
    /// `error_type` label of metrics: `config`, `encode`, `decode`, `malformed_entry`,
    /// `missing_payload`, `unknown_operation`, `channel`, `wrong_expected_version`,
    /// `idempotency_key_reused`, `bad_stored_event`, `stopped`, `malformed_dead_letter`,
    /// `upcast`, `no_subject`, `unsealable`.
    ///
    /// ```
    /// assert_eq!(backbone_core::Error::Config("x".into()).kind(), "config");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Encode { .. } => "encode",
            Error::Decode { .. } => "decode",
            Error::MalformedEntry { .. } => "malformed_entry",
            Error::MissingPayload { .. } => "missing_payload",
            Error::UnknownOperation { .. } => "unknown_operation",
            Error::Channel { .. } => "channel",
            Error::WrongExpectedVersion { .. } => "wrong_expected_version",
            Error::IdempotencyKeyReused { .. } => "idempotency_key_reused",
            Error::BadStoredEvent { .. } => "bad_stored_event",
            Error::Stopped(_) => "stopped",
            Error::MalformedDeadLetter { .. } => "malformed_dead_letter",
            Error::Upcast { .. } => "upcast",
            Error::NoSubject { .. } => "no_subject",
            Error::Unsealable { .. } => "unsealable",
            Error::BadObject { .. } => "bad_object",
        }
    }

    /// True for problems with one event's content (malformed entry, missing payload, decode
    /// failure, unknown operation, a failed upcaster, a personal parameter that cannot be
    /// decrypted, a parameter whose object is missing or altered, and a [`Error::BadStoredEvent`] wrapping one of them): the
    /// event is bad, the channel is fine.
    pub fn is_bad_event(&self) -> bool {
        matches!(
            self,
            Error::Decode { .. }
                | Error::BadStoredEvent { .. }
                | Error::MalformedEntry { .. }
                | Error::MissingPayload { .. }
                | Error::UnknownOperation { .. }
                | Error::Upcast { .. }
                | Error::Unsealable { .. }
                | Error::BadObject { .. }
        )
    }
}

fn stored_aggregate(aggregate: &Option<String>) -> String {
    match aggregate {
        Some(a) => format!("aggregate `{a}`"),
        None => "no aggregate".to_owned(),
    }
}

fn stored_version(version: &Option<u64>) -> String {
    match version {
        Some(v) => format!("version {v}"),
        None => "unknown version".to_owned(),
    }
}

fn stored_position(position: &Option<String>) -> String {
    match position {
        Some(p) => format!("position {p}"),
        None => "unknown position".to_owned(),
    }
}
