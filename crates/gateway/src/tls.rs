//! How the PG client checks the PG's certificate and proves itself, for `https://`
//! base URLs. rustls with the aws-lc-rs provider (reqwest's default: it builds here with
//! the C compiler alone, and nothing has to be installed before a client is built).
//! The system's roots are trusted unless `ca_file_only`; a private PG's CA is added with
//! `ca_file`; a client certificate serves PGs that require mutual TLS.
//!
//! A failed handshake (an untrusted or expired certificate, a wrong name) fails before
//! any byte of the request is sent: reqwest reports it as a connect error, classified
//! NotDelivered, and it counts as a failure for the breaker.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file of CA certificates to trust besides the system's (a private PG's CA).
    pub ca_file: Option<PathBuf>,
    /// Trust only `ca_file`, not the system's roots.
    pub ca_file_only: bool,
    /// Our client certificate chain (PEM), for a PG that requires mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub client_key_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Pem { path: PathBuf, source: reqwest::Error },
    #[error("{0}")]
    Settings(&'static str),
}

impl TlsSettings {
    /// Applies these settings to a client under construction.
    pub(crate) fn apply(&self, mut builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, TlsError> {
        let read = |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.into(), source });
        match (&self.ca_file, self.ca_file_only) {
            (Some(path), only) => {
                let roots = reqwest::Certificate::from_pem_bundle(&read(path)?)
                    .map_err(|source| TlsError::Pem { path: path.clone(), source })?;
                builder = if only { builder.tls_certs_only(roots) } else { builder.tls_certs_merge(roots) };
            }
            (None, true) => return Err(TlsError::Settings("tls.ca_file_only needs tls.ca_file")),
            (None, false) => {}
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = read(cert)?;
                pem.push(b'\n');
                pem.extend(read(key)?);
                let identity =
                    reqwest::Identity::from_pem(&pem).map_err(|source| TlsError::Pem { path: cert.clone(), source })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => return Err(TlsError::Settings("tls.client_cert_file and tls.client_key_file go together")),
        }
        Ok(builder)
    }
}
