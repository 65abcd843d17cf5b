//! [`RedisSettings`]: where a producer, consumer, event store, dead-letter handle or stream
//! admin connects, and how — URL, environment and uri, TLS material, timeouts, client name.
//! Every Redis-side builder embeds one; [`RedisSettings::from_env`] reads the variables below.
//!
//! | URL | reaches |
//! |---|---|
//! | `redis://[user:password@]host:port[/db]` | plaintext TCP |
//! | `rediss://[user:password@]host:port[/db]` | TLS (rustls); the CA, a client certificate and key as set here |
//! | `redis+unix:///path/redis.sock` (or `unix://`) | a unix socket |
//!
//! | variable | what |
//! |---|---|
//! | `REDIS_URL` | the URL (default `redis://127.0.0.1:6379`) |
//! | `REDIS_TLS_CA` | a PEM file of the CA(s) that signed the server's certificate (default: the system's roots) |
//! | `REDIS_TLS_CERT`, `REDIS_TLS_KEY` | PEM files of a client certificate and its key, for mutual TLS |
//!
//! Settings left unset fall back to these variables when connecting, so a program built with
//! `.url(..)` untouched follows `REDIS_URL` and the TLS variables. Passwords never leave the
//! settings: `Debug`, errors and logs show URLs with the password masked ([`redact_url`]).
//!
//! ```
//! use std::time::Duration;
//! use backbone_redis::settings::RedisSettings;
//!
//! let settings = RedisSettings::new()
//!     .url("rediss://billing:s3cret@redis.internal:6380")
//!     .tls_ca("/etc/ssl/redis-ca.pem")
//!     .environment("prod")
//!     .uri("orders")
//!     .response_timeout(Duration::from_secs(5));
//! let shown = format!("{settings:?}");
//! assert!(shown.contains("rediss://billing:***@redis.internal:6380"));
//! assert!(!shown.contains("s3cret"));
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use backbone_core::{Error, StreamAddress};
use redis::{ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, TlsCertificates};

use crate::connection::{default_url, Connection, Endpoint};

/// The default connection timeout.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// The default response timeout of a non-blocking command (redis-rs's own default, 500 ms, is
/// too short for a batch of large payloads).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to connect and how. See the [module](self) for the URL forms and the variables.
///
/// ```
/// use backbone_redis::settings::RedisSettings;
///
/// let settings = RedisSettings::from_env().environment("prod").uri("orders");
/// let producer = backbone_redis::RedisProducerBuilder::new().settings(settings);
/// ```
#[derive(Clone, Default)]
pub struct RedisSettings {
    url: Option<String>,
    environment: Option<String>,
    uri: Option<String>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    insecure: bool,
    connection_timeout: Option<Duration>,
    response_timeout: Option<Duration>,
    client_name: Option<String>,
}

impl RedisSettings {
    /// Settings with nothing set: everything comes from the variables, or the defaults.
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::new();
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Settings holding `REDIS_URL`, `REDIS_TLS_CA`, `REDIS_TLS_CERT` and `REDIS_TLS_KEY` as
    /// they are now (those not set stay unset).
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::from_env();
    /// ```
    pub fn from_env() -> Self {
        RedisSettings {
            url: env_var("REDIS_URL"),
            tls_ca: env_var("REDIS_TLS_CA").map(PathBuf::from),
            tls_cert: env_var("REDIS_TLS_CERT").map(PathBuf::from),
            tls_key: env_var("REDIS_TLS_KEY").map(PathBuf::from),
            ..Self::default()
        }
    }

