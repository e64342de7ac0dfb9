//! Micro benchmark of the wire codecs: encode + decode of a client Put frame with a 100-byte
//! value, and of an AppendEntries of 64 entries of 100 bytes through the peer codec (with and
//! without the HMAC tag). Prints nanoseconds per operation (encode and decode together).
//!
//! Run: `cargo run --release --example wirebench [iterations]` (default 200_000).
//! Timing only: the machine is shared, so read the figures as orders of magnitude.

use std::hint::black_box;
use std::time::Instant;

use zatt::types::*;
use zatt::wire::client::*;
use zatt::wire::peer::*;

fn bench(name: &str, iters: u64, mut f: impl FnMut()) {
    for _ in 0..iters / 10 {
        f(); // warm up caches and buffers
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let ns = start.elapsed().as_nanos() as f64 / iters as f64;
    println!("{name:<44} {ns:>10.0} ns/op");
}

fn main() {
    let iters: u64 = std::env::args_os()
        .nth(1)
        .and_then(|s| s.to_str()?.parse().ok())
        .unwrap_or(200_000);

    let limits = FrameLimits::default();
    let put = Request::Put {
        session: Some((1, 1)),
        key: b"key:000000000042".to_vec(),
        value: vec![0x5A; 100],
    };
    let mut buf = Vec::with_capacity(256);
    let mut seq = 0u64;
    bench("client Put frame (100 B value) enc+dec", iters, || {
        buf.clear();
        seq += 1;
        encode_request(seq, &put, &mut buf);
        let (len, _) = split_frame(&buf, &limits).unwrap().unwrap();
        let (id, view) = decode_request(&buf[..len], &limits).unwrap();
        black_box((id, view));
    });

    let mut resp_buf = Vec::with_capacity(64);
    bench("client Written response enc+dec", iters, || {
        resp_buf.clear();
        encode_response(7, &Response::Written { revision: 99 }, &mut resp_buf);
        black_box(decode_response(&resp_buf, &limits).unwrap());
    });

    let entries: Vec<Entry> = (0..64)
        .map(|i| Entry::new(Term(5), LogIndex(1000 + i), EntryKind::Normal, &[7u8; 100]))
        .collect();
    let append = Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(5),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(999),
            prev_log_term: Term(5),
            entries,
            leader_commit: LogIndex(990),
            read_seq: 0,
        },
    };
    for secret in [None, Some(b"cluster secret".to_vec())] {
        let mut tx_cfg = PeerCodecConfig::new(1, NodeId(1));
        tx_cfg.secret = secret.clone();
        let mut rx_cfg = PeerCodecConfig::new(1, NodeId(2));
        rx_cfg.secret = secret.clone();
        let mut tx = PeerCodec::new(tx_cfg);
        let mut rx = PeerCodec::new(rx_cfg);
        let mut got = 0u64;
        let name = if secret.is_some() {
            "peer AppendEntries 64x100 B enc+dec, HMAC"
        } else {
            "peer AppendEntries 64x100 B enc+dec"
        };
        bench(name, iters / 4, || {
            tx.encode(&append, &mut |d| {
                if let Some(m) = rx.decode(d, 0) {
                    got += 1;
                    black_box(m);
                }
            });
        });
        assert_eq!(rx.drops().total(), 0);
        assert!(got > 0);
        if secret.is_none() {
            let mut dgram = Vec::new();
            tx.encode(&append, &mut |d| dgram = d.to_vec());
            bench("  of which encode", iters / 4, || {
                tx.encode(&append, &mut |d| {
                    black_box(d);
                });
            });
            bench("  of which decode", iters / 4, || {
                black_box(rx.decode(&dgram, 0).unwrap());
            });
        }
    }
}
