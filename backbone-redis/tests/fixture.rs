//! Tests of `backbone_redis::testing`, against real Redis servers.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::OnceLock;
use std::time::Duration;

use backbone_redis::testing::{
    no_redis_message, shared, unique_name, RedisServer, RedisSource, ServerOptions, TestRedis,
    TlsMode,
};
use redis::AsyncCommands;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn connect(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await
}

async fn ping(url: &str) -> redis::RedisResult<String> {
    redis::cmd("PING")
        .query_async(&mut connect(url).await?)
        .await
}

fn answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

#[tokio::test]
async fn test_redis_start_answers_ping() -> TestResult {
    let redis = TestRedis::start().await?;
    assert_eq!(ping(redis.url()).await?, "PONG");
    if std::env::var_os("REDIS_URL").is_none() {
        assert_eq!(redis.source(), RedisSource::Spawned);
        assert!(
            redis.url().starts_with("redis://127.0.0.1:"),
            "{}",
            redis.url()
        );
        assert!(!redis.url().contains(":6379/"), "{}", redis.url());
    }
    Ok(())
}

#[tokio::test]
async fn servers_are_separate() -> TestResult {
    let a = RedisServer::spawn(ServerOptions::default())?;
    let b = RedisServer::spawn(ServerOptions::default())?;
    assert_ne!(a.port(), b.port());
    assert_ne!(a.port(), 6379);
    assert_ne!(b.port(), 6379);
    assert_eq!(a.url(), format!("redis://127.0.0.1:{}/", a.port()));
    let key = unique_name("separate");
    connect(a.url())
        .await?
        .set::<_, _, ()>(&key, "in a")
        .await?;
    let in_a: Option<String> = connect(a.url()).await?.get(&key).await?;
    let in_b: Option<String> = connect(b.url()).await?.get(&key).await?;
    assert_eq!(in_a.as_deref(), Some("in a"));
    assert_eq!(in_b, None);
    Ok(())
}

#[tokio::test]
async fn appendonly_survives_restart() -> TestResult {
    let mut server = RedisServer::spawn(ServerOptions {
        appendonly: true,
        ..Default::default()
    })?;
    let port = server.port();
    connect(server.url())
        .await?
        .set::<_, _, ()>("kept", "yes")
        .await?;
    server.restart()?;
    assert_eq!(server.port(), port);
    let kept: Option<String> = connect(server.url()).await?.get("kept").await?;
    assert_eq!(kept.as_deref(), Some("yes"));
    Ok(())
}

#[tokio::test]
async fn without_aof_restart_loses_data() -> TestResult {
    let mut server = RedisServer::spawn(ServerOptions::default())?;
    connect(server.url())
        .await?
        .set::<_, _, ()>("lost", "yes")
        .await?;
    server.stop()?;
    assert!(!answers(server.port()), "a stopped server still answers");
    server.stop()?; // stopping twice is fine
    server.start()?;
    let lost: Option<String> = connect(server.url()).await?.get("lost").await?;
    assert_eq!(lost, None);
    Ok(())
}

#[tokio::test]
async fn extra_args_are_passed() -> TestResult {
    let args = vec!["--maxmemory".to_owned(), "12345678".to_owned()];
    let server = RedisServer::spawn(ServerOptions {
        appendonly: false,
        extra_args: args,
        ..Default::default()
    })?;
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query_async(&mut connect(server.url()).await?)
        .await?;
    assert_eq!(config, ["maxmemory", "12345678"]);
    Ok(())
}

#[test]
fn a_failing_server_is_reported_with_its_log() {
    let args = vec!["--no-such-directive".to_owned(), "1".to_owned()];
    let options = ServerOptions {
        appendonly: false,
        extra_args: args,
        ..Default::default()
    };
    let message = RedisServer::spawn(options)
        .expect_err("bad directive accepted")
        .to_string();
    assert!(message.contains("redis-server.log"), "{message}");
    assert!(message.contains("no-such-directive"), "{message}");
}

#[tokio::test]
async fn drop_kills_the_server() -> TestResult {
    let server = RedisServer::spawn(ServerOptions::default())?;
    let port = server.port();
    assert!(answers(port));
    drop(server);
    assert!(!answers(port), "port {port} still answers after drop");

    if std::env::var_os("REDIS_URL").is_none() {
        let redis = TestRedis::start().await?;
        let port: u16 = redis
            .url()
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap()
            .parse()?;
        assert!(answers(port));
        drop(redis);
        assert!(
            !answers(port),
            "port {port} still answers after TestRedis drop"
        );
    }
    Ok(())
}