    /// The Redis URL (default: `$REDIS_URL`, else `redis://127.0.0.1:6379`); see the
    /// [module](self) for the forms.
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::new().url("redis+unix:///run/redis.sock");
    /// ```
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The environment (optional): part of every key, e.g. `prod`.
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::new().environment("prod");
    /// ```
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// The stream's uri (required by every builder): part of every key.
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::new().uri("orders");
    /// ```
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = Some(uri.into());
        self
    }

    /// A PEM file of the CA(s) to trust for the server's certificate, instead of the
    /// system's roots (default: `$REDIS_TLS_CA`). Needs a `rediss://` URL.
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::new()
    ///     .url("rediss://redis.internal:6380")
    ///     .tls_ca("/etc/ssl/redis-ca.pem");
    /// ```
    pub fn tls_ca(mut self, pem_file: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(pem_file.into());
        self
    }

    /// PEM files of a client certificate and its private key, for servers that require mutual
    /// TLS (default: `$REDIS_TLS_CERT` and `$REDIS_TLS_KEY`). Needs a `rediss://` URL.
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::new()
    ///     .url("rediss://redis.internal:6380")
    ///     .tls_client_cert("/etc/ssl/billing.crt", "/etc/ssl/billing.key");
    /// ```
    pub fn tls_client_cert(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.tls_cert = Some(cert_file.into());
        self.tls_key = Some(key_file.into());
        self
    }

    /// **For development only**: accept any server certificate, for any host name. The
    /// connection is encrypted but not authenticated: anyone on the path can read and change
    /// it. Every builder that connects so logs a warning.
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::new()
    ///     .url("rediss://127.0.0.1:6380")
    ///     .danger_accept_invalid_certificates();
    /// ```
    pub fn danger_accept_invalid_certificates(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// How long connecting may take (default 5 s).
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::new()
    ///     .connection_timeout(std::time::Duration::from_secs(2));
    /// ```
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = Some(timeout);
        self
    }

    /// How long a command may wait for its answer (default 10 s; a blocking read waits its
    /// `block` on top of it).
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::new()
    ///     .response_timeout(std::time::Duration::from_secs(3));
    /// ```
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = Some(timeout);
        self
    }

    /// The name connections give themselves (`CLIENT SETNAME`), followed by `:<role>`
    /// (default `bb:<role>:…`, e.g. `bb:consumer:<group>:<name>`, `bb:producer:<stream>`).
    /// Characters `CLIENT SETNAME` refuses (spaces, non-ASCII) become `_`.
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::new().client_name("billing");
    /// ```
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }

    /// The URL these settings connect to, with any password masked.
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::new().url("redis://u:pw@10.0.0.1:6379/2");
    /// assert_eq!(settings.redacted_url(), "redis://u:***@10.0.0.1:6379/2");
    /// ```
    pub fn redacted_url(&self) -> String {
        redact_url(&self.resolved_url())
    }

    /// The (environment, uri) these settings name; an error when the uri is missing or a name
    /// is invalid.
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::new().environment("prod").uri("orders");
    /// assert_eq!(settings.address()?.to_string(), "prod:orders");
    /// # Ok::<(), backbone_core::Error>(())
    /// ```
    pub fn address(&self) -> Result<StreamAddress, Error> {
        StreamAddress::from_options(self.environment.as_deref(), self.uri.as_deref())
    }

    /// The same settings with the environment and uri given (`None` leaves the environment
    /// unset), for the positional `connect` functions.
    pub(crate) fn at(mut self, environment: Option<&str>, uri: &str) -> Self {
        self.environment = environment.map(str::to_owned);
        self.uri = Some(uri.to_owned());
        self
    }

    fn resolved_url(&self) -> String {
        self.url.clone().unwrap_or_else(default_url)
    }

    /// A connection for non-blocking commands, named after `role` and `parts`.
    pub(crate) async fn connect(&self, role: &str, parts: &[&str]) -> Result<Connection, Error> {
        Connection::open(self.endpoint()?, self.name_for(role, parts), Duration::ZERO).await
    }

    /// A connection of its own for a blocking `XREADGROUP ... BLOCK`: its response timeout
    /// outlasts `block`, and a blocking read stalls every other command of its connection.
    pub(crate) async fn connect_blocking(
        &self,
        role: &str,
        parts: &[&str],
        block: Duration,
    ) -> Result<Connection, Error> {
        Connection::open(self.endpoint()?, self.name_for(role, parts), block).await
    }

    fn name_for(&self, role: &str, parts: &[&str]) -> String {
        let name = match &self.client_name {
            Some(name) => format!("{name}:{role}"),
            None => std::iter::once("bb")
                .chain(std::iter::once(role))
                .chain(parts.iter().copied())
                .collect::<Vec<_>>()
                .join(":"),
        };
        name.chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '_' })
            .collect()
    }

    /// Checks the URL and the TLS material and builds the client.
    fn endpoint(&self) -> Result<Endpoint, Error> {
        let url = self.resolved_url();
        let redacted = redact_url(&url);
        let scrub = |text: String| scrub_password(&url, text);
        let bad_url =
            |why: String| Error::Config(format!("invalid Redis URL {redacted:?}: {}", scrub(why)));
        let tls_url = url.starts_with("rediss://");
        let env = RedisSettings::from_env();
        let ca = self.tls_ca.clone().or(env.tls_ca);
        let cert = self.tls_cert.clone().or(env.tls_cert);
        let key = self.tls_key.clone().or(env.tls_key);
        if !tls_url && (ca.is_some() || cert.is_some() || key.is_some() || self.insecure) {
            return Err(bad_url(
                "TLS settings are given (a CA, a client certificate or key, from the settings or \
                 REDIS_TLS_CA/REDIS_TLS_CERT/REDIS_TLS_KEY, or accepting invalid certificates) \
                 but the URL is not rediss://; refusing to connect without TLS"
                    .into(),
            ));
        }
        let client_tls =
            match (&cert, &key) {
                (Some(cert), Some(key)) => Some(ClientTlsConfig {
                    client_cert: read_pem(cert, "client certificate", "REDIS_TLS_CERT")?,
                    client_key: read_pem(key, "client key", "REDIS_TLS_KEY")?,
                }),
                (None, None) => None,
                _ => return Err(Error::Config(
                    "a TLS client certificate needs its key and a key its certificate: set both \
                     (tls_client_cert, or REDIS_TLS_CERT and REDIS_TLS_KEY)"
                        .into(),
                )),
            };
        let root_cert = match &ca {
            Some(ca) => Some(read_pem(ca, "CA", "REDIS_TLS_CA")?),
            None => None,
        };
        let url = if self.insecure && !url.contains('#') {
            format!("{url}#insecure")
        } else {
            url.clone()
        };
        let info = url
            .as_str()
            .into_connection_info()
            .map_err(|e| bad_url(e.to_string()))?;
        let client = if tls_url {
            install_crypto_provider();
            if self.insecure {
                tracing::warn!(url = %redacted, "TLS certificate verification is OFF (danger_accept_invalid_certificates): for development only");
            }
            let certificates = TlsCertificates {
                client_tls,
                root_cert,
            };
            redis::Client::build_with_tls(info, certificates)
        } else {
            redis::Client::open(info)
        }
        .map_err(|e| bad_url(e.to_string()))?;
        if let ConnectionAddr::Unix(path) = client.get_connection_info().addr() {
            if !cfg!(unix) {
                return Err(bad_url(format!(
                    "unix sockets ({path:?}) need a unix system"
                )));
            }
        }
        let address = client.get_connection_info().addr().to_string();
        Ok(Endpoint {
            client,
            connection_timeout: self.connection_timeout.unwrap_or(CONNECTION_TIMEOUT),
            response_timeout: self.response_timeout.unwrap_or(RESPONSE_TIMEOUT),
            address,
        })
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("environment", &self.environment)
            .field("uri", &self.uri)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("danger_accept_invalid_certificates", &self.insecure)
            .field("connection_timeout", &self.connection_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("client_name", &self.client_name)
            .finish()
    }
}

