//! A server that answers every request at once without doing anything (puts: Written, gets: a
//! 100-byte value, Status: "leader"), one thread per connection. It measures the load
//! generator's own ceiling and CPU cost per request on this machine, apart from Zatt:
//!
//!     cargo run --release -p zatt-loadgen --example null_server -- 127.0.0.1:27900
//!     target/release/loadgen --endpoints 127.0.0.1:27900 --clients 64 --duration 5s
//!
//! Runs until killed. Not a Zatt server: it keeps no data and ignores consistency.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use zatt::wire::client::{
    decode_request, encode_response, encode_value_response, split_frame, FrameLimits, RequestView,
    Response, Status,
};

fn serve(mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let limits = FrameLimits::default();
    let mut buf = vec![0u8; 256 * 1024];
    let (mut lo, mut hi) = (0usize, 0usize);
    let mut out = Vec::with_capacity(256 * 1024);
    let value = [b'v'; 100];
    loop {
        if hi == buf.len() {
            buf.copy_within(lo..hi, 0);
            hi -= lo;
            lo = 0;
            if hi == buf.len() {
                return;
            }
        }
        match conn.read(&mut buf[hi..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => hi += n,
        }
        out.clear();
        while let Ok(Some((len, _))) = split_frame(&buf[lo..hi], &limits) {
            match decode_request(&buf[lo..lo + len], &limits) {
                Ok((id, RequestView::Get { .. })) => {
                    encode_value_response(id, Some(&value), 1, 1, &mut out)
                }
                Ok((id, RequestView::Status)) => encode_response(
                    id,
                    &Response::Status(Box::new(Status {
                        id: 1,
                        role: "leader".into(),
                        leader: Some(1),
                        ..Status::default()
                    })),
                    &mut out,
                ),
                Ok((id, _)) => encode_response(id, &Response::Written { revision: 1 }, &mut out),
                Err(_) => return,
            }
            lo += len;
        }
        if lo == hi {
            lo = 0;
            hi = 0;
        }
        if conn.write_all(&out).is_err() {
            return;
        }
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:27900".into());
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("null_server: {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("null_server: listening on {addr}");
    for conn in listener.incoming().flatten() {
        std::thread::spawn(move || serve(conn));
    }
}
