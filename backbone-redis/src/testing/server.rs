//! [`RedisServer`]: a `redis-server` child process, launched and probed by pid, spawned from a
//! process-long helper thread (see the module docs on orphans).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use backbone_core::Error;

use super::no_redis_message;
use super::tls::{TlsFiles, TlsMode};

const TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// Options of a [`RedisServer`]; the default is a plaintext server without AOF.
///
/// ```
/// use backbone_redis::testing::{ServerOptions, TlsMode};
/// let options = ServerOptions {
///     appendonly: true,
///     extra_args: vec!["--maxmemory".into(), "64mb".into()],
///     tls: Some(TlsMode::Mutual),
///     unix_socket: true,
/// };
/// let plain = ServerOptions { appendonly: true, ..Default::default() };
/// assert!(plain.tls.is_none() && !plain.unix_socket);
/// ```
#[derive(Default, Clone, Debug)]
pub struct ServerOptions {
    /// `--appendonly yes`: data survives [`RedisServer::restart`].
    pub appendonly: bool,
    /// More `redis-server` arguments, after ours.
    pub extra_args: Vec<String>,
    /// Serve TLS only: `--port 0 --tls-port PORT`, with a CA and certificates made for this
    /// server ([`RedisServer::tls`]); the url is then `rediss://127.0.0.1:PORT/`. `None`: plain.
    pub tls: Option<TlsMode>,
    /// Also listen on `redis.sock` in the server's directory (`--unixsocket`, `--unixsocketperm
    /// 700`), plaintext even on a TLS server: [`RedisServer::unix_socket_url`].
    pub unix_socket: bool,
}

/// A `redis-server` child on a free port of 127.0.0.1, with its own temporary directory (which
/// also holds its log, its AOF, its TLS files and its unix socket); killed on drop.
///
/// ```no_run
/// # fn f() -> Result<(), backbone_core::Error> {
/// use backbone_redis::testing::{RedisServer, ServerOptions};
/// let mut server = RedisServer::spawn(ServerOptions { appendonly: true, ..Default::default() })?;
/// // ... write through server.url() ...
/// server.restart()?; // same port, AOF reloaded
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisServer {
    url: String,
    port: u16,
    setup: Setup,
    child: Option<Child>,
}

/// What [`launch`] needs, fixed for a server's life.
#[derive(Debug)]
struct Setup {
    bin: PathBuf,
    dir: tempfile::TempDir,
    options: ServerOptions,
    tls: Option<TlsFiles>,
    unix_socket: Option<PathBuf>,
}

impl RedisServer {
    /// Spawns a server and waits (at most 10 s) until it answers `PING` (over TLS, for a TLS
    /// server); makes its TLS files first if [`ServerOptions::tls`] asks for TLS.
    ///
    /// ```no_run
    /// let server = backbone_redis::testing::RedisServer::spawn(Default::default()).unwrap();
    /// ```
    pub fn spawn(options: ServerOptions) -> Result<RedisServer, Error> {
        RedisServer::spawn_with_ports(options, free_port)
    }

