//! TLS for the client-facing listener (rustls), offering HTTP/2 and
//! HTTP/1.1 by ALPN: Dolt's client asks for `h2` on `https://` remotes, and
//! its table-file fetcher may use either.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

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
    let err = |reason: String| TlsError::Cert { path: path.display().to_string(), reason };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE blocks found".into()));
    }
    Ok(certs)
}
