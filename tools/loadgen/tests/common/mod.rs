//! A fake Zatt server for the load generator's tests: it speaks the real client frames
//! (`zatt::wire::client`), says it is the leader, answers puts and gets according to a
//! `Behaviour`, and counts what it received. Every wait is bounded; dropping it stops it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use zatt::wire::client::{
    decode_request_owned, encode_response, split_frame, ErrorKind, FrameLimits, Request, Response,
    Status,
};

#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Every put is Written, every get finds a value.
    Ok,
    /// Put number n (counting from 1, all connections) gets `Busy` when n % 5 == 0,
    /// `Unavailable` when n % 7 == 0 (and not % 5), else Written.
    SomeErrors,
    /// The answer to the second request (all connections) is held back this long.
    StallSecond(Duration),
    /// Claims to lead in Status, but answers every put and get with NotLeader naming this
    /// address (a leader that has just been deposed).
    RedirectTo(SocketAddr),
}

#[derive(Default)]
pub struct Counters {
    pub puts: AtomicU64,
    pub gets: AtomicU64,
    pub busy_sent: AtomicU64,
    pub unavailable_sent: AtomicU64,
    pub requests: AtomicU64,
}

pub struct FakeServer {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    /// With TLS: the PEM file of the CA that signed the server's certificate.
    pub ca_pem: Option<std::path::PathBuf>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(p) = &self.ca_pem {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl FakeServer {
    pub fn start(behaviour: Behaviour) -> FakeServer {
        FakeServer::start_with(behaviour, None)
    }

    /// A fake that speaks TLS with a certificate for 127.0.0.1 and localhost, signed by a fresh
    /// CA written to a temporary PEM file.
    pub fn start_tls(behaviour: Behaviour) -> FakeServer {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let mut s = FakeServer::start_with(behaviour, Some(Arc::new(config)));
        let path = std::env::temp_dir().join(format!(
            "loadgen-test-ca-{}-{}.pem",
            std::process::id(),
            s.addr.port()
        ));
        std::fs::write(&path, ca.pem()).unwrap();
        s.ca_pem = Some(path);
        s
    }

    fn start_with(behaviour: Behaviour, tls: Option<Arc<rustls::ServerConfig>>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counters.clone(), stop.clone());
        std::thread::spawn(move || {
            // Bounded: a test that forgets to drop the server still ends within a minute.
            for _ in 0..60_000 {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (c, s, tls) = (c.clone(), s.clone(), tls.clone());
                        conn.set_nonblocking(false).unwrap();
                        conn.set_nodelay(true).unwrap();
                        conn.set_read_timeout(Some(Duration::from_millis(20)))
                            .unwrap();
                        std::thread::spawn(move || match tls {
                            None => serve(conn, behaviour, c, s),
                            Some(cfg) => {
                                let session = rustls::ServerConnection::new(cfg).unwrap();
                                serve(rustls::StreamOwned::new(session, conn), behaviour, c, s)
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        FakeServer {
            addr,
            counters,
            stop,
            ca_pem: None,
        }
    }

    pub fn puts(&self) -> u64 {
        self.counters.puts.load(Ordering::SeqCst)
    }

    pub fn gets(&self) -> u64 {
        self.counters.gets.load(Ordering::SeqCst)
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }
}

fn serve(
    mut conn: impl Read + Write,
    behaviour: Behaviour,
    c: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let limits = FrameLimits::default();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::SeqCst) {
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return,
        }
        out.clear();
        while let Ok(Some((len, _))) = split_frame(&buf, &limits) {
            let (id, req) = decode_request_owned(&buf[..len], &limits).unwrap();
            buf.drain(..len);
            let resp = match req {
                Request::Status => Response::Status(Box::new(Status {
                    id: 1,
                    role: "leader".into(),
                    term: 1,
                    leader: Some(1),
                    ..Status::default()
                })),
                Request::Put { .. } => {
                    let n = c.puts.fetch_add(1, Ordering::SeqCst) + 1;
                    c.requests.fetch_add(1, Ordering::SeqCst);
                    match behaviour {
                        Behaviour::SomeErrors if n % 5 == 0 => {
                            c.busy_sent.fetch_add(1, Ordering::SeqCst);
                            Response::Error(ErrorKind::Busy)
                        }
                        Behaviour::SomeErrors if n % 7 == 0 => {
                            c.unavailable_sent.fetch_add(1, Ordering::SeqCst);
                            Response::Error(ErrorKind::Unavailable("test".into()))
                        }
                        Behaviour::RedirectTo(addr) => Response::Error(ErrorKind::NotLeader {
                            leader: Some(2),
                            leader_addr: Some(addr.to_string()),
                        }),
                        _ => Response::Written { revision: n },
                    }
                }
                Request::Get { .. } => {
                    c.gets.fetch_add(1, Ordering::SeqCst);
                    c.requests.fetch_add(1, Ordering::SeqCst);
                    Response::Value {
                        value: Some(b"value".to_vec()),
                        revision: 1,
                        applied_index: 1,
                    }
                }
                _ => Response::Error(ErrorKind::Invalid("not in the fake".into())),
            };
            if let Behaviour::StallSecond(d) = behaviour {
                if c.requests.load(Ordering::SeqCst) == 2
                    && matches!(resp, Response::Written { .. })
                {
                    // Answer what came before, then hold this answer back.
                    if conn.write_all(&out).is_err() {
                        return;
                    }
                    out.clear();
                    std::thread::sleep(d);
                }
            }
            encode_response(id, &resp, &mut out);
        }
        if !out.is_empty() && (conn.write_all(&out).is_err() || conn.flush().is_err()) {
            return;
        }
    }
}
