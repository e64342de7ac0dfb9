//! Peer datagrams received several at a time: one `recvmmsg` takes up to `BATCH` waiting
//! datagrams into fixed slots, so a loop turn that finds datagrams queued pays one system call
//! for them, and a call that returns fewer than it had room for shows the queue empty (the
//! rule a short TCP read follows), so draining the socket costs no extra call ending in
//! `WouldBlock`. Owns the slots and the C structures; must not look inside a datagram (the peer
//! codec does).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams taken by one call at most.
pub const BATCH: usize = 8;
/// Room for one datagram: the largest UDP payload fits.
const SLOT_BYTES: usize = 65_536;

pub struct RecvBatch {
    buf: Vec<u8>,
    lens: [usize; BATCH],
    addrs: [libc::sockaddr_storage; BATCH],
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            buf: vec![0; BATCH * SLOT_BYTES],
            lens: [0; BATCH],
            // SAFETY: sockaddr_storage is plain data; all zeros is a valid (unspecified) value.
            addrs: unsafe { zeroed() },
        }
    }

    /// Takes up to `BATCH` datagrams waiting on `fd` without blocking: how many (0 when none
    /// was waiting). Fewer than `BATCH` means the queue was empty when the call returned,
    /// unless a pending socket error cut the call short (Linux then reports the error on the
    /// next call; the loop drains the socket again at its housekeeping, so such a case costs
    /// at most one housekeeping period).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: zeroed iovec and mmsghdr are valid; every pointer set below points into
        // `self`, which outlives the call, at slots of the stated sizes.
        let n = unsafe {
            let mut iovs: [libc::iovec; BATCH] = zeroed();
            let mut hdrs: [libc::mmsghdr; BATCH] = zeroed();
            let base = self.buf.as_mut_ptr();
            for i in 0..BATCH {
                iovs[i].iov_base = base.add(i * SLOT_BYTES) as *mut libc::c_void;
                iovs[i].iov_len = SLOT_BYTES;
                let h = &mut hdrs[i].msg_hdr;
                h.msg_name = &mut self.addrs[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
                h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_iov = &mut iovs[i];
                h.msg_iovlen = 1;
            }
            let n = libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            );
            if n > 0 {
                for (len, h) in self.lens.iter_mut().zip(&hdrs).take(n as usize) {
                    *len = (h.msg_len as usize).min(SLOT_BYTES);
                }
            }
            n
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                _ => Err(e),
            };
        }
        Ok(n as usize)
    }

    /// Datagram `i` of the last `recv` and its sender.
    pub fn datagram(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let at = i * SLOT_BYTES;
        (&self.buf[at..at + self.lens[i]], sender(&self.addrs[i]))
    }
}

fn sender(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in (it is large enough).
            let a = unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn takes_every_waiting_datagram_with_its_sender_and_reports_an_empty_queue() {
        // Goal: several datagrams come back in order, whole, each with its sender; a call
        // with nothing waiting returns 0, not an error. Method: 11 datagrams (more than one
        // batch) from two loopback sockets.
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut sent = Vec::new();
        for i in 0..11u8 {
            let s = if i % 2 == 0 { &a } else { &b };
            let d = vec![i; 100 + i as usize * 1000];
            s.send_to(&d, to).unwrap();
            sent.push((d, s.local_addr().unwrap()));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut batch = RecvBatch::new();
        let mut got = Vec::new();
        loop {
            let n = batch.recv(rx.as_raw_fd()).unwrap();
            for i in 0..n {
                let (d, from) = batch.datagram(i);
                got.push((d.to_vec(), from.unwrap()));
            }
            if n < BATCH {
                break;
            }
        }
        assert_eq!(got, sent);
        assert_eq!(batch.recv(rx.as_raw_fd()).unwrap(), 0);
    }
}
