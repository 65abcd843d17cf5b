//! TLS for a [`RedisServer`](super::RedisServer): a CA, a server certificate and a client
//! certificate made at test time with rcgen (no network, no `openssl` binary), written as PEM
//! files into the server's own directory.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backbone_core::Error;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// How a TLS [`RedisServer`](super::RedisServer) treats its clients; set it in
/// [`ServerOptions::tls`](super::ServerOptions::tls).
///
/// ```
/// use backbone_redis::testing::{ServerOptions, TlsMode};
/// let mutual = ServerOptions { tls: Some(TlsMode::Mutual), ..Default::default() };
/// assert_eq!(mutual.tls, Some(TlsMode::Mutual));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// `--tls-auth-clients no`: clients must trust the server's CA, and need no certificate.
    ServerOnly,
    /// `--tls-auth-clients yes`: mutual TLS; clients must also present a certificate signed by
    /// the server's CA (the generated client certificate is one).
    Mutual,
}

impl TlsMode {
    /// The value of `--tls-auth-clients`.
    pub(super) fn auth_clients(self) -> &'static str {
        match self {
            TlsMode::ServerOnly => "no",
            TlsMode::Mutual => "yes",
        }
    }
}

/// The certificates of a TLS [`RedisServer`](super::RedisServer), made for it alone: a CA of
/// its own, a server certificate for `127.0.0.1` and `localhost`, and a client certificate, all
/// signed by that CA (ECDSA P-256). They are PEM files in the server's directory, removed with
/// it; [`RedisServer::tls`](super::RedisServer::tls) gives them.
///
/// `Debug` shows the mode and the paths, never key material.
///
/// ```no_run
/// # fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use backbone_redis::testing::{RedisServer, ServerOptions, TlsMode};
/// let server = RedisServer::spawn(ServerOptions { tls: Some(TlsMode::Mutual), ..Default::default() })?;
/// let tls = server.tls().expect("a TLS server");
/// let client = redis::Client::build_with_tls(server.url(), tls.certificates())?;
/// println!("CA in {:?}, client key in {:?}", tls.ca_cert_path(), tls.client_key_path());
/// # Ok(()) }
/// ```
pub struct TlsFiles {
    mode: TlsMode,
    ca_cert: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    ca_cert_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
    /// What the launch probe connects with: trusts the CA, presents the client certificate.
    probe: Arc<rustls::ClientConfig>,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("mode", &self.mode)
            .field("ca_cert", &self.ca_cert)
            .field("server_cert", &self.server_cert)
            .field("server_key", &self.server_key)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .finish_non_exhaustive()
    }
}

impl TlsFiles {
    /// Makes the CA and both certificates, and writes them into `dir`: `ca.crt`, `server.crt`,
    /// `server.key`, `client.crt`, `client.key` (keys with mode 0600).
    pub(super) fn generate(dir: &Path, mode: TlsMode) -> Result<TlsFiles, Error> {
        let made = |what: &'static str| move |e: rcgen::Error| Error::channel(what, e);

        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(made("CA params"))?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_name = super::unique_name("backbone test CA");
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(made("generate the CA key"))?;
        let ca_cert = ca.self_signed(&ca_key).map_err(made("sign the CA"))?;
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(names).map_err(made("certificate params"))?;
            params.distinguished_name.push(DnType::CommonName, cn);
            params.use_authority_key_identifier_extension = true;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().map_err(made("generate a key"))?;
            let cert = params
                .signed_by(&key, &issuer)
                .map_err(made("sign a certificate"))?;
            Ok::<_, Error>((cert, key))
        };
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let (server_cert, server_key) =
            leaf(names, "localhost", ExtendedKeyUsagePurpose::ServerAuth)?;
        let client_cn = "backbone test client";
        let (client_cert, client_key) =
            leaf(vec![], client_cn, ExtendedKeyUsagePurpose::ClientAuth)?;

