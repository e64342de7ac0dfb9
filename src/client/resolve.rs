//! Resolving an endpoint (`host:port`) to the socket addresses to dial, telling a name that
//! does not exist (the resolver's "no such name" or "no address for it", which asking again
//! will not change soon) from a resolver that failed for now (no answer, a system error). The
//! standard library's resolver gives both as one opaque error, so this calls `getaddrinfo`
//! itself, as the standard library does. Owns resolution only: which endpoint to try, and
//! what a failure means for the operation, is `client/mod.rs`'s business. Caches nothing.

use std::ffi::{CStr, CString};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Why an endpoint resolved to no address.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// The host name does not exist, or has no address: says so, naming the host.
    NoSuchHost(String),
    /// The resolver failed for now, or the endpoint is malformed.
    Other(io::Error),
}

/// The addresses of `endpoint` (`host:port`, an IPv6 host in brackets), in the resolver's
/// order. An IP address is taken as it is, without asking the resolver.
pub(crate) fn resolve(endpoint: &str) -> Result<Vec<SocketAddr>, ResolveError> {
    if let Ok(a) = endpoint.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let invalid = |why: &str| {
        ResolveError::Other(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{endpoint:?} is not HOST:PORT ({why})"),
        ))
    };
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return Err(invalid("no port"));
    };
    let port: u16 = port.parse().map_err(|_| invalid("a bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let c_host = CString::new(host).map_err(|_| invalid("a NUL byte in the host"))?;
    // SAFETY: an all-zero addrinfo is a valid "no hints" value; the fields set are plain ints.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_UNSPEC;
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: a NUL-terminated host, no service, valid hints, and an out pointer that
    // getaddrinfo fills only on success (freed below).
    let rc = unsafe { libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 {
        return Err(gai_error(host, rc));
    }
    let mut addrs = Vec::new();
    let mut ai = res;
    while !ai.is_null() {
        // SAFETY: `ai` is a node of the list getaddrinfo returned, not yet freed; each
        // `ai_addr` is read only when `ai_addrlen` says it holds the whole structure read.
        unsafe {
            let a = &*ai;
            let len = a.ai_addrlen as usize;
            if a.ai_family == libc::AF_INET && len >= std::mem::size_of::<libc::sockaddr_in>() {
                let sin = std::ptr::read_unaligned(a.ai_addr as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                addrs.push(SocketAddr::V4(SocketAddrV4::new(ip, port)));
            } else if a.ai_family == libc::AF_INET6
                && len >= std::mem::size_of::<libc::sockaddr_in6>()
            {
                let sin6 = std::ptr::read_unaligned(a.ai_addr as *const libc::sockaddr_in6);
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                addrs.push(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )));
            }
            ai = a.ai_next;
        }
    }
    // SAFETY: the list getaddrinfo returned, freed once, after its last use.
    unsafe { libc::freeaddrinfo(res) };
    if addrs.is_empty() {
        return Err(ResolveError::NoSuchHost(format!(
            "host {host} has no IPv4 or IPv6 address"
        )));
    }
    Ok(addrs)
}

/// The error for getaddrinfo's code `rc` resolving `host`.
fn gai_error(host: &str, rc: libc::c_int) -> ResolveError {
    if rc == libc::EAI_SYSTEM {
        return ResolveError::Other(io::Error::last_os_error());
    }
    // SAFETY: gai_strerror returns a pointer to a static NUL-terminated string.
    let detail = unsafe { CStr::from_ptr(libc::gai_strerror(rc)) }.to_string_lossy();
    #[cfg(target_os = "linux")]
    let no_such = rc == libc::EAI_NONAME || rc == libc::EAI_NODATA;
    #[cfg(not(target_os = "linux"))]
    let no_such = rc == libc::EAI_NONAME;
    if no_such {
        ResolveError::NoSuchHost(format!("host {host} not found ({detail})"))
    } else {
        ResolveError::Other(io::Error::other(format!(
            "cannot resolve host {host}: {detail}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_taken_as_they_are_and_localhost_resolves() {
        // Goal: IP endpoints never reach the resolver; names do, with the endpoint's port.
        assert_eq!(
            resolve("127.0.0.1:5254").unwrap(),
            vec!["127.0.0.1:5254".parse().unwrap()]
        );
        assert_eq!(
            resolve("[::1]:7").unwrap(),
            vec!["[::1]:7".parse().unwrap()]
        );
        let local = resolve("localhost:5254").unwrap();
        assert!(!local.is_empty());
        assert!(
            local
                .iter()
                .all(|a| a.port() == 5254 && a.ip().is_loopback()),
            "{local:?}"
        );
    }

    #[test]
    fn malformed_endpoints_are_not_taken_for_missing_hosts() {
        for bad in ["no-port", "host:99999", "host:x", "ho\0st:1"] {
            assert!(
                matches!(resolve(bad), Err(ResolveError::Other(_))),
                "{bad:?}"
            );
        }
    }
}
