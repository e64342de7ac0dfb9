//! The peer datagram codec: turns a Raft `Message` into one or more UDP datagrams (envelope,
//! body, optional HMAC-SHA256 tag) and back, reassembling fragmented messages within bounded
//! memory. Owns the envelope checks, the drop counters and the reassembly buffer.
//! Must not: touch sockets or clocks (time arrives as ticks), panic on any datagram, or
//! allocate by a length it has not checked against the bytes present and its limits.
//! The byte layout and the order of checks are specified in `wire/mod.rs`.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::bytes::{le_u16, le_u32, le_u64, set_u16, set_u32, set_u64, PutLe};
use crate::types::*;
use std::collections::BTreeMap;

type HmacSha256 = Hmac<Sha256>;

/// "Zt": the first two bytes of every Zatt peer datagram.
pub const MAGIC: [u8; 2] = [0x5A, 0x74];
pub const VERSION: u8 = 3;
/// Envelope bytes before the body.
pub const HEADER_BYTES: usize = 60;
/// HMAC-SHA256 tag bytes after the body, when a cluster secret is configured.
pub const TAG_BYTES: usize = 32;
/// Flag bit: the datagram ends with a tag.
const FLAG_TAGGED: u8 = 0x01;
/// Smallest encoded entry: term, index, kind, data length.
const MIN_ENTRY_BYTES: usize = 8 + 8 + 1 + 4;
/// Bookkeeping charged to the reassembly budget per partial message and per fragment (its
/// allocation header and its slot in `frags`, which may be up to twice its length), so that
/// many tiny fragments cannot exhaust memory while staying under the byte bound.
const PARTIAL_OVERHEAD_BYTES: usize = 128;
const FRAGMENT_OVERHEAD_BYTES: usize = 64;

/// Smallest `max_datagram` accepted: the envelope, a tag and room for some body.
pub const MIN_DATAGRAM_BYTES: usize = HEADER_BYTES + TAG_BYTES + 64;
/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM_BYTES: usize = 65_507;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCodecConfig {
    pub cluster_id: u64,
    pub self_id: NodeId,
    /// The cluster secret; when set every datagram carries and must carry an HMAC-SHA256 tag.
    pub secret: Option<Vec<u8>>,
    /// Largest datagram sent, in bytes. 65_000 fits loopback's 64 KiB; real networks want ~1400.
    /// Must lie in `MIN_DATAGRAM_BYTES..=MAX_DATAGRAM_BYTES` (`PeerCodec::new` asserts it).
    pub max_datagram: usize,
    /// Largest message (body bytes) sent or reassembled; larger ones are refused.
    pub max_message_bytes: usize,
    /// Partial messages held per sender; a newer one evicts the sender's oldest.
    pub max_partial_messages: usize,
    /// Bytes held by all partial messages together (fragments plus bookkeeping).
    pub max_reassembly_bytes: usize,
    /// A partial message is dropped (`Stale`) once this many ticks have passed since its first
    /// fragment arrived (see `PeerCodec::expire`).
    pub reassembly_timeout_ticks: u64,
    /// The first message id this codec sends. A restarted node should start somewhere new
    /// (e.g. its start time in nanoseconds) so that its fragments cannot be mixed with
    /// partials a peer still holds from before the restart.
    pub first_message_id: u64,
    /// This node's incarnation: the random id of its data directory, carried by every datagram
    /// it sends (0: none, and no incarnation check on what it receives).
    pub incarnation: u64,
}

impl PeerCodecConfig {
    pub fn new(cluster_id: u64, self_id: NodeId) -> PeerCodecConfig {
        PeerCodecConfig {
            cluster_id,
            self_id,
            secret: None,
            max_datagram: 65_000,
            max_message_bytes: 64 << 20,
            max_partial_messages: 8,
            max_reassembly_bytes: 128 << 20,
            reassembly_timeout_ticks: 50,
            first_message_id: 0,
            incarnation: 0,
        }
    }
}

