//! Tests of `backbone_redis::testing`, against real Redis servers.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use backbone_redis::testing::{
    no_redis_message, shared, unique_name, RedisServer, RedisSource, ServerOptions, TestRedis,
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