#[test]
fn server_outlives_the_thread_that_spawned_it() -> TestResult {
    // PR_SET_PDEATHSIG fires when the spawning *thread* ends: the fixture must not spawn from it.
    let server = std::thread::spawn(|| RedisServer::spawn(ServerOptions::default()))
        .join()
        .expect("spawning thread panicked")?;
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        answers(server.port()),
        "the server died with the thread that spawned it"
    );
    Ok(())
}

static SHARED_URL: OnceLock<String> = OnceLock::new();

async fn check_shared() -> TestResult {
    let first = shared().await?;
    let again = shared().await?;
    assert!(std::ptr::eq(first, again));
    let seen = SHARED_URL.get_or_init(|| first.url().to_owned());
    assert_eq!(seen, first.url());
    assert_eq!(ping(first.url()).await?, "PONG");
    Ok(())
}

#[tokio::test]
async fn shared_is_shared_a() -> TestResult {
    check_shared().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_is_shared_b() -> TestResult {
    check_shared().await
}

#[test]
fn no_redis_message_says_how_to_get_redis() {
    let message = no_redis_message();
    for needle in [
        "REDIS_URL",
        "apt-get install redis-server",
        "Docker",
        "REDIS_SERVER_BIN",
    ] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from {message:?}"
        );
    }
}

#[test]
fn unique_names_are_distinct_and_clean() {
    let names: HashSet<String> = (0..1000).map(|_| unique_name("stream")).collect();
    assert_eq!(names.len(), 1000);
    let odd = unique_name("a b/{c}:é");
    assert!(odd.starts_with("a_b__c___-"), "{odd}");
    for name in names.iter().chain([&odd]) {
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        assert!(name.chars().all(ok), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// TLS and unix sockets
// ---------------------------------------------------------------------------------------------

/// redis-rs needs a process-wide rustls CryptoProvider.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `PING` through `client`, failing after 10 s rather than hanging.
async fn ping_client(client: redis::Client) -> redis::RedisResult<String> {
    let ping = async move {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(10), ping).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer in 10 s",
        ))),
    }
}

fn tls_server(mode: TlsMode) -> RedisServer {
    RedisServer::spawn(ServerOptions {
        tls: Some(mode),
        ..Default::default()
    })
    .expect("spawn a TLS redis-server")
}

#[tokio::test]
async fn tls_server_answers_ping_over_rediss_with_its_ca() -> TestResult {
    install_crypto_provider();
    let server = tls_server(TlsMode::ServerOnly);
    let port = server.port();
    assert_ne!(port, 6379);
    assert_eq!(server.url(), format!("rediss://127.0.0.1:{port}/"));
    let tls = server.tls().expect("a TLS server has TLS files");
    assert_eq!(tls.mode(), TlsMode::ServerOnly);
    let certs = tls.certificates_without_client();
    let client = redis::Client::build_with_tls(server.url(), certs)?;
    assert_eq!(ping_client(client).await?, "PONG");
    let client = redis::Client::build_with_tls(server.url(), tls.certificates())?;
    assert_eq!(ping_client(client).await?, "PONG");
    assert_eq!(ping_client(server.client()?).await?, "PONG");
    Ok(())
}