        let probe = probe_config(&ca_cert, &client_cert, &client_key)?;
        let files = TlsFiles {
            mode,
            ca_cert: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            ca_cert_pem: ca_cert.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            probe,
        };
        write_file(&files.ca_cert, &files.ca_cert_pem, 0o644)?;
        write_file(&files.server_cert, &server_cert.pem(), 0o644)?;
        write_file(&files.server_key, &server_key.serialize_pem(), 0o600)?;
        write_file(&files.client_cert, &files.client_cert_pem, 0o644)?;
        write_file(&files.client_key, &files.client_key_pem, 0o600)?;
        Ok(files)
    }

    /// Whether clients need a certificate.
    ///
    /// ```no_run
    /// # let tls: &backbone_redis::testing::TlsFiles = todo!();
    /// assert_eq!(tls.mode(), backbone_redis::testing::TlsMode::Mutual);
    /// ```
    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// The CA certificate (PEM) that signed the server and client certificates.
    ///
    /// ```no_run
    /// # let tls: &backbone_redis::testing::TlsFiles = todo!();
    /// assert!(tls.ca_cert_path().ends_with("ca.crt"));
    /// ```
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca_cert
    }

    /// The server's certificate (PEM), for `127.0.0.1` and `localhost`.
    ///
    /// ```no_run
    /// # let tls: &backbone_redis::testing::TlsFiles = todo!();
    /// assert!(tls.server_cert_path().ends_with("server.crt"));
    /// ```
    pub fn server_cert_path(&self) -> &Path {
        &self.server_cert
    }

    /// The server's private key (PKCS#8 PEM, mode 0600).
    ///
    /// ```no_run
    /// # let tls: &backbone_redis::testing::TlsFiles = todo!();
    /// assert!(tls.server_key_path().ends_with("server.key"));
    /// ```
    pub fn server_key_path(&self) -> &Path {
        &self.server_key
    }

    /// The client certificate (PEM), signed by the CA.
    ///
    /// ```no_run
    /// # let tls: &backbone_redis::testing::TlsFiles = todo!();
    /// assert!(tls.client_cert_path().ends_with("client.crt"));
    /// ```
    pub fn client_cert_path(&self) -> &Path {
        &self.client_cert
    }

    /// The client certificate's private key (PKCS#8 PEM, mode 0600).
    ///
    /// ```no_run
    /// # let tls: &backbone_redis::testing::TlsFiles = todo!();
    /// assert!(tls.client_key_path().ends_with("client.key"));
    /// ```
    pub fn client_key_path(&self) -> &Path {
        &self.client_key
    }

    /// The CA certificate, PEM: what a client must trust.
    ///
    /// ```no_run
    /// # let tls: &backbone_redis::testing::TlsFiles = todo!();
    /// assert!(tls.ca_cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    /// ```
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The client certificate, PEM.
    ///
    /// ```no_run
    /// # let tls: &backbone_redis::testing::TlsFiles = todo!();
    /// assert!(tls.client_cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    /// ```
    pub fn client_cert_pem(&self) -> &str {
        &self.client_cert_pem
    }

    /// The client certificate's private key, PEM (PKCS#8). Never print it.
    ///
    /// ```no_run
    /// # let tls: &backbone_redis::testing::TlsFiles = todo!();
    /// assert!(tls.client_key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
    /// ```
    pub fn client_key_pem(&self) -> &str {
        &self.client_key_pem
    }

    /// For [`redis::Client::build_with_tls`]: trust the CA and present the client certificate
    /// (which a [`TlsMode::ServerOnly`] server does not ask for).
    ///
    /// ```no_run
    /// # fn f(server: &backbone_redis::testing::RedisServer) -> redis::RedisResult<()> {
    /// let certs = server.tls().unwrap().certificates();
    /// let client = redis::Client::build_with_tls(server.url(), certs)?;
    /// # Ok(()) }
    /// ```
    pub fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: self.client_cert_pem.clone().into_bytes(),
                client_key: self.client_key_pem.clone().into_bytes(),
            }),
            root_cert: Some(self.ca_cert_pem.clone().into_bytes()),
        }
    }

    /// For [`redis::Client::build_with_tls`]: trust the CA, present no client certificate
    /// (a [`TlsMode::Mutual`] server refuses such a client).
    ///
    /// ```no_run
    /// # fn f(server: &backbone_redis::testing::RedisServer) -> redis::RedisResult<()> {
    /// let certs = server.tls().unwrap().certificates_without_client();
    /// let client = redis::Client::build_with_tls(server.url(), certs)?;
    /// # Ok(()) }
    /// ```
    pub fn certificates_without_client(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(self.ca_cert_pem.clone().into_bytes()),
        }
    }

    /// A TLS session to 127.0.0.1 over `stream`, verified against the CA, for the launch probe.
    pub(super) fn connect(&self, stream: TcpStream) -> io::Result<impl io::Read + io::Write> {
        let name = ServerName::try_from("127.0.0.1").map_err(io::Error::other)?;
        let session = rustls::ClientConnection::new(self.probe.clone(), name);
        Ok(rustls::StreamOwned::new(
            session.map_err(io::Error::other)?,
            stream,
        ))
    }
}

/// A rustls client configuration with its own ring provider (so it needs no process default).
fn probe_config(
    ca: &rcgen::Certificate,
    cert: &rcgen::Certificate,
    key: &KeyPair,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let failed = |e: rustls::Error| Error::channel("configure the TLS probe", e);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).map_err(failed)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(failed)?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert.der().clone()], key)
        .map_err(failed)?;
    Ok(Arc::new(config))
}

/// Writes `text` to a new file at `path` with `mode` (on unix); the error names the path only.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), Error> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let written = options
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()));
    written.map_err(|e| Error::channel(format!("write {path:?}"), e))
}
