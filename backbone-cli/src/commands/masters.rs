//! A cluster's masters, for commands that must visit every one (`SCAN` sees one node's keys
//! only): found with `CLUSTER SHARDS` through the cluster connection, then each reached with a
//! plain connection that keeps the user's credentials, TLS material and URL options.

use backbone_redis::connection::{default_url, Connection};
use backbone_redis::settings::RedisSettings;

use super::{pairs, text};
use crate::args::Global;
use crate::error::{redis, Failure};

/// A master's address, as the cluster announces it to clients.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Master {
    /// Its preferred endpoint (`cluster-preferred-endpoint-type`), else its IP.
    pub host: String,
    /// Its TLS port for a `rediss://` URL, else its plaintext port.
    pub port: u16,
}

/// The masters of the cluster behind `connection`, each once, in the order of `CLUSTER SHARDS`;
/// masters whose health is `fail` are left out (their replica takes over, or their slots are
/// unreachable anyway).
pub async fn masters(connection: &mut Connection, tls: bool) -> Result<Vec<Master>, Failure> {
    let shards: Vec<::redis::Value> = ::redis::cmd("CLUSTER")
        .arg("SHARDS")
        .query_async(connection)
        .await
        .map_err(|e| redis("CLUSTER SHARDS (Redis 7 or later) to find the masters", e))?;
    let mut masters = Vec::new();
    for shard in shards {
        let nodes = pairs(shard)
            .into_iter()
            .find(|(name, _)| name == "nodes")
            .map(|(_, nodes)| nodes);
        let Some(::redis::Value::Array(nodes)) = nodes else {
            continue;
        };
        for node in nodes {
            let fields = pairs(node);
            let field = |wanted: &str| {
                fields
                    .iter()
                    .find(|(name, _)| name == wanted)
                    .map(|(_, value)| text(value.clone()))
            };
            if field("role").as_deref() != Some("master")
                || field("health").as_deref() == Some("fail")
            {
                continue;
            }
            let host = field("endpoint")
                .filter(|e| !e.is_empty() && e != "?" && e != "-")
                .or_else(|| field("ip"))
                .ok_or_else(|| shard_failure("a master without an address"))?;
            let (first, second) = if tls {
                ("tls-port", "port")
            } else {
                ("port", "tls-port")
            };
            let port = field(first)
                .or_else(|| field(second))
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| shard_failure(&format!("master {host} without a port")))?;
            let master = Master { host, port };
            if !masters.contains(&master) {
                masters.push(master);
            }
        }
    }
    if masters.is_empty() {
        return Err(shard_failure("no master"));
    }
    Ok(masters)
}

fn shard_failure(why: &str) -> Failure {
    Failure::Backbone(backbone_core::Error::channel(
        "CLUSTER SHARDS",
        format!("the reply names {why}"),
    ))
}

/// Whether the user's URL (the first seed) is `rediss://`.
pub fn is_tls(g: &Global) -> bool {
    first_seed(g).starts_with("rediss://")
}

/// Settings that reach `master` alone: the user's first seed URL with its host and port
/// replaced (user, password, scheme, database and options kept), the other settings as they
/// are (TLS material, timeouts, environment), not as a cluster.
pub fn master_settings(
    g: &Global,
    settings: &RedisSettings,
    master: &Master,
) -> Result<RedisSettings, Failure> {
    let seed = first_seed(g);
    let bad = |why: String| {
        Failure::Usage(format!(
            "cannot address master {}:{} from the cluster URL: {why}",
            master.host, master.port
        ))
    };
    let mut url = url::Url::parse(&seed).map_err(|e| bad(e.to_string()))?;
    let host = if master.host.contains(':') && !master.host.starts_with('[') {
        format!("[{}]", master.host) // an IPv6 address
    } else {
        master.host.clone()
    };
    url.set_host(Some(&host)).map_err(|e| bad(e.to_string()))?;
    url.set_port(Some(master.port))
        .map_err(|()| bad("the URL takes no port".into()))?;
    Ok(settings.clone().url(url.as_str()).cluster(false))
}

/// The first of the URL's comma-separated seeds (the flag, else `$REDIS_URL`, else the default).
fn first_seed(g: &Global) -> String {
    let url = g.url.clone().unwrap_or_else(default_url);
    url.split(',')
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(url: &str) -> Global {
        Global {
            url: Some(url.into()),
            cluster: true,
            environment: None,
            json: false,
            decrypt: false,
            key_prefix: backbone_redis::key_store::DEFAULT_PREFIX.into(),
            objects: None,
            objects_root: "backbone".into(),
        }
    }

    #[test]
    fn a_master_keeps_the_seed_credentials_scheme_and_options() {
        let g = global("rediss://ops:s3cret@seed-1:7000/0?protocol=resp3, rediss://seed-2:7000");
        assert!(is_tls(&g));
        let master = Master {
            host: "10.0.0.7".into(),
            port: 7002,
        };
        let settings = master_settings(&g, &RedisSettings::new(), &master).unwrap();
        assert!(!settings.is_cluster());
        assert_eq!(
            settings.redacted_url(),
            "rediss://ops:***@10.0.0.7:7002/0?protocol=resp3"
        );
        let v6 = Master {
            host: "::1".into(),
            port: 7003,
        };
        let settings =
            master_settings(&global("redis://seed:7000"), &RedisSettings::new(), &v6).unwrap();
        assert_eq!(settings.redacted_url(), "redis://[::1]:7003");
    }
}