#[tokio::test]
async fn a_rediss_client_without_the_ca_is_refused() -> TestResult {
    install_crypto_provider();
    let server = tls_server(TlsMode::ServerOnly);
    let refused = ping_client(redis::Client::open(server.url())?).await;
    let message = refused
        .expect_err("a client without the CA was accepted")
        .to_string();
    eprintln!("without the CA: {message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    Ok(())
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() -> TestResult {
    install_crypto_provider();
    let server = tls_server(TlsMode::Mutual);
    let tls = server.tls().unwrap();
    assert_eq!(tls.mode(), TlsMode::Mutual);
    let without = redis::Client::build_with_tls(server.url(), tls.certificates_without_client())?;
    let refused = ping_client(without).await;
    eprintln!("without a client certificate: {refused:?}");
    let message = refused
        .expect_err("no client certificate, yet PONG")
        .to_string();
    // The server's alert: CertificateRequired under TLS 1.3, HandshakeFailure under 1.2.
    assert!(
        message.contains("CertificateRequired") || message.contains("HandshakeFailure"),
        "{message}"
    );
    let with = redis::Client::build_with_tls(server.url(), tls.certificates())?;
    assert_eq!(ping_client(with).await?, "PONG");
    assert_eq!(ping_client(server.client()?).await?, "PONG");
    Ok(())
}

#[tokio::test]
async fn a_tls_server_does_not_answer_plaintext() -> TestResult {
    let server = tls_server(TlsMode::ServerOnly);
    let plain = format!("redis://127.0.0.1:{}/", server.port());
    let refused = ping_client(redis::Client::open(plain.as_str())?).await;
    eprintln!("plaintext PING: {refused:?}");
    assert!(
        refused.is_err(),
        "plaintext PING on the TLS port: {refused:?}"
    );

    let addr = SocketAddr::from(([127, 0, 0, 1], server.port()));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply); // closed, reset or timed out: all fine
    assert!(
        !String::from_utf8_lossy(&reply).contains("PONG"),
        "the TLS port answered plaintext: {reply:?}"
    );
    Ok(())
}

#[tokio::test]
async fn tls_files_exist_and_each_server_has_its_own_ca() -> TestResult {
    let a = tls_server(TlsMode::ServerOnly);
    let b = tls_server(TlsMode::Mutual);
    assert!(a.tls().is_some() && b.tls().is_some());
    for server in [&a, &b] {
        let tls = server.tls().unwrap();
        let files = [
            (tls.ca_cert_path(), "CERTIFICATE"),
            (tls.server_cert_path(), "CERTIFICATE"),
            (tls.server_key_path(), "PRIVATE KEY"),
            (tls.client_cert_path(), "CERTIFICATE"),
            (tls.client_key_path(), "PRIVATE KEY"),
        ];
        for (path, kind) in files {
            assert_eq!(path.parent(), Some(server.dir()), "{path:?}");
            let text = std::fs::read_to_string(path)?;
            assert!(
                text.starts_with(&format!("-----BEGIN {kind}-----")),
                "{path:?}"
            );
            if kind == "PRIVATE KEY" {
                let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{path:?}");
            }
        }
        assert_eq!(
            std::fs::read_to_string(tls.ca_cert_path())?,
            tls.ca_cert_pem()
        );
        assert_eq!(
            std::fs::read_to_string(tls.client_cert_path())?,
            tls.client_cert_pem()
        );
        assert_eq!(
            std::fs::read_to_string(tls.client_key_path())?,
            tls.client_key_pem()
        );
        let shown = format!("{server:?} {:?}", tls.certificates());
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        let key_body = tls.client_key_pem().lines().nth(1).unwrap();
        assert!(!shown.contains(key_body), "{shown}");
    }
    let (a, b) = (a.tls().unwrap(), b.tls().unwrap());
    assert_ne!(a.ca_cert_pem(), b.ca_cert_pem());
    assert_ne!(a.client_cert_pem(), b.client_cert_pem());
    assert_ne!(a.client_key_pem(), b.client_key_pem());
    assert!(RedisServer::spawn(ServerOptions::default())?
        .tls()
        .is_none());
    Ok(())
}

#[tokio::test]
async fn unix_socket_answers_ping() -> TestResult {
    let server = RedisServer::spawn(ServerOptions {
        unix_socket: true,
        ..Default::default()
    })?;
    let path = server.unix_socket_path().expect("a socket was asked for");
    assert_eq!(path, server.dir().join("redis.sock"));
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{path:?}");
    let url = server.unix_socket_url().unwrap();
    assert!(url.starts_with("redis+unix:///"), "{url}");
    let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?;
    assert_eq!(info.addr(), &redis::ConnectionAddr::Unix(path.to_owned()));
    assert_eq!(ping(&url).await?, "PONG");
    assert_eq!(ping(server.url()).await?, "PONG");
    assert_eq!(
        RedisServer::spawn(ServerOptions::default())?.unix_socket_url(),
        None
    );
    Ok(())
}

#[tokio::test]
async fn a_tls_server_restarts_with_its_certificates_and_socket() -> TestResult {
    install_crypto_provider();
    let mut server = RedisServer::spawn(ServerOptions {
        appendonly: true,
        tls: Some(TlsMode::Mutual),
        unix_socket: true,
        ..Default::default()
    })?;
    let (port, ca) = (
        server.port(),
        server.tls().unwrap().ca_cert_pem().to_owned(),
    );
    let unix = server.unix_socket_url().unwrap();
    connect(&unix).await?.set::<_, _, ()>("kept", "yes").await?;
    server.restart()?;
    assert_eq!(server.port(), port);
    assert_eq!(server.tls().unwrap().ca_cert_pem(), ca);
    let mut conn = server.client()?.get_multiplexed_async_connection().await?;
    let kept: Option<String> = conn.get("kept").await?;
    assert_eq!(kept.as_deref(), Some("yes"));
    assert_eq!(ping(&unix).await?, "PONG");
    Ok(())
}
