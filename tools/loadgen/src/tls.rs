//! TLS for the load generator's connections: a rustls client configuration (ring provider) that
//! trusts the CA given with `--tls-ca`, and the server name each connection verifies. Owns no
//! sockets; the driver feeds bytes through `rustls::ClientConnection`.

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

/// Builds a client configuration trusting every certificate in the PEM file `ca`.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, String> {
    let file = std::fs::File::open(ca).map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
        let cert = cert.map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "--tls-ca {}: no PEM certificate in the file",
            ca.display()
        ));
    }
    // rustls's process-default provider (ring, as the workspace's rustls features select).
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name to verify for an endpoint given as `HOST:PORT`: the override when set, else HOST
/// (an IP address verifies against the certificate's IP subject alternative names).
pub fn server_name(
    endpoint: &str,
    override_name: Option<&str>,
) -> Result<ServerName<'static>, String> {
    let host = match override_name {
        Some(n) => n.to_string(),
        None => match endpoint.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
            None => endpoint.to_string(),
        },
    };
    ServerName::try_from(host.clone())
        .map_err(|_| format!("'{host}' is not a valid TLS server name"))
}

pub fn client_session(
    config: &Arc<ClientConfig>,
    name: &ServerName<'static>,
) -> Result<ClientConnection, String> {
    ClientConnection::new(config.clone(), name.clone()).map_err(|e| format!("TLS session: {e}"))
}

/// What a connection needs to speak TLS: the shared configuration and the name to verify.
#[derive(Clone)]
pub struct TlsTarget {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}