macro_rules! drop_reasons {
    ($($(#[$m:meta])* $name:ident,)*) => {
        /// Why a datagram was dropped (or, for `Unsendable`, a message not sent).
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        pub enum DropReason { $($(#[$m])* $name,)* }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$name => stringify!($name),)* }
            }
        }
    };
}

drop_reasons! {
    /// Shorter than the envelope (or than envelope plus tag).
    TooShort,
    BadMagic,
    BadVersion,
    /// Flag bits this version does not know.
    BadFlags,
    /// The body length field does not equal the bytes present minus envelope and tag.
    BadLength,
    /// A secret is configured but the datagram has no tag.
    MissingTag,
    /// No secret is configured but the datagram has a tag (the peers are configured differently).
    UnexpectedTag,
    WrongCluster,
    /// Addressed to another node.
    NotForMe,
    /// From node 0 or from this node itself.
    BadSender,
    /// The tag does not match (wrong secret or altered bytes).
    BadTag,
    /// Fragment index/count inconsistent, an empty fragment, or fragments that disagree.
    BadFragment,
    /// The message would exceed `max_message_bytes`.
    TooLarge,
    /// A partial message evicted to stay within the reassembly bounds.
    ReassemblyFull,
    /// A partial message not completed in time.
    Stale,
    /// The envelope was good but the body does not decode as a message.
    BadBody,
    /// An outgoing message too large to send (over `max_message_bytes` or 65535 fragments).
    Unsendable,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How many datagrams were dropped, per reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DropReason::ALL.len()],
}

impl DropCounters {
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason as usize]
    }
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
    /// Every reason with its count, in `DropReason::ALL` order (zeros included).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (r.name(), self.get(*r)))
    }
    fn bump(&mut self, reason: DropReason) {
        self.counts[reason as usize] += 1;
    }
}

/// One message being reassembled from fragments.
struct Partial {
    from: u64,
    msg_id: u64,
    count: u16,
    /// Tick of the first fragment: the message must complete within the timeout of it.
    first_tick: u64,
    /// Arrival order, for evicting the oldest.
    seq: u64,
    /// Body length of non-last fragments, once one has been seen (they must all agree).
    chunk_len: Option<usize>,
    /// Bytes held so far.
    len: usize,
    /// `(fragment index, its bytes)`, sorted by fragment index; each fragment is allocated to
    /// its exact length, so the budget charges exactly what is held.
    frags: Vec<(u16, Box<[u8]>)>,
    /// Bytes charged to the reassembly budget.
    charged: usize,
}

/// What one whole, checked datagram held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A Raft message, with the sender's incarnation and this node's as the sender knows it
    /// (0: unknown). Whether they are acceptable is the host's call (`host/peers.rs`).
    Raft {
        msg: Message,
        from_incarnation: u64,
        to_incarnation: u64,
    },
    /// A server starting with an empty data directory asks whether it was known here.
    Probe(Probe),
    /// The answer to a probe.
    ProbeReply(Probe),
}

/// A probe or its reply, with the incarnations its datagram carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub from: NodeId,
    /// The sender's incarnation.
    pub incarnation: u64,
    /// The incarnation the sender knows the receiver by (0: it does not know it).
    pub known_as: u64,
    /// The sender is a running member of a cluster (false: it is itself still asking).
    pub member: bool,
}

pub struct PeerCodec {
    cfg: PeerCodecConfig,
    /// Each peer's incarnation as this node knows it (see `pin`): named in datagrams to it.
    pins: BTreeMap<NodeId, u64>,
    mac: Option<HmacSha256>,
    next_msg_id: u64,
    /// Reused for every outgoing message: envelope placeholder, then the encoded body.
    buf: Vec<u8>,
    /// Reused for every outgoing fragment.
    frag: Vec<u8>,
    /// Reused to join the fragments of a completed message.
    assembly: Vec<u8>,
    partials: Vec<Partial>,
    partial_bytes: usize,
    partial_seq: u64,
    drops: DropCounters,
}

/// The envelope fields after the fixed checks.
struct Envelope {
    from: u64,
    to: u64,
    from_incarnation: u64,
    to_incarnation: u64,
    msg_id: u64,
    frag_index: u16,
    frag_count: u16,
}

