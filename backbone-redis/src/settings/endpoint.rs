//! From settings to an [`Endpoint`]: the URL (or a cluster's seed URLs) parsed, the TLS
//! material read and checked, the client built. Nothing connects here.

use std::path::{Path, PathBuf};
use std::sync::Once;

use backbone_core::Error;
use redis::{ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates};

use super::redact::{redact_url, scrub_password, split_seeds};
use super::{RedisSettings, CONNECTION_TIMEOUT, RESPONSE_TIMEOUT};
use crate::connection::{ClusterSeeds, Endpoint, Target};

impl RedisSettings {
    /// Checks the URL(s) and the TLS material and builds the client.
    pub(crate) fn endpoint(&self) -> Result<Endpoint, Error> {
        let url = self.resolved_url();
        let cluster = self.is_cluster();
        let redacted = redact_url(&url);
        let scrub = |text: String| scrub_password(&url, text);
        let bad_url =
            |why: String| Error::Config(format!("invalid Redis URL {redacted:?}: {}", scrub(why)));
        let seeds = split_seeds(&url);
        if seeds.len() > 1 && !cluster {
            return Err(bad_url(format!(
                "{} comma-separated URLs are seed nodes of a Redis Cluster: set cluster(true) \
                 (or REDIS_CLUSTER=1), or give one URL",
                seeds.len()
            )));
        }
        let tls_url = seeds[0].starts_with("rediss://");
        if seeds.iter().any(|s| s.starts_with("rediss://") != tls_url) {
            return Err(bad_url(
                "the seed URLs mix rediss:// and plaintext; a cluster is reached one way".into(),
            ));
        }
        let certificates = self.tls_certificates(tls_url).map_err(|why| match why {
            TlsProblem::Bad(e) => e,
            TlsProblem::NotTls(why) => bad_url(why),
        })?;
        let infos = seeds
            .iter()
            .map(|seed| {
                let seed = if self.insecure && !seed.contains('#') {
                    format!("{seed}#insecure")
                } else {
                    (*seed).to_owned()
                };
                seed.as_str().into_connection_info()
            })
            .collect::<Result<Vec<ConnectionInfo>, _>>()
            .map_err(|e| bad_url(e.to_string()))?;
        if tls_url {
            install_crypto_provider();
            if self.insecure {
                tracing::warn!(url = %redacted, "TLS certificate verification is OFF (danger_accept_invalid_certificates): for development only");
            }
        }
        for info in &infos {
            if let ConnectionAddr::Unix(path) = info.addr() {
                if cluster {
                    return Err(bad_url(format!(
                        "a Redis Cluster is reached over TCP; {path:?} is a unix socket"
                    )));
                }
                if !cfg!(unix) {
                    return Err(bad_url(format!(
                        "unix sockets ({path:?}) need a unix system"
                    )));
                }
            }
        }
        let addresses: Vec<String> = infos.iter().map(|i| i.addr().to_string()).collect();
        let target = if cluster {
            let seeds = ClusterSeeds {
                nodes: infos,
                certificates,
                insecure: self.insecure,
            };
            // Built once here so that bad settings fail now, not at the first connect.
            seeds
                .client(CONNECTION_TIMEOUT, RESPONSE_TIMEOUT)
                .map_err(|e| bad_url(e.to_string()))?;
            Target::Cluster(seeds)
        } else {
            let info = infos.into_iter().next().expect("one URL at least");
            let client = match certificates {
                Some(certificates) => redis::Client::build_with_tls(info, certificates),
                None => redis::Client::open(info),
            }
            .map_err(|e| bad_url(e.to_string()))?;
            Target::Single(client)
        };
        Ok(Endpoint {
            target,
            connection_timeout: self.connection_timeout.unwrap_or(CONNECTION_TIMEOUT),
            response_timeout: self.response_timeout.unwrap_or(RESPONSE_TIMEOUT),
            address: if cluster {
                format!("the cluster of {}", addresses.join(","))
            } else {
                addresses.join(",")
            },
        })
    }

    /// The TLS material for a `rediss://` URL (`None` without TLS), from the settings or the
    /// variables; TLS material for a plaintext URL is refused.
    fn tls_certificates(&self, tls_url: bool) -> Result<Option<TlsCertificates>, TlsProblem> {
        let env = RedisSettings::from_env();
        let ca = self.tls_ca.clone().or(env.tls_ca);
        let cert = self.tls_cert.clone().or(env.tls_cert);
        let key = self.tls_key.clone().or(env.tls_key);
        if !tls_url {
            if ca.is_some() || cert.is_some() || key.is_some() || self.insecure {
                return Err(TlsProblem::NotTls(
                    "TLS settings are given (a CA, a client certificate or key, from the settings \
                     or REDIS_TLS_CA/REDIS_TLS_CERT/REDIS_TLS_KEY, or accepting invalid \
                     certificates) but the URL is not rediss://; refusing to connect without TLS"
                        .into(),
                ));
            }
            return Ok(None);
        }
        let client_tls = client_tls(cert, key).map_err(TlsProblem::Bad)?;
        let root_cert = match &ca {
            Some(ca) => Some(read_pem(ca, "CA", "REDIS_TLS_CA").map_err(TlsProblem::Bad)?),
            None => None,
        };
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

/// Why TLS material could not be used.
enum TlsProblem {
    /// A file is missing or holds no PEM; the error says which.
    Bad(Error),
    /// TLS material for a URL that is not `rediss://`.
    NotTls(String),
}

fn client_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<ClientTlsConfig>, Error> {
    match (&cert, &key) {
        (Some(cert), Some(key)) => Ok(Some(ClientTlsConfig {
            client_cert: read_pem(cert, "client certificate", "REDIS_TLS_CERT")?,
            client_key: read_pem(key, "client key", "REDIS_TLS_KEY")?,
        })),
        (None, None) => Ok(None),
        _ => Err(Error::Config(
            "a TLS client certificate needs its key and a key its certificate: set both \
             (tls_client_cert, or REDIS_TLS_CERT and REDIS_TLS_KEY)"
                .into(),
        )),
    }
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
