//! A real Redis for tests (feature `testing`), never a mock.
//!
//! [`TestRedis::start`] (and the per-process [`shared`] server) takes, in this order:
//! 1. `$REDIS_URL`, used as is;
//! 2. a `redis-server` (from `$REDIS_SERVER_BIN`, `PATH`, `/usr/bin` or `/usr/sbin`) spawned on
//!    a free loopback port with no config file, no snapshots and a temporary `--dir`;
//! 3. a `redis:7` container (testcontainers) when a Docker engine answers;
//! 4. else an error saying how to get Redis ([`no_redis_message`]).
//!
//! [`RedisServer`] is always a spawned `redis-server`, for tests that stop or restart Redis, or
//! that need TLS or a unix socket: [`ServerOptions::tls`] serves TLS only (optionally mutual),
//! with a CA and certificates made at test time ([`TlsFiles`]); [`ServerOptions::unix_socket`]
//! adds a socket in the server's directory ([`RedisServer::unix_socket_url`]).
//!
//! [`RedisCluster`] is a Redis Cluster of spawned `redis-server` nodes (masters and replicas on
//! loopback), for tests of slot routing, `MOVED` and failover ([`RedisCluster::kill_master`]),
//! and resharding ([`RedisCluster::migrate_slot`]: `ASK`, `TRYAGAIN`, then `MOVED`).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use backbone_redis::testing::{RedisServer, ServerOptions, TlsMode};
//! let server = RedisServer::spawn(ServerOptions {
//!     tls: Some(TlsMode::Mutual),
//!     unix_socket: true,
//!     ..Default::default()
//! })?;
//! assert!(server.url().starts_with("rediss://127.0.0.1:"));
//! // Trusts the server's CA and presents the client certificate:
//! let mut tls = server.client()?.get_multiplexed_async_connection().await?;
//! let local = redis::Client::open(server.unix_socket_url().unwrap())?;
//! # Ok(()) }
//! ```
//!
//! # Orphans
//! Test processes often die without running destructors (statics never drop; `cargo test` and
//! nextest end processes abruptly), so on Linux every `redis-server` gets
//! `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills it when its parent dies. That fires when
//! the *thread* that spawned the child exits, and test threads end all the time, so children are
//! spawned by one dedicated helper thread that lives as long as the process. The container of a
//! [`shared`] server is left for the Docker engine to reap.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use backbone_core::Error;

mod cluster;
mod container;
mod server;
mod tls;

pub use cluster::RedisCluster;
use container::{start_container, ContainerKeeper};
use server::redis_server_bin;
pub use server::{RedisServer, ServerOptions};
pub use tls::{TlsFiles, TlsMode};

/// Where a [`TestRedis`] comes from.
///
/// ```
/// assert_ne!(backbone_redis::testing::RedisSource::Env, backbone_redis::testing::RedisSource::Spawned);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisSource {
    /// The server named by `$REDIS_URL`.
    Env,
    /// A `redis-server` child process, killed on drop.
    Spawned,
    /// A `redis:7` container, removed on drop.
    Container,
}

/// A Redis server for tests; dropping it stops whatever it started.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = backbone_redis::testing::TestRedis::start().await?;
/// let mut conn = redis::Client::open(redis.url())?.get_multiplexed_async_connection().await?;
/// # Ok(()) }
/// ```
pub struct TestRedis {
    url: String,
    source: RedisSource,
    _server: Option<RedisServer>,
    _container: Option<ContainerKeeper>,
}

impl std::fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRedis")
            .field("url", &crate::settings::redact_url(&self.url))
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl TestRedis {
    /// Takes `$REDIS_URL`, else spawns a `redis-server`, else starts a container (see the module).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), backbone_core::Error> {
    /// let redis = backbone_redis::testing::TestRedis::start().await?;
    /// # Ok(()) }
    /// ```
    pub async fn start() -> Result<TestRedis, Error> {
        let (url, source, server, container) = if let Some(url) = env_url() {
            (url, RedisSource::Env, None, None)
        } else if redis_server_bin().is_some() {
            let server = tokio::task::spawn_blocking(|| RedisServer::spawn(Default::default()))
                .await
                .map_err(|e| Error::channel("spawn redis-server", e))??;
            (
                server.url().to_owned(),
                RedisSource::Spawned,
                Some(server),
                None,
            )
        } else if docker_available() {
            let (url, keeper) = start_container().await?;
            (url, RedisSource::Container, None, Some(keeper))
        } else {
            return Err(Error::Config(no_redis_message()));
        };
        let (_server, _container) = (server, container);
        Ok(TestRedis {
            url,
            source,
            _server,
            _container,
        })
    }

    /// The server's url, e.g. `redis://127.0.0.1:40123/`.
    ///
    /// ```no_run
    /// # let redis: backbone_redis::testing::TestRedis = todo!();
    /// let client = redis::Client::open(redis.url()).unwrap();
    /// ```
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the server comes from.
    ///
    /// ```no_run
    /// # let redis: backbone_redis::testing::TestRedis = todo!();
    /// println!("testing against {} ({:?})", redis.url(), redis.source());
    /// ```
    pub fn source(&self) -> RedisSource {
        self.source
    }
}

/// The test process's server, started once by the first caller and never dropped; safe to call
/// from many `#[tokio::test]` runtimes at once. It holds nothing bound to a runtime: a spawned
/// server is a plain child process (whose directory is removed once it answers), a container
/// is kept by a thread with its own runtime.
///
/// ```no_run
/// # async fn f() -> Result<(), backbone_core::Error> {
/// let redis = backbone_redis::testing::shared().await?;
/// let stream = backbone_redis::testing::unique_name("orders"); // keep tests apart
/// # Ok(()) }
/// ```
pub async fn shared() -> Result<&'static TestRedis, Error> {
    static SHARED: tokio::sync::OnceCell<TestRedis> = tokio::sync::OnceCell::const_new();
    let start = || async {
        let redis = TestRedis::start().await?;
        if let Some(server) = &redis._server {
            let _ = fs::remove_dir_all(server.dir()); // never dropped; it needs it no more
        }
        Ok(redis)
    };
    SHARED.get_or_try_init(start).await
}

/// What [`TestRedis::start`] says when it finds no way to get a Redis.
///
/// ```
/// assert!(backbone_redis::testing::no_redis_message().contains("REDIS_URL"));
/// ```
pub fn no_redis_message() -> String {
    "no Redis server for tests: set REDIS_URL to a disposable server (tests write to it), e.g. \
     REDIS_URL=redis://127.0.0.1:6380/; or install redis-server (`apt-get install redis-server`, \
     or set REDIS_SERVER_BIN to its path); or start a Docker engine (DOCKER_HOST or \
     /var/run/docker.sock) so that a redis:7 container can run"
        .to_owned()
}

/// A name unique across tests and processes, `prefix-PID-COUNTER-NANOS`, made only of
/// `[A-Za-z0-9._-]` (any other character of `prefix` becomes `_`): valid in a key and a uri.
///
/// ```
/// use backbone_redis::testing::unique_name;
/// assert_ne!(unique_name("orders"), unique_name("orders"));
/// assert!(unique_name("a b").starts_with("a_b-"));
/// ```
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH);
    let nanos = nanos.map_or(0, |d| d.as_nanos());
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let prefix: String = prefix
        .chars()
        .map(|c| if ok(c) { c } else { '_' })
        .collect();
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

fn env_url() -> Option<String> {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

fn docker_available() -> bool {
    std::env::var_os("DOCKER_HOST").is_some_and(|host| !host.is_empty())
        || Path::new("/var/run/docker.sock").exists()
}