    /// [`spawn`](Self::spawn) on ports from `pick_port` (asked again when a port got taken).
    pub(super) fn spawn_with_ports(
        options: ServerOptions,
        mut pick_port: impl FnMut() -> Result<u16, Error>,
    ) -> Result<RedisServer, Error> {
        let bin = redis_server_bin().ok_or_else(|| Error::Config(no_redis_message()))?;
        let dir = tempfile::Builder::new().prefix("backbone-redis-").tempdir();
        let dir = dir.map_err(|e| Error::channel("create a directory for redis-server", e))?;
        let tls = match options.tls {
            Some(mode) => Some(TlsFiles::generate(dir.path(), mode)?),
            None => None,
        };
        let unix_socket = options.unix_socket.then(|| dir.path().join("redis.sock"));
        let setup = Setup {
            bin,
            dir,
            options,
            tls,
            unix_socket,
        };
        for _ in 0..5 {
            let port = pick_port()?;
            match launch(&setup, port) {
                Ok(child) => {
                    let scheme = if setup.tls.is_some() {
                        "rediss"
                    } else {
                        "redis"
                    };
                    let url = format!("{scheme}://127.0.0.1:{port}/");
                    let child = Some(child);
                    return Ok(RedisServer {
                        url,
                        port,
                        setup,
                        child,
                    });
                }
                Err(Launch::PortTaken) => continue,
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
        Err(Error::Config("every port tried got taken".into()))
    }

    /// The server's url: `redis://127.0.0.1:PORT/`, or `rediss://127.0.0.1:PORT/` for a TLS
    /// server (whose CA no client trusts unless told: see [`client`](Self::client)).
    ///
    /// ```no_run
    /// # let server: backbone_redis::testing::RedisServer = todo!();
    /// let client = redis::Client::open(server.url()).unwrap();
    /// ```
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's port on 127.0.0.1 (never 6379): its TLS port for a TLS server, which then
    /// has no plaintext port.
    ///
    /// ```no_run
    /// # let server: backbone_redis::testing::RedisServer = todo!();
    /// assert_ne!(server.port(), 6379);
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's own temporary directory (its log, AOF, TLS files and unix socket), removed
    /// when the server is dropped.
    ///
    /// ```no_run
    /// # let server: backbone_redis::testing::RedisServer = todo!();
    /// assert!(server.dir().join("redis-server.log").exists());
    /// ```
    pub fn dir(&self) -> &Path {
        self.setup.dir.path()
    }

    /// The certificates of a TLS server ([`ServerOptions::tls`]); `None` for a plain one.
    ///
    /// ```no_run
    /// # let server: backbone_redis::testing::RedisServer = todo!();
    /// let tls = server.tls().expect("spawned with tls: Some(..)");
    /// let ca: &std::path::Path = tls.ca_cert_path();
    /// ```
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.setup.tls.as_ref()
    }

    /// The unix socket's path, with [`ServerOptions::unix_socket`]; else `None`.
    ///
    /// ```no_run
    /// # let server: backbone_redis::testing::RedisServer = todo!();
    /// assert!(server.unix_socket_path().unwrap().ends_with("redis.sock"));
    /// ```
    pub fn unix_socket_path(&self) -> Option<&Path> {
        self.setup.unix_socket.as_deref()
    }

    /// The unix socket's url, `redis+unix:///…/redis.sock` (plaintext, also on a TLS server),
    /// with [`ServerOptions::unix_socket`]; else `None`.
    ///
    /// ```no_run
    /// # let server: backbone_redis::testing::RedisServer = todo!();
    /// let client = redis::Client::open(server.unix_socket_url().unwrap()).unwrap();
    /// ```
    pub fn unix_socket_url(&self) -> Option<String> {
        self.unix_socket_path().map(unix_url)
    }

    /// A redis-rs client of [`url`](Self::url): for a TLS server it trusts the server's CA and
    /// presents its client certificate ([`TlsFiles::certificates`]), and it installs ring as
    /// the process's rustls `CryptoProvider` if none is installed yet (redis-rs needs one).
    ///
    /// ```no_run
    /// # async fn f(server: &backbone_redis::testing::RedisServer) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut conn = server.client()?.get_multiplexed_async_connection().await?;
    /// let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
    /// # Ok(()) }
    /// ```
    pub fn client(&self) -> Result<redis::Client, Error> {
        let client = match self.tls() {
            Some(tls) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                redis::Client::build_with_tls(self.url(), tls.certificates())
            }
            None => redis::Client::open(self.url()),
        };
        client.map_err(|e| Error::channel(format!("a client of {}", self.url), e))
    }

