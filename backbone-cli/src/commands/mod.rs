//! One module per command; here the dispatch and what they share: the settings from the
//! flags, and finding a stream (its partitions, its type) before touching it.

mod aggregate;
mod dead;
mod groups;
mod masters;
mod objects;
mod pending;
mod personal;
mod show;
mod streams;
mod sweep;
mod tail;
mod trim;

use std::io::{BufRead, Write};

use backbone_redis::connection::Connection;
use backbone_redis::keys::StreamKeys;
use backbone_redis::layout::Layout;
use backbone_redis::settings::RedisSettings;
use serde_json::{Map, Value};

use crate::args::{Cli, Command, Global, Objects};
use crate::error::{redis, Failure};
use crate::output::Output;

pub async fn run(cli: &Cli, out: &Output) -> Result<(), Failure> {
    let g = &cli.global;
    match &cli.command {
        Command::Streams => streams::run(g, out).await,
        Command::Groups { uri } => groups::run(&Stream::find(g, uri).await?, out).await,
        Command::Pending { uri, group } => {
            pending::run(&Stream::find(g, uri).await?, group, out).await
        }
        Command::Show { uri, id } => show::run(&Stream::find(g, uri).await?, id, out).await,
        Command::Dead { action } => dead::run(g, action, out).await,
        Command::Tail {
            uri,
            from_start,
            group,
            count,
        } => {
            let stream = Stream::find(g, uri).await?;
            let start = match group {
                Some(group) => tail::Start::Undelivered(group.clone()),
                None if *from_start => tail::Start::First,
                None => tail::Start::Now,
            };
            tail::run(&stream, start, *count, out).await
        }
        Command::Aggregate { uri, id } => {
            aggregate::run(&Stream::find(g, uri).await?, id, out).await
        }
        Command::Trim {
            uri,
            max_len,
            before,
            yes,
        } => {
            let objects = objects::storage(g)?;
            let stream = Stream::find(g, uri).await?;
            trim::run(&stream, *max_len, before.as_deref(), objects, *yes, out).await
        }
        Command::Objects {
            action:
                Objects::Sweep {
                    uri,
                    orphans_older_than,
                    expire,
                    yes,
                },
        } => {
            let Some(objects) = objects::storage(g)? else {
                return Err(Failure::Usage(
                    "objects sweep needs the object store: give --objects file:///absolute/dir"
                        .into(),
                ));
            };
            let stream = Stream::find(g, uri).await?;
            let (orphans, expire) = (*orphans_older_than, *expire);
            sweep::run(&stream, objects, orphans, expire, *yes, out).await
        }
    }
}

/// The settings the flags give, over the environment's.
pub fn settings(g: &Global) -> RedisSettings {
    let mut settings = RedisSettings::from_env();
    if let Some(url) = &g.url {
        settings = settings.url(url);
    }
    if g.cluster {
        settings = settings.cluster(true);
    }
    if let Some(environment) = &g.environment {
        settings = settings.environment(environment);
    }
    settings
}

/// An existing backbone stream: its settings (with its partition count), layout and a
/// connection.
pub struct Stream {
    pub settings: RedisSettings,
    pub layout: Layout,
    pub connection: Connection,
    /// `--decrypt`: personal parameters in the clear.
    pub decrypt: bool,
    /// `--json`: values printed as JSON documents (an object's reference as one).
    pub json: bool,
    /// `--key-prefix`: where the subjects' keys are.
    pub key_prefix: String,
}

impl Stream {
    /// Finds stream `uri`: reads its partition count (1 when none is recorded) and checks that
    /// its first partition's stream key exists and is a stream.
    pub async fn find(g: &Global, uri: &str) -> Result<Stream, Failure> {
        let settings = settings(g).uri(uri);
        let address = settings
            .address()
            .map_err(|e| Failure::Usage(e.to_string()))?;
        let mut connection = settings.open_connection("cli").await?;
        let count_key = StreamKeys::new(&address).partition_count();
        let recorded: Option<String> = ::redis::cmd("GET")
            .arg(&count_key)
            .query_async(&mut connection)
            .await
            .map_err(|e| redis(format!("GET {count_key}"), e))?;
        let count = match recorded {
            None => 1,
            Some(text) => text.parse().map_err(|_| {
                Failure::Usage(format!("{count_key} holds {text:?}, not a partition count"))
            })?,
        };
        let layout = Layout::new(&address, count)?;
        let stream = layout.partition(0).stream().to_owned();
        let kind: String = ::redis::cmd("TYPE")
            .arg(&stream)
            .query_async(&mut connection)
            .await
            .map_err(|e| redis(format!("TYPE {stream}"), e))?;
        match kind.as_str() {
            "stream" => {}
            "none" => {
                return Err(Failure::NotFound(format!(
                    "stream {address} (no key {stream}; `backbone streams` lists them)"
                )))
            }
            other => {
                return Err(Failure::Usage(format!(
                    "{stream} is a {other}, not a stream: not a backbone stream"
                )))
            }
        }
        Ok(Stream {
            settings: settings.partitions(count),
            layout,
            connection,
            decrypt: g.decrypt,
            json: g.json,
            key_prefix: g.key_prefix.clone(),
        })
    }

    /// A copy of the connection, for a command.
    pub fn conn(&self) -> Connection {
        self.connection.clone()
    }
}

/// Asks `question` on the terminal unless `yes`; `Err(NotConfirmed)` unless answered `y`.
pub fn confirm(question: &str, yes: bool) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => Err(Failure::NotConfirmed),
    }
}

/// A JSON object from `(key, value)` pairs.
pub fn object(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A field value as JSON: the JSON it holds, else a string.
pub fn field_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// `(name, value)` pairs of a `XRANGE`/`XINFO` style flat array or map.
pub fn pairs(value: ::redis::Value) -> Vec<(String, ::redis::Value)> {
    use ::redis::Value as V;
    let items = match value {
        V::Array(items) => items,
        V::Map(map) => map.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return Vec::new(),
    };
    items
        .chunks(2)
        .filter_map(|pair| match pair {
            [name, value] => Some((text(name.clone()), value.clone())),
            _ => None,
        })
        .collect()
}

/// A reply value as text (`-` for nil).
pub fn text(value: ::redis::Value) -> String {
    use ::redis::Value as V;
    match value {
        V::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        V::SimpleString(s) => s,
        V::Int(n) => n.to_string(),
        V::Double(d) => d.to_string(),
        V::Nil => "-".to_owned(),
        other => format!("{other:?}"),
    }
}

/// A reply value as JSON (numbers stay numbers, nil is null).
pub fn json(value: ::redis::Value) -> Value {
    use ::redis::Value as V;
    match value {
        V::Int(n) => Value::from(n),
        V::Nil => Value::Null,
        V::Double(d) => Value::from(d),
        other => Value::String(text(other)),
    }
}
