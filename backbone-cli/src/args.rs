//! The command line: global settings and one subcommand each.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// See and operate backbone's Redis streams.
#[derive(Debug, Parser)]
#[command(name = "backbone", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Where to connect and how to print.
#[derive(Debug, Args)]
pub struct Global {
    /// The Redis URL (or a cluster's comma-separated seeds); default `$REDIS_URL`, else
    /// redis://127.0.0.1:6379. TLS material comes from REDIS_TLS_CA, REDIS_TLS_CERT, REDIS_TLS_KEY.
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// The URL names a Redis Cluster (default: `$REDIS_CLUSTER`).
    #[arg(long, global = true)]
    pub cluster: bool,
    /// The streams' environment.
    #[arg(long, short = 'e', global = true)]
    pub environment: Option<String>,
    /// One JSON document per line instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Show personal parameters in the clear, opened with the key store's keys (without it
    /// they show as sealed or forgotten).
    #[arg(long, global = true)]
    pub decrypt: bool,
    /// The prefix of the key store's keys (the data subjects' keys).
    #[arg(long, global = true, default_value = backbone_redis::key_store::DEFAULT_PREFIX)]
    pub key_prefix: String,
    /// The object store of `storage = "object"` events, as a URL: `file:///absolute/dir`, the
    /// directory the producers' store writes under (this build reads local files only).
    /// `trim`, `dead purge` and `objects sweep` delete objects through it.
    #[arg(long, global = true, env = "BACKBONE_OBJECTS", hide_env_values = true)]
    pub objects: Option<String>,
    /// Where in the object store backbone keeps objects: the producers' `ObjectStorage::root`.
    #[arg(long, global = true, default_value = "backbone")]
    pub objects_root: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every backbone stream: environment, uri, partition, length, first and last entry, groups
    /// (on a cluster, from every master).
    Streams,
    /// The groups of a stream: lag, pending, last delivered, and their consumers' idle times.
    Groups {
        /// The stream's uri.
        uri: String,
    },
    /// The entries a group holds: by whom, for how long, how often delivered.
    Pending {
        /// The stream's uri.
        uri: String,
        /// The group.
        group: String,
    },
    /// One event, whole: its entry and its decoded parameters.
    Show {
        /// The stream's uri.
        uri: String,
        /// A stream id (`1700000000000-0`) or a message id (a UUID).
        id: String,
    },
    /// Events as they arrive, with their decoded parameters (read with XREAD: no group is
    /// touched).
    Tail {
        /// The stream's uri.
        uri: String,
        /// From the first entry instead of from now.
        #[arg(long)]
        from_start: bool,
        /// From what this group has not been delivered yet (its last-delivered-id on each
        /// partition, from `XINFO GROUPS`), then live. The group is only looked at: its
        /// consumers still get every entry.
        #[arg(long, conflicts_with = "from_start")]
        group: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// An event-store aggregate's events and version.
    Aggregate {
        /// The stream's uri.
        uri: String,
        /// The aggregate's id.
        id: String,
    },
    /// A group's dead letters.
    Dead {
        #[command(subcommand)]
        action: Dead,
    },
    /// Safe trimming: never removes what a group has pending or has not read yet.
    Trim {
        /// The stream's uri.
        uri: String,
        /// Keep about this many entries.
        #[arg(long, conflicts_with = "before", required_unless_present = "before")]
        max_len: Option<u64>,
        /// Remove the entries before this stream id.
        #[arg(long)]
        before: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// A stream's objects in the object store (`--objects`).
    Objects {
        #[command(subcommand)]
        action: Objects,
    },
}

#[derive(Debug, Subcommand)]
pub enum Objects {
    /// Deletes, on every partition, the objects that nothing refers to any more and, with
    /// `--expire`, those past a retention (whatever refers to them).
    #[command(group(clap::ArgGroup::new("sweep").required(true).multiple(true)))]
    Sweep {
        /// The stream's uri.
        uri: String,
        /// Delete the objects of events created this long (`1h`, `30m`) before the oldest
        /// entry that no entry, dead letter or replayed entry refers to; at least 1m, and more
        /// than the producers' send timeout plus clock skew.
        #[arg(long, group = "sweep", value_parser = humantime::parse_duration)]
        orphans_older_than: Option<Duration>,
        /// Delete the objects of events created more than this long ago (`7d`): entries and
        /// dead letters still naming them then fail as a missing object.
        #[arg(long, group = "sweep", value_parser = humantime::parse_duration)]
        expire: Option<Duration>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum Dead {
    /// The dead letters, oldest first.
    List { uri: String, group: String },
    /// One dead letter, whole (an inline one with its decoded parameters, as `show` prints them).
    Show {
        /// The stream's uri.
        uri: String,
        /// The group.
        group: String,
        /// The dead letter's id.
        id: String,
    },
    /// Sends dead letters to the stream again.
    Replay(Chosen),
    /// Deletes dead letters.
    Purge(Chosen),
}

/// The dead letters a replay or purge acts on.
#[derive(Debug, Args)]
pub struct Chosen {
    /// The stream's uri.
    pub uri: String,
    /// The group.
    pub group: String,
    /// The dead letter's id (or `--all`).
    pub id: Option<String>,
    /// Every dead letter of the group.
    #[arg(long, conflicts_with = "id")]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}