    /// Shuts the server down with SIGTERM (it flushes its AOF, if on) and waits for it to exit;
    /// does nothing if it is not running.
    ///
    /// ```no_run
    /// # let mut server: backbone_redis::testing::RedisServer = todo!();
    /// server.stop()?; // clients now get "connection refused"
    /// # Ok::<(), backbone_core::Error>(())
    /// ```
    pub fn stop(&mut self) -> Result<(), Error> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        #[cfg(unix)] // SAFETY: kill(2) has no memory preconditions; the pid is our unreaped child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        #[cfg(not(unix))]
        let _ = child.kill();
        let deadline = Instant::now() + TIMEOUT;
        let wait_err = |e| Error::channel("wait for redis-server", e);
        while child.try_wait().map_err(wait_err)?.is_none() {
            if Instant::now() >= deadline {
                kill_and_wait(&mut child);
                return Err(Error::Config("redis-server ignored SIGTERM".into()));
            }
            thread::sleep(POLL);
        }
        Ok(())
    }

    /// Starts the server again on the same port and directory (reloading its AOF, if on); does
    /// nothing if it is running.
    ///
    /// ```no_run
    /// # let mut server: backbone_redis::testing::RedisServer = todo!();
    /// server.stop()?;
    /// server.start()?;
    /// # Ok::<(), backbone_core::Error>(())
    /// ```
    pub fn start(&mut self) -> Result<(), Error> {
        if self.child.is_some() {
            return Ok(());
        }
        let port = self.port;
        self.child = Some(match launch(&self.setup, port) {
            Ok(child) => child,
            Err(Launch::Failed(e)) => return Err(e),
            Err(Launch::PortTaken) => return Err(Error::Config(format!("port {port} got taken"))),
        });
        Ok(())
    }

    /// [`stop`](Self::stop) then [`start`](Self::start).
    ///
    /// ```no_run
    /// # let mut server: backbone_redis::testing::RedisServer = todo!();
    /// server.restart()?;
    /// # Ok::<(), backbone_core::Error>(())
    /// ```
    pub fn restart(&mut self) -> Result<(), Error> {
        self.stop()?;
        self.start()
    }
}

impl RedisServer {
    /// Kills the server with SIGKILL (no AOF flush, no shutdown) and reaps it; does nothing if
    /// it is not running.
    pub(super) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_wait(&mut child);
        }
    }

    /// Whether the server was started and not stopped or killed since.
    pub(super) fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_wait(&mut child);
        }
    }
}

pub(super) fn redis_server_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("REDIS_SERVER_BIN").filter(|b| !b.is_empty()) {
        return Some(bin.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .chain(["/usr/bin", "/usr/sbin"].map(|dir| Path::new(dir).join("redis-server")))
        .find(|candidate| candidate.is_file())
}

pub(super) fn free_port() -> Result<u16, Error> {
    let find = || TcpListener::bind("127.0.0.1:0")?.local_addr();
    loop {
        let port = find()
            .map_err(|e| Error::channel("find a free port", e))?
            .port();
        if port != 6379 {
            return Ok(port);
        }
    }
}

enum Launch {
    PortTaken,
    Failed(Error),
}

/// Spawns `redis-server` on `port` and waits until *it* (checked by pid) answers PING.
fn launch(setup: &Setup, port: u16) -> Result<Child, Launch> {
    let Setup { bin, options, .. } = setup;
    let dir = setup.dir.path();
    let log_path = dir.join("redis-server.log");
    let failed = |what: String, e: io::Error| Launch::Failed(Error::channel(what, e));
    let open_log = || OpenOptions::new().create(true).append(true).open(&log_path);
    let (out, err) = match (open_log(), open_log()) {
        (Ok(out), Ok(err)) => (out, err),
        (Err(e), _) | (_, Err(e)) => return Err(failed(format!("open {log_path:?}"), e)),
    };
    let log_start = out.metadata().map_or(0, |m| m.len());
    let log = || {
        let bytes = fs::read(&log_path).unwrap_or_default();
        let text = String::from_utf8_lossy(bytes.get(log_start as usize..).unwrap_or_default());
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        io::Error::other(format!("its log {log_path:?} ends with:\n{tail}"))
    };
    let mut cmd = Command::new(bin);
    let appendonly = if options.appendonly { "yes" } else { "no" };
    cmd.args([
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--daemonize",
        "no",
        "--port",
    ]);
    match &setup.tls {
        None => cmd.arg(port.to_string()),
        Some(tls) => cmd
            .args(["0", "--tls-port", &port.to_string(), "--tls-cert-file"])
            .arg(tls.server_cert_path())
            .arg("--tls-key-file")
            .arg(tls.server_key_path())
            .arg("--tls-ca-cert-file")
            .arg(tls.ca_cert_path())
            .args(["--tls-auth-clients", tls.mode().auth_clients()]),
    };
    if let Some(socket) = &setup.unix_socket {
        cmd.arg("--unixsocket")
            .arg(socket)
            .args(["--unixsocketperm", "700"]);
    }
    cmd.arg("--appendonly")
        .arg(appendonly)
        .arg("--dir")
        .arg(dir);
    cmd.args(&options.extra_args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let mut child = spawn_child(cmd).map_err(|e| failed(format!("spawn {bin:?}"), e))?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = log();
            if log.to_string().contains("Address already in use") {
                return Err(Launch::PortTaken);
            }
            let what = format!("redis-server on port {port} ended ({status}) before answering");
            return Err(failed(what, log));
        }
        let last = match probe(port, setup.tls.as_ref()) {
            Ok(pid) if pid == child.id() => return Ok(child),
            Ok(pid) => format!("port {port} is answered by pid {pid}, not {}", child.id()),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            kill_and_wait(&mut child);
            let what = format!("redis-server did not answer PING on port {port} in 10 s ({last})");
            return Err(failed(what, log()));
        }
        thread::sleep(POLL);
    }
}