impl PeerCodec {
    /// Panics when `max_datagram` is outside `MIN_DATAGRAM_BYTES..=MAX_DATAGRAM_BYTES` or a
    /// bound is zero: the configuration is validated before it gets here.
    pub fn new(cfg: PeerCodecConfig) -> PeerCodec {
        assert!(
            (MIN_DATAGRAM_BYTES..=MAX_DATAGRAM_BYTES).contains(&cfg.max_datagram),
            "max_datagram {} outside {MIN_DATAGRAM_BYTES}..={MAX_DATAGRAM_BYTES}",
            cfg.max_datagram
        );
        assert!(cfg.max_partial_messages > 0 && cfg.max_reassembly_bytes > 0);
        let mac = cfg
            .secret
            .as_ref()
            .map(|s| HmacSha256::new_from_slice(s).expect("HMAC accepts keys of any length"));
        PeerCodec {
            pins: BTreeMap::new(),
            next_msg_id: cfg.first_message_id,
            buf: Vec::with_capacity(cfg.max_datagram),
            frag: Vec::with_capacity(cfg.max_datagram),
            assembly: Vec::new(),
            mac,
            cfg,
            partials: Vec::new(),
            partial_bytes: 0,
            partial_seq: 0,
            drops: DropCounters::default(),
        }
    }

    pub fn config(&self) -> &PeerCodecConfig {
        &self.cfg
    }

    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Records `peer`'s incarnation: every datagram to it names it from now on.
    pub fn pin(&mut self, peer: NodeId, incarnation: u64) {
        if incarnation != 0 {
            self.pins.insert(peer, incarnation);
        }
    }

    /// Forgets `peer`'s incarnation (it left the membership; a new server may take its id).
    pub fn unpin(&mut self, peer: NodeId) {
        self.pins.remove(&peer);
    }

    /// The incarnation `peer` is known by, if pinned.
    pub fn pinned(&self, peer: NodeId) -> Option<u64> {
        self.pins.get(&peer).copied()
    }

    /// Partial messages held for reassembly.
    pub fn partial_messages(&self) -> usize {
        self.partials.len()
    }

    /// Bytes charged to the reassembly budget (fragments plus bookkeeping).
    pub fn reassembly_bytes(&self) -> usize {
        self.partial_bytes
    }

    fn tag_len(&self) -> usize {
        if self.mac.is_some() {
            TAG_BYTES
        } else {
            0
        }
    }

