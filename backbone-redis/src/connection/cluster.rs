//! A Redis Cluster connection: redis-rs's cluster client, which keeps one multiplexed
//! connection per node, sends each command to the master of its keys' slot and follows
//! `MOVED`, `ASK` and failovers by itself.

use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{ConnectionInfo, RedisError, RedisResult, TlsCertificates, TlsMode};

/// How often one command is retried on a cluster, at most (redis-rs's default is 16).
const RETRIES: u32 = 12;

/// A cluster's seed nodes and the TLS material for every node.
#[derive(Clone)]
pub(crate) struct ClusterSeeds {
    pub nodes: Vec<ConnectionInfo>,
    pub certificates: Option<TlsCertificates>,
    /// Accept any certificate (`danger_accept_invalid_certificates`).
    pub insecure: bool,
}

impl ClusterSeeds {
    /// A client whose connections wait `response_timeout` for each answer, retries and
    /// redirections included.
    pub(crate) fn client(
        &self,
        connection_timeout: Duration,
        response_timeout: Duration,
    ) -> RedisResult<ClusterClient> {
        // Retries (CLUSTERDOWN while a replica is promoted, TRYAGAIN during a migration, a
        // broken node connection) wait 50 ms to 1 s each, all within `response_timeout`.
        let mut builder = ClusterClientBuilder::new(self.nodes.clone())
            .connection_timeout(connection_timeout)
            .response_timeout(response_timeout)
            .retries(RETRIES)
            .min_retry_wait(50)
            .max_retry_wait(1000);
        if let Some(certificates) = &self.certificates {
            builder = builder.certs(certificates.clone());
        }
        if self.insecure {
            builder = builder.tls(TlsMode::Insecure);
        }
        builder.build()
    }
}

/// Connects to the cluster and names this client's connection on every node.
pub(super) async fn open(
    client: &ClusterClient,
    name: &str,
) -> Result<ClusterConnection, RedisError> {
    let mut connection = client.get_async_connection().await?;
    let mut setname = redis::cmd("CLIENT");
    setname.arg("SETNAME").arg(name);
    let routing = RoutingInfo::MultiNode((
        MultipleNodeRoutingInfo::AllNodes,
        Some(ResponsePolicy::AllSucceeded),
    ));
    let named = connection.route_command(setname, routing).await;
    super::named_result(named.map(drop), name)?;
    Ok(connection)
}
