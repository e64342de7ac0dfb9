//! TLS for the client: builds a rustls client configuration from PEM files, and names the
//! server to verify from an endpoint. The crypto comes from rustls's process-default provider:
//! the one the application installed (`rustls::crypto::CryptoProvider::install_default`), else
//! the one rustls's crate features select (ring, in Zatt's own build; rustls panics when a
//! build enables two providers and installs neither). Owns nothing else: the stream itself is driven by
//! `conn.rs`. Read `README.md` ("TLS") for how the server side is set up.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::RootCertStore;

/// Where the client finds its TLS material. With `ca` set the client speaks TLS to every
/// endpoint and verifies the server's certificate against it; `client_cert` adds a client
/// certificate for servers that require one.
#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    /// PEM file of the certificate authorities the servers' certificates chain to.
    pub ca: PathBuf,
    /// PEM files of a client certificate chain and its private key (mutual TLS), if any.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The name the servers' certificates carry. `None`: the endpoint's host (an IP address or a
    /// DNS name), which suits certificates issued for the addresses clients dial.
    pub server_name: Option<String>,
}

impl TlsConfig {
    pub fn with_ca(ca: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig {
            ca: ca.into(),
            ..TlsConfig::default()
        }
    }
}

/// Loads the PEM files and builds the rustls configuration. Errors are one line naming the file.
pub fn build_config(tls: &TlsConfig) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let cas = crate::config::pem_certs("TLS CA file", &tls.ca)?;
    if cas.is_empty() {
        return Err(format!(
            "{}: no PEM certificate found (expected a CA certificate)",
            tls.ca.display()
        ));
    }
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", tls.ca.display()))?;
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = crate::config::pem_certs("client certificate", cert)?;
            let key = crate::config::pem_key("client key", key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("{}: client certificate refused: {e}", cert.display()))?
        }
    };
    Ok(Arc::new(config))
}

/// The name to verify for `endpoint` (`host:port`): the override if given, else the host part.
pub fn server_name(tls: &TlsConfig, endpoint: &str) -> Result<ServerName<'static>, String> {
    let host = match &tls.server_name {
        Some(n) => n.as_str(),
        None => host_of(endpoint),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} is not a valid TLS server name"))
}

/// The host of `host:port`, without the brackets of an IPv6 literal.
fn host_of(endpoint: &str) -> &str {
    let host = match endpoint.rfind(':') {
        Some(i) => &endpoint[..i],
        None => endpoint,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_is_the_endpoint_host_unless_overridden() {
        // Goal: certificates issued for an IP or a DNS name verify against what the client dials.
        let t = TlsConfig::default();
        assert!(matches!(
            server_name(&t, "127.0.0.1:5254").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name(&t, "[::1]:5254").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert_eq!(
            server_name(&t, "db.example:5254").unwrap(),
            ServerName::try_from("db.example").unwrap()
        );
        let t = TlsConfig {
            server_name: Some("zatt.local".into()),
            ..TlsConfig::default()
        };
        assert_eq!(
            server_name(&t, "127.0.0.1:5254").unwrap(),
            ServerName::try_from("zatt.local").unwrap()
        );
    }

    #[test]
    fn missing_or_empty_ca_file_is_a_one_line_error() {
        // Goal: a wrong --tls-ca names the file instead of panicking or connecting in clear.
        let err = build_config(&TlsConfig::with_ca("/nonexistent/ca.pem")).unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let dir = std::env::temp_dir().join(format!("zatt-tls-empty-{}", std::process::id()));
        std::fs::write(&dir, b"not a certificate\n").unwrap();
        let err = build_config(&TlsConfig::with_ca(&dir)).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn a_device_or_oversized_pem_file_is_refused_unread() {
        // Goal: a CA file is read only if it is a regular file of at most 1 MiB (a device
        // such as /dev/zero used to be read until memory ran out).
        let e = build_config(&TlsConfig::with_ca("/dev/zero")).unwrap_err();
        assert!(e.contains("/dev/zero: is not a regular file"), "{e}");
        let big = std::env::temp_dir().join(format!("zatt-tls-big-{}", std::process::id()));
        std::fs::File::create(&big)
            .unwrap()
            .set_len(crate::config::MAX_PEM_FILE_BYTES + 1)
            .unwrap();
        let e = build_config(&TlsConfig::with_ca(&big)).unwrap_err();
        assert!(e.contains("larger than 1 MiB"), "{e}");
        let _ = std::fs::remove_file(&big);
    }
}