    /// Encodes `msg` into one datagram, or several fragments when it does not fit in
    /// `max_datagram`, handing each to `emit` in order. Datagrams are built in buffers the
    /// codec reuses. A message over `max_message_bytes` is not sent and counted `Unsendable`.
    pub fn encode(&mut self, msg: &Message, emit: &mut dyn FnMut(&[u8])) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.resize(HEADER_BYTES, 0);
        encode_body(msg, &mut buf);
        let known_as = self.pins.get(&msg.to).copied().unwrap_or(0);
        self.send_body((msg.from, msg.to, known_as), buf, emit);
    }

    /// Encodes a probe (`reply`: the answer to one) to `to`, naming `known_as` as the
    /// incarnation `to` is known by here (0: none); `member` says whether this node is a
    /// running member of a cluster.
    pub fn encode_probe(
        &mut self,
        to: NodeId,
        known_as: u64,
        reply: bool,
        member: bool,
        emit: &mut dyn FnMut(&[u8]),
    ) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.resize(HEADER_BYTES, 0);
        buf.put_u64(0);
        buf.push(if reply {
            kind::PROBE_REPLY
        } else {
            kind::PROBE
        });
        buf.push(member as u8);
        self.send_body((self.cfg.self_id, to, known_as), buf, emit);
    }

    /// Sends the body in `buf` (after `HEADER_BYTES` of room), fragmenting when needed.
    /// `ids`: (from, to, the incarnation `to` is known by).
    fn send_body(
        &mut self,
        ids: (NodeId, NodeId, u64),
        mut buf: Vec<u8>,
        emit: &mut dyn FnMut(&[u8]),
    ) {
        let msg_id = self.next_msg_id;
        self.next_msg_id = self.next_msg_id.wrapping_add(1);
        let tag_len = self.tag_len();
        let body_len = buf.len() - HEADER_BYTES;
        if body_len > self.cfg.max_message_bytes {
            self.drops.bump(DropReason::Unsendable);
            self.buf = buf;
            return;
        }
        if HEADER_BYTES + body_len + tag_len <= self.cfg.max_datagram {
            self.write_header(&mut buf[..HEADER_BYTES], ids, msg_id, 0, 1, body_len);
            self.append_tag(&mut buf);
            emit(&buf);
            self.buf = buf;
            return;
        }
        let chunk = self.cfg.max_datagram - HEADER_BYTES - tag_len;
        let count = body_len.div_ceil(chunk);
        if count > u16::MAX as usize {
            self.drops.bump(DropReason::Unsendable);
            self.buf = buf;
            return;
        }
        let mut frag = std::mem::take(&mut self.frag);
        for (i, part) in buf[HEADER_BYTES..].chunks(chunk).enumerate() {
            frag.clear();
            frag.resize(HEADER_BYTES, 0);
            self.write_header(
                &mut frag[..HEADER_BYTES],
                ids,
                msg_id,
                i as u16,
                count as u16,
                part.len(),
            );
            frag.extend_from_slice(part);
            self.append_tag(&mut frag);
            emit(&frag);
        }
        self.frag = frag;
        self.buf = buf;
    }

    /// `ids`: (from, to, the incarnation `to` is known by).
    fn write_header(
        &self,
        h: &mut [u8],
        ids: (NodeId, NodeId, u64),
        msg_id: u64,
        index: u16,
        count: u16,
        body_len: usize,
    ) {
        h[0..2].copy_from_slice(&MAGIC);
        h[2] = VERSION;
        h[3] = if self.mac.is_some() { FLAG_TAGGED } else { 0 };
        set_u64(h, 4, self.cfg.cluster_id);
        set_u64(h, 12, ids.0 .0);
        set_u64(h, 20, ids.1 .0);
        set_u64(h, 28, self.cfg.incarnation);
        set_u64(h, 36, ids.2);
        set_u64(h, 44, msg_id);
        set_u16(h, 52, index);
        set_u16(h, 54, count);
        set_u32(h, 56, body_len as u32);
    }

    fn append_tag(&self, buf: &mut Vec<u8>) {
        if let Some(mac) = &self.mac {
            let mut m = mac.clone();
            m.update(buf);
            buf.extend_from_slice(&m.finalize().into_bytes());
        }
    }

    /// Checks and decodes one datagram. `None` when it was dropped (and counted) or when it
    /// was a fragment stored for reassembly; `Some` for a whole message, which may be the
    /// one this fragment completed.
    pub fn decode(&mut self, datagram: &[u8], now_tick: u64) -> Option<Message> {
        match self.decode_inbound(datagram, now_tick)? {
            Inbound::Raft { msg, .. } => Some(msg),
            Inbound::Probe(_) | Inbound::ProbeReply(_) => None,
        }
    }

    /// Checks and decodes one datagram into whatever it holds (see `Inbound`). `None` when it
    /// was dropped (and counted) or stored for reassembly.
    pub fn decode_inbound(&mut self, datagram: &[u8], now_tick: u64) -> Option<Inbound> {
        match self.check_envelope(datagram) {
            Err(reason) => {
                self.drops.bump(reason);
                None
            }
            Ok(env) => {
                let body = &datagram[HEADER_BYTES..datagram.len() - self.tag_len()];
                if env.frag_count == 1 {
                    return self.finish(&env, body);
                }
                self.reassemble(&env, body, now_tick)
            }
        }
    }

    fn finish(&mut self, env: &Envelope, body: &[u8]) -> Option<Inbound> {
        let from = NodeId(env.from);
        if let Some(k) = probe_kind(body) {
            let member = match body.get(9) {
                Some(0) if body.len() == 10 => false,
                Some(1) if body.len() == 10 => true,
                _ => {
                    self.drops.bump(DropReason::BadBody);
                    return None;
                }
            };
            let p = Probe {
                from,
                incarnation: env.from_incarnation,
                known_as: env.to_incarnation,
                member,
            };
            return Some(if k == kind::PROBE {
                Inbound::Probe(p)
            } else {
                Inbound::ProbeReply(p)
            });
        }
        let msg = match decode_body(body, from, NodeId(env.to)) {
            Ok(m) => m,
            Err(_) => {
                self.drops.bump(DropReason::BadBody);
                return None;
            }
        };
        Some(Inbound::Raft {
            msg,
            from_incarnation: env.from_incarnation,
            to_incarnation: env.to_incarnation,
        })
    }

    /// The envelope checks, cheapest first; the tag last of the fixed fields so that a
    /// misdirected datagram is counted by its more useful reason.
    fn check_envelope(&self, d: &[u8]) -> Result<Envelope, DropReason> {
        if d.len() < HEADER_BYTES {
            return Err(DropReason::TooShort);
        }
        if d[0..2] != MAGIC {
            return Err(DropReason::BadMagic);
        }
        if d[2] != VERSION {
            return Err(DropReason::BadVersion);
        }
        let flags = d[3];
        if flags & !FLAG_TAGGED != 0 {
            return Err(DropReason::BadFlags);
        }
        let tagged = flags & FLAG_TAGGED != 0;
        match (self.mac.is_some(), tagged) {
            (true, false) => return Err(DropReason::MissingTag),
            (false, true) => return Err(DropReason::UnexpectedTag),
            _ => {}
        }
        let tag_len = self.tag_len();
        if d.len() < HEADER_BYTES + tag_len {
            return Err(DropReason::TooShort);
        }
        let body_len = le_u32(d, 56) as usize;
        if body_len != d.len() - HEADER_BYTES - tag_len {
            return Err(DropReason::BadLength);
        }
        if le_u64(d, 4) != self.cfg.cluster_id {
            return Err(DropReason::WrongCluster);
        }
        let from = le_u64(d, 12);
        let to = le_u64(d, 20);
        if to != self.cfg.self_id.0 {
            return Err(DropReason::NotForMe);
        }
        if from == 0 || from == self.cfg.self_id.0 {
            return Err(DropReason::BadSender);
        }
        if let Some(mac) = &self.mac {
            let mut m = mac.clone();
            let split = d.len() - TAG_BYTES;
            m.update(&d[..split]);
            // verify_slice compares in constant time.
            if m.verify_slice(&d[split..]).is_err() {
                return Err(DropReason::BadTag);
            }
        }
        let frag_index = le_u16(d, 52);
        let frag_count = le_u16(d, 54);
        if frag_count == 0 || frag_index >= frag_count || (frag_count > 1 && body_len == 0) {
            return Err(DropReason::BadFragment);
        }
        Ok(Envelope {
            from,
            to,
            from_incarnation: le_u64(d, 28),
            to_incarnation: le_u64(d, 36),
            msg_id: le_u64(d, 44),
            frag_index,
            frag_count,
        })
    }

    fn reassemble(&mut self, env: &Envelope, body: &[u8], now_tick: u64) -> Option<Inbound> {
        let is_last = env.frag_index == env.frag_count - 1;
        // Refuse before storing anything: every fragment but the last has the full chunk
        // length, so count × this length bounds the message.
        if !is_last
            && (env.frag_count as usize).saturating_mul(body.len()) > self.cfg.max_message_bytes
        {
            self.drops.bump(DropReason::TooLarge);
            return None;
        }
        let pos = self
            .partials
            .iter()
            .position(|p| p.from == env.from && p.msg_id == env.msg_id);
        let pos = match pos {
            Some(i) if self.partials[i].count != env.frag_count => {
                // Fragments of two different messages under one id (a restarted sender).
                self.remove_partial(i, DropReason::BadFragment);
                self.drops.bump(DropReason::BadFragment);
                return None;
            }
            Some(i) => i,
            None => {
                self.partial_seq += 1;
                self.partials.push(Partial {
                    from: env.from,
                    msg_id: env.msg_id,
                    count: env.frag_count,
                    first_tick: now_tick,
                    seq: self.partial_seq,
                    chunk_len: None,
                    len: 0,
                    frags: Vec::new(),
                    charged: PARTIAL_OVERHEAD_BYTES,
                });
                self.partial_bytes += PARTIAL_OVERHEAD_BYTES;
                let seq = self.partial_seq;
                // Eviction reorders `partials` (swap_remove): find the new one again.
                self.evict_sender_excess(env.from);
                self.partials.iter().position(|p| p.seq == seq)?
            }
        };
        let p = &mut self.partials[pos];
        let slot = match p.frags.binary_search_by_key(&env.frag_index, |f| f.0) {
            Ok(_) => return None, // a duplicate: already held
            Err(slot) => slot,
        };
        let consistent = if is_last {
            p.chunk_len.map_or(true, |c| body.len() <= c)
        } else {
            p.chunk_len.map_or(true, |c| body.len() == c)
                && p.frags
                    .last()
                    .filter(|f| f.0 == p.count - 1)
                    .map_or(true, |f| f.1.len() <= body.len())
        };
        if !consistent {
            self.remove_partial(pos, DropReason::BadFragment);
            return None;
        }
        if p.len + body.len() > self.cfg.max_message_bytes {
            self.remove_partial(pos, DropReason::TooLarge);
            return None;
        }
        let cost = body.len() + FRAGMENT_OVERHEAD_BYTES;
        let seq = p.seq;
        if !self.make_room(cost, seq) {
            if let Some(i) = self.partials.iter().position(|p| p.seq == seq) {
                self.remove_partial(i, DropReason::ReassemblyFull);
            }
            return None;
        }
        let pos = self.partials.iter().position(|p| p.seq == seq)?;
        let p = &mut self.partials[pos];
        if !is_last {
            p.chunk_len = Some(body.len());
        }
        p.frags.insert(slot, (env.frag_index, Box::from(body)));
        p.len += body.len();
        p.charged += cost;
        self.partial_bytes += cost;
        if p.frags.len() < p.count as usize {
            return None;
        }
        let p = self.partials.swap_remove(pos);
        self.partial_bytes -= p.charged;
        let mut assembly = std::mem::take(&mut self.assembly);
        assembly.clear();
        assembly.reserve(p.len);
        for (_, bytes) in &p.frags {
            assembly.extend_from_slice(bytes);
        }
        let msg = self.finish(env, &assembly);
        // Keep the join buffer only while it is modest, so one huge message does not pin memory.
        if assembly.capacity() <= 4 * self.cfg.max_datagram {
            self.assembly = assembly;
        }
        msg
    }

    /// Evicts the oldest partials other than `keep_seq` until `cost` more bytes fit; false
    /// when even that is not enough.
    fn make_room(&mut self, cost: usize, keep_seq: u64) -> bool {
        while self.partial_bytes + cost > self.cfg.max_reassembly_bytes {
            let oldest = self
                .partials
                .iter()
                .enumerate()
                .filter(|(_, p)| p.seq != keep_seq)
                .min_by_key(|(_, p)| p.seq)
                .map(|(i, _)| i);
            match oldest {
                Some(i) => self.remove_partial(i, DropReason::ReassemblyFull),
                None => return false,
            }
        }
        true
    }

    fn evict_sender_excess(&mut self, from: u64) {
        loop {
            let mine = self.partials.iter().filter(|p| p.from == from).count();
            if mine <= self.cfg.max_partial_messages {
                return;
            }
            let oldest = self
                .partials
                .iter()
                .enumerate()
                .filter(|(_, p)| p.from == from)
                .min_by_key(|(_, p)| p.seq)
                .map(|(i, _)| i);
            match oldest {
                Some(i) => self.remove_partial(i, DropReason::ReassemblyFull),
                None => return,
            }
        }
    }

    fn remove_partial(&mut self, i: usize, reason: DropReason) {
        let p = self.partials.swap_remove(i);
        self.partial_bytes -= p.charged;
        self.drops.bump(reason);
    }

    /// Drops (as `Stale`) every partial message whose first fragment arrived more than
    /// `reassembly_timeout_ticks` before `now_tick`. The host calls it on its tick.
    pub fn expire(&mut self, now_tick: u64) {
        let timeout = self.cfg.reassembly_timeout_ticks;
        let mut i = 0;
        while i < self.partials.len() {
            if now_tick.saturating_sub(self.partials[i].first_tick) > timeout {
                self.remove_partial(i, DropReason::Stale);
            } else {
                i += 1;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Message bodies.

mod kind {
    pub const PRE_VOTE: u8 = 1;
    pub const PRE_VOTE_RESPONSE: u8 = 2;
    pub const REQUEST_VOTE: u8 = 3;
    pub const REQUEST_VOTE_RESPONSE: u8 = 4;
    pub const APPEND_ENTRIES: u8 = 5;
    pub const APPEND_ENTRIES_RESPONSE: u8 = 6;
    pub const INSTALL_SNAPSHOT: u8 = 7;
    pub const INSTALL_SNAPSHOT_RESPONSE: u8 = 8;
    pub const TIMEOUT_NOW: u8 = 9;
    pub const PROBE: u8 = 10;
    pub const PROBE_REPLY: u8 = 11;
}

/// The probe kind of a body, if it is one (`term` 8 bytes, then the kind).
fn probe_kind(body: &[u8]) -> Option<u8> {
    match body.get(8) {
        Some(&k) if k == kind::PROBE || k == kind::PROBE_REPLY => Some(k),
        _ => None,
    }
}

/// Appends the body of `msg` (everything but `from` and `to`, which the envelope carries).
pub fn encode_body(msg: &Message, out: &mut Vec<u8>) {
    out.put_u64(msg.term.0);
    match &msg.body {
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        } => {
            out.push(kind::PRE_VOTE);
            out.put_u64(last_log_index.0);
            out.put_u64(last_log_term.0);
        }
        MessageBody::PreVoteResponse {
            granted,
            last_log_index,
            last_log_term,
            voter,
        } => {
            out.push(kind::PRE_VOTE_RESPONSE);
            out.push(*granted as u8);
            out.put_u64(last_log_index.0);
            out.put_u64(last_log_term.0);
            out.push(*voter as u8);
        }
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            transfer,
        } => {
            out.push(kind::REQUEST_VOTE);
            out.put_u64(last_log_index.0);
            out.put_u64(last_log_term.0);
            out.push(*transfer as u8);
        }
        MessageBody::RequestVoteResponse { granted } => {
            out.push(kind::REQUEST_VOTE_RESPONSE);
            out.push(*granted as u8);
        }
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            read_seq,
        } => {
            out.push(kind::APPEND_ENTRIES);
            out.put_u64(prev_log_index.0);
            out.put_u64(prev_log_term.0);
            out.put_u64(leader_commit.0);
            out.put_u64(*read_seq);
            out.put_u32(entries.len() as u32);
            out.reserve(entries.iter().map(|e| MIN_ENTRY_BYTES + e.data.len()).sum());
            for e in entries {
                out.put_u64(e.term.0);
                out.put_u64(e.index.0);
                out.push(e.kind as u8);
                out.put_u32(e.data.len() as u32);
                out.extend_from_slice(&e.data);
            }
        }
        MessageBody::AppendEntriesResponse {
            success,
            match_index,
            conflict_term,
            conflict_index,
            last_index,
            read_seq,
        } => {
            out.push(kind::APPEND_ENTRIES_RESPONSE);
            out.push(*success as u8);
            out.put_u64(match_index.0);
            out.put_u64(conflict_term.0);
            out.put_u64(conflict_index.0);
            out.put_u64(last_index.0);
            out.put_u64(*read_seq);
        }
        MessageBody::InstallSnapshot {
            meta,
            offset,
            total,
            data,
            done,
        } => {
            out.push(kind::INSTALL_SNAPSHOT);
            out.put_u64(meta.index.0);
            out.put_u64(meta.term.0);
            meta.membership.encode(out);
            out.put_u64(*offset);
            out.put_u64(*total);
            out.push(*done as u8);
            out.put_u32(data.len() as u32);
            out.extend_from_slice(data);
        }
        MessageBody::InstallSnapshotResponse {
            snapshot_index,
            next_offset,
            installed,
        } => {
            out.push(kind::INSTALL_SNAPSHOT_RESPONSE);
            out.put_u64(snapshot_index.0);
            out.put_u64(*next_offset);
            out.push(*installed as u8);
        }
        MessageBody::TimeoutNow => out.push(kind::TIMEOUT_NOW),
    }
}

