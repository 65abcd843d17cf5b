//! [`RedisSettings`]: where a producer, consumer, event store, dead-letter handle or stream
//! admin connects, and how — URL, environment and uri, TLS material, timeouts, client name.
//! Every Redis-side builder embeds one; [`RedisSettings::from_env`] reads the variables below.
//!
//! | URL | reaches |
//! |---|---|
//! | `redis://[user:password@]host:port[/db]` | plaintext TCP |
//! | `rediss://[user:password@]host:port[/db]` | TLS (rustls); the CA, a client certificate and key as set here |
//! | `redis+unix:///path/redis.sock` (or `unix://`) | a unix socket |
//! | `redis://host1:7000,redis://host2:7000` with [`cluster(true)`](RedisSettings::cluster) | a Redis Cluster, through these seed nodes (`rediss://` for TLS) |
//!
//! | variable | what |
//! |---|---|
//! | `REDIS_URL` | the URL (default `redis://127.0.0.1:6379`) |
//! | `REDIS_TLS_CA` | a PEM file of the CA(s) that signed the server's certificate (default: the system's roots) |
//! | `REDIS_TLS_CERT`, `REDIS_TLS_KEY` | PEM files of a client certificate and its key, for mutual TLS |
//! | `REDIS_CLUSTER` | `1` (or `true`, `yes`): `REDIS_URL` names a Redis Cluster, one or more comma-separated seed URLs |
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
use std::path::PathBuf;
use std::time::Duration;

use backbone_core::{Error, StreamAddress};

use crate::connection::{default_url, Connection};

mod endpoint;
mod redact;

pub use redact::redact_url;

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
    cluster: Option<bool>,
    partitions: Option<u16>,
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
            cluster: env_var("REDIS_CLUSTER").map(|v| is_yes(&v)),
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

    /// Whether the URL names a Redis Cluster (default: `$REDIS_CLUSTER` is `1`, `true` or
    /// `yes`). Then the URL may list several seed nodes, comma-separated; connections follow
    /// the cluster's slots (`MOVED`, `ASK`, failover) by themselves.
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::new()
    ///     .url("redis://10.0.0.1:7000,redis://10.0.0.2:7000")
    ///     .cluster(true);
    /// assert!(format!("{settings:?}").contains("cluster: Some(true)"));
    /// ```
    pub fn cluster(mut self, cluster: bool) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// How many partitions the stream has (default 1; at most 1024). Each partition is a
    /// stream of its own under its own hash tag, so on a cluster partitions spread over the
    /// masters; keyed events and aggregates go to the partition of their key
    /// ([`partition_for`](backbone_core::partition::partition_for)), unkeyed events round-robin.
    /// The count is recorded in Redis by the first producer, consumer or store to start; one
    /// configured with another count refuses to start.
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::new().uri("orders").partitions(6);
    /// assert_eq!(settings.layout()?.count(), 6);
    /// # Ok::<(), backbone_core::Error>(())
    /// ```
    pub fn partitions(mut self, partitions: u16) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// The stream's [`Layout`](crate::layout::Layout): its address over its partitions.
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::new().uri("orders");
    /// assert_eq!(settings.layout()?.count(), 1);
    /// # Ok::<(), backbone_core::Error>(())
    /// ```
    pub fn layout(&self) -> Result<crate::layout::Layout, Error> {
        crate::layout::Layout::new(&self.address()?, self.partitions.unwrap_or(1))
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

    /// Whether these settings reach a Redis Cluster (set, else `$REDIS_CLUSTER`).
    ///
    /// ```
    /// let settings = backbone_redis::settings::RedisSettings::new().cluster(true);
    /// assert!(settings.is_cluster());
    /// ```
    pub fn is_cluster(&self) -> bool {
        self.cluster
            .or_else(|| env_var("REDIS_CLUSTER").map(|v| is_yes(&v)))
            .unwrap_or(false)
    }

    fn resolved_url(&self) -> String {
        self.url.clone().unwrap_or_else(default_url)
    }

    /// A connection for commands of your own (not a blocking read), named
    /// `bb:<role>:<address>` unless a client name is set: what tools built on backbone (the
    /// `backbone` CLI) use to reach Redis the way the builders do.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), backbone_core::Error> {
    /// let settings = backbone_redis::settings::RedisSettings::from_env().uri("orders");
    /// let mut connection = settings.open_connection("cli").await?;
    /// let n: u64 = redis::cmd("XLEN").arg("bb:{orders}:events").query_async(&mut connection).await
    ///     .map_err(|e| backbone_core::Error::channel("XLEN", e))?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn open_connection(&self, role: &str) -> Result<Connection, Error> {
        let address = self.address().map(|a| a.to_string()).unwrap_or_default();
        let parts: Vec<&str> = [address.as_str()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        self.connect(role, &parts).await
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
            .field("cluster", &self.cluster)
            .field("partitions", &self.partitions)
            .finish()
    }
}

fn is_yes(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
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

        /// How many partitions the stream has (default 1); see
        /// [`RedisSettings::partitions`](crate::settings::RedisSettings::partitions).
        pub fn partitions(mut self, partitions: u16) -> Self {
            self.settings = self.settings.partitions(partitions);
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
