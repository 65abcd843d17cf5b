//! Names of things: the [`StreamAddress`] a producer and consumer share, and default consumer names.

use std::fmt;

use crate::Error;

/// Where events travel: an optional environment and a uri, checked once when a builder is
/// built. Both are used inside channel key names, so they may not be empty and may not contain
/// whitespace, control characters, `{`, `}` or `:` (the tag `{<environment>:<uri>}` must name
/// one stream: with a `:` in the uri, environment `prod` and uri `orders` would share their keys
/// with uri `prod:orders`), and the uri may not end in `#<number>` (the tag of a partition, see
/// [`partition`](crate::partition)).
///
/// ```
/// use backbone_core::StreamAddress;
///
/// let a = StreamAddress::new(Some("prod"), "hello.event-sourcing").unwrap();
/// assert_eq!(a.to_string(), "prod:hello.event-sourcing");
/// let err = StreamAddress::new(None, "bad uri").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid configuration: uri \"bad uri\" contains whitespace at byte 3"
/// );
/// let err = StreamAddress::new(None, "prod:orders").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid configuration: uri \"prod:orders\" contains `:` at byte 4"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamAddress {
    environment: Option<String>,
    uri: String,
}

impl StreamAddress {
    /// Checks and joins an environment and a uri.
    pub fn new(environment: Option<&str>, uri: &str) -> Result<Self, Error> {
        if let Some(env) = environment {
            check_name("environment", env, ":")?;
        }
        check_name("uri", uri, ":")?;
        if let Some((_, digits)) = uri.rsplit_once('#') {
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::Config(format!(
                    "uri {uri:?} ends in #{digits}: a uri may not end in `#<number>`, which names \
                     a partition of a partitioned stream"
                )));
            }
        }
        Ok(StreamAddress {
            environment: environment.map(str::to_owned),
            uri: uri.to_owned(),
        })
    }

    /// Like [`new`](Self::new), for builders whose uri may not have been set.
    ///
    /// ```
    /// use backbone_core::StreamAddress;
    ///
    /// let err = StreamAddress::from_options(None, None).unwrap_err();
    /// assert_eq!(err.to_string(), "invalid configuration: uri is required: call .uri(\"...\")");
    /// ```
    pub fn from_options(environment: Option<&str>, uri: Option<&str>) -> Result<Self, Error> {
        let uri = uri.ok_or_else(|| Error::Config("uri is required: call .uri(\"...\")".into()))?;
        Self::new(environment, uri)
    }

    /// The environment, if any.
    pub fn environment(&self) -> Option<&str> {
        self.environment.as_deref()
    }

    /// The uri.
    pub fn uri(&self) -> &str {
        &self.uri
    }
}

impl fmt::Display for StreamAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.environment {
            Some(env) => write!(f, "{env}:{}", self.uri),
            None => f.write_str(&self.uri),
        }
    }
}

/// Checks a name used in keys: not empty, no whitespace or control characters, none of `{}`
/// nor of `extra`. `what` names it in the error.
///
/// ```
/// assert!(backbone_core::names::check_name("group", "reporter", "").is_ok());
/// let err = backbone_core::names::check_name("group", "", "").unwrap_err();
/// assert_eq!(err.to_string(), "invalid configuration: group must not be empty");
/// ```
pub fn check_name(what: &str, value: &str, extra: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::Config(format!("{what} must not be empty")));
    }
    for (at, c) in value.char_indices() {
        let problem = if c.is_whitespace() {
            "whitespace".to_owned()
        } else if c.is_control() {
            "a control character".to_owned()
        } else if c == '{' || c == '}' || extra.contains(c) {
            format!("`{c}`")
        } else {
            continue;
        };
        return Err(Error::Config(format!(
            "{what} {value:?} contains {problem} at byte {at}"
        )));
    }
    Ok(())
}

/// A consumer name that stays the same across restarts of the same program on the same host:
/// `<host>-<program>`, so a restarted consumer finds the entries it left pending.
///
/// ```
/// let name = backbone_core::names::default_consumer_name();
/// assert!(!name.is_empty());
/// assert_eq!(name, backbone_core::names::default_consumer_name());
/// ```
pub fn default_consumer_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let program = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "backbone".to_owned());
    let name: String = format!("{host}-{program}")
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() || c == '{' || c == '}' {
                '_'
            } else {
                c
            }
        })
        .collect();
    name
}