/// Sends `PING` (answered `+PONG` once the data is loaded) and `INFO server` to 127.0.0.1:`port`,
/// over TLS when `tls` is given (verifying the server against its CA); returns the answering
/// server's pid.
fn probe(port: u16, tls: Option<&TlsFiles>) -> io::Result<u32> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    match tls {
        Some(tls) => answering_pid(tls.connect(stream)?),
        None => answering_pid(stream),
    }
}

/// The pid in the reply to `PING` and `INFO server` sent on `stream`.
fn answering_pid(mut stream: impl Read + Write) -> io::Result<u32> {
    stream.write_all(b"PING\r\nINFO server\r\n")?;
    let (mut reply, mut chunk) = (Vec::new(), [0u8; 4096]);
    loop {
        let n = stream.read(&mut chunk)?;
        reply.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&reply);
        if n == 0 || !b"+PONG\r\n".starts_with(&reply[..reply.len().min(7)]) {
            return Err(io::Error::other(format!("PING got {text:?}")));
        }
        let pid = text
            .split("process_id:")
            .nth(1)
            .and_then(|r| r.split_once('\r'));
        if let Some((pid, _)) = pid {
            return pid.parse().map_err(io::Error::other);
        }
    }
}

/// `redis+unix://` and `path`, percent-encoding what is not `[A-Za-z0-9/._~-]`.
fn unix_url(path: &Path) -> String {
    #[cfg(unix)]
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
    #[cfg(not(unix))]
    let bytes = path.to_string_lossy().into_owned().into_bytes();
    let mut url = String::from("redis+unix://");
    for b in bytes {
        if b.is_ascii_alphanumeric() || b"/._~-".contains(&b) {
            url.push(b as char);
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

fn kill_and_wait(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` from the process-long helper thread, with PR_SET_PDEATHSIG on Linux.
fn spawn_child(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure calls only async-signal-safe functions (prctl, getppid, _exit).
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1); // the test process died before prctl took effect
                }
                Ok(())
            });
        }
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let serve = move || {
            rx.into_iter()
                .for_each(|(mut c, r)| drop(r.send(c.spawn())))
        };
        let spawner = thread::Builder::new().name("backbone-redis-spawner".into());
        spawner
            .spawn(serve)
            .expect("cannot start the redis-server spawner thread");
        tx
    });
    let gone = || io::Error::other("the redis-server spawner thread is gone");
    let (reply, answer) = mpsc::channel();
    spawner.send((cmd, reply)).map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_urls_percent_encode_what_a_url_path_cannot_hold() {
        let path = Path::new("/tmp/a b%#?/redis.sock");
        let url = unix_url(path);
        assert_eq!(url, "redis+unix:///tmp/a%20b%25%23%3F/redis.sock");
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str()).unwrap();
        assert_eq!(info.addr(), &redis::ConnectionAddr::Unix(path.to_owned()));
    }
}
