//! rustls configurations: the client-facing listener's, offering HTTP/2 and
//! HTTP/1.1 by ALPN (Dolt's client asks for `h2` on `https://` remotes, and
//! its table-file fetcher may use either), and the client side doltgate uses
//! to fetch JWK Sets from identity providers.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("listener.tls.cert: cannot read certificates from {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("listener.tls.key: cannot read a private key from {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("listener.tls: certificate and key do not form a usable pair: {0}")]
    Pair(rustls::Error),
}

pub fn server_config(config: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&config.cert)?;
    let key = PrivateKeyDer::from_pem_file(&config.key)
        .map_err(|e| TlsError::Key { path: config.key.display().to_string(), reason: e.to_string() })?;
    let mut server = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Pair)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Pair)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    read_pem_certs(path).map_err(|reason| TlsError::Cert { path: path.display().to_string(), reason })
}

/// Every CERTIFICATE block of a PEM file; none is an error.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no CERTIFICATE blocks found".into());
    }
    Ok(certs)
}

/// A client configuration trusting the certificates in `ca_file`, or else the
/// system's roots (which honour `SSL_CERT_FILE` and `SSL_CERT_DIR`).
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_pem_certs(path).map_err(|e| format!("{}: {e}", path.display()))? {
                roots.add(cert).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            if let Some(err) = found.errors.first() {
                tracing::warn!(error = %err, "some system CA certificates could not be read");
            }
            roots.add_parsable_certificates(found.certs);
        }
    }
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}