/// Decodes a whole message body; `from` and `to` come from the envelope. Every count is
/// checked against the bytes present before anything is allocated, and trailing bytes are
/// refused.
pub fn decode_body(body: &[u8], from: NodeId, to: NodeId) -> Result<Message, DecodeError> {
    let mut r = Reader::new(body);
    let term = Term(r.u64()?);
    let body = match r.u8()? {
        kind::PRE_VOTE => MessageBody::PreVote {
            last_log_index: LogIndex(r.u64()?),
            last_log_term: Term(r.u64()?),
        },
        kind::PRE_VOTE_RESPONSE => MessageBody::PreVoteResponse {
            granted: r.bool()?,
            last_log_index: LogIndex(r.u64()?),
            last_log_term: Term(r.u64()?),
            voter: r.bool()?,
        },
        kind::REQUEST_VOTE => MessageBody::RequestVote {
            last_log_index: LogIndex(r.u64()?),
            last_log_term: Term(r.u64()?),
            transfer: r.bool()?,
        },
        kind::REQUEST_VOTE_RESPONSE => MessageBody::RequestVoteResponse { granted: r.bool()? },
        kind::APPEND_ENTRIES => {
            let prev_log_index = LogIndex(r.u64()?);
            let prev_log_term = Term(r.u64()?);
            let leader_commit = LogIndex(r.u64()?);
            let read_seq = r.u64()?;
            let n = r.u32()? as usize;
            if n.saturating_mul(MIN_ENTRY_BYTES) > r.remaining() {
                return Err(DecodeError::new(
                    "entry count larger than the bytes present",
                ));
            }
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let term = Term(r.u64()?);
                let index = LogIndex(r.u64()?);
                let kind =
                    EntryKind::from_u8(r.u8()?).ok_or(DecodeError::new("unknown entry kind"))?;
                let len = r.u32()? as usize;
                let data: Arc<[u8]> = Arc::from(r.bytes(len)?);
                entries.push(Entry {
                    term,
                    index,
                    kind,
                    data,
                });
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                read_seq,
            }
        }
        kind::APPEND_ENTRIES_RESPONSE => MessageBody::AppendEntriesResponse {
            success: r.bool()?,
            match_index: LogIndex(r.u64()?),
            conflict_term: Term(r.u64()?),
            conflict_index: LogIndex(r.u64()?),
            last_index: LogIndex(r.u64()?),
            read_seq: r.u64()?,
        },
        kind::INSTALL_SNAPSHOT => {
            let index = LogIndex(r.u64()?);
            let term = Term(r.u64()?);
            let (membership, used) = Membership::decode(&r.buf[r.pos..])?;
            r.pos += used;
            let offset = r.u64()?;
            let total = r.u64()?;
            let done = r.bool()?;
            let len = r.u32()? as usize;
            let data = r.bytes(len)?.to_vec();
            MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    index,
                    term,
                    membership,
                },
                offset,
                total,
                data,
                done,
            }
        }
        kind::INSTALL_SNAPSHOT_RESPONSE => MessageBody::InstallSnapshotResponse {
            snapshot_index: LogIndex(r.u64()?),
            next_offset: r.u64()?,
            installed: r.bool()?,
        },
        kind::TIMEOUT_NOW => MessageBody::TimeoutNow,
        _ => return Err(DecodeError::new("unknown message kind")),
    };
    if r.remaining() != 0 {
        return Err(DecodeError::new("trailing bytes after the message"));
    }
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}