/// `url` with the password of its user info (`user:password@`) replaced by `***`, and the
/// values of `pass=` and `password=` query parameters too (a unix socket URL's credentials).
///
/// ```
/// use backbone_redis::settings::redact_url;
///
/// assert_eq!(redact_url("redis://bb:Sup3rS3cret@127.0.0.1:99999"), "redis://bb:***@127.0.0.1:99999");
/// assert_eq!(redact_url("rediss://:token@host:6380/0"), "rediss://:***@host:6380/0");
/// assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
/// assert_eq!(redact_url("redis+unix:///run/redis.sock"), "redis+unix:///run/redis.sock");
/// assert_eq!(
///     redact_url("redis+unix:///run/redis.sock?user=bb&pass=s3cret&db=1"),
///     "redis+unix:///run/redis.sock?user=bb&pass=***&db=1"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{user_info}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = query
                .split_once('#')
                .map_or((query, None), |(q, f)| (q, Some(f)));
            let masked: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_password_param(name) => format!("{name}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
            format!("{path}?{}{fragment}", masked.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// `text` with every password of `url` (user info, `pass=`, `password=`) replaced by `***`:
/// for texts that come from elsewhere (redis-rs) and might quote it.
fn scrub_password(url: &str, mut text: String) -> String {
    let Some((_, rest)) = url.split_once("://") else {
        return text;
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let mut secrets: Vec<&str> = Vec::new();
    if let Some((_, password)) = authority
        .rsplit_once('@')
        .and_then(|(info, _)| info.split_once(':'))
    {
        secrets.push(password);
    }
    if let Some((_, query)) = rest.split_once('?') {
        let query = query.split('#').next().unwrap_or_default();
        for pair in query.split('&') {
            if let Some((name, value)) = pair.split_once('=') {
                if is_password_param(name) {
                    secrets.push(value);
                }
            }
        }
    }
    for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "***");
    }
    text
}

fn is_password_param(name: &str) -> bool {
    name.eq_ignore_ascii_case("pass") || name.eq_ignore_ascii_case("password")
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Reads a PEM file; the error names what it is for, the file and the variable that sets it.
fn read_pem(path: &Path, what: &str, variable: &str) -> Result<Vec<u8>, Error> {
    let pem = std::fs::read(path).map_err(|e| {
        Error::Config(format!(
            "cannot read the TLS {what} file {} (tls settings or {variable}): {e}",
            path.display()
        ))
    })?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(Error::Config(format!(
            "the TLS {what} file {} (tls settings or {variable}) holds no PEM block",
            path.display()
        )));
    }
    Ok(pem)
}

/// rustls needs a process-wide crypto provider; install ring's unless the program did.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Generates the setters every Redis-side builder shares, delegating to its `settings`
/// field: `settings`, `url`, `environment`, `uri`.
macro_rules! settings_setters {
    ($what:literal) => {
        /// All connection settings at once (URL, TLS, timeouts, client name, environment,
        /// uri), replacing any set before; see [`RedisSettings`](crate::settings::RedisSettings).
        pub fn settings(mut self, settings: $crate::settings::RedisSettings) -> Self {
            self.settings = settings;
            self
        }

        /// The Redis URL (default: `$REDIS_URL`, else `redis://127.0.0.1:6379`); see
        /// [`RedisSettings`](crate::settings::RedisSettings) for the forms and TLS.
        pub fn url(mut self, url: impl Into<String>) -> Self {
            self.settings = self.settings.url(url);
            self
        }

        #[doc = concat!("The environment (optional); part of the stream's keys", $what, ".")]
        pub fn environment(mut self, environment: impl Into<String>) -> Self {
            self.settings = self.settings.environment(environment);
            self
        }

        #[doc = concat!("The stream's uri (required)", $what, ".")]
        pub fn uri(mut self, uri: impl Into<String>) -> Self {
            self.settings = self.settings.uri(uri);
            self
        }
    };
}
pub(crate) use settings_setters;
