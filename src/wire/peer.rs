//! The peer datagram codec (in progress): envelope, HMAC tag, message bodies, fragmentation
//! and reassembly. See `wire/mod.rs` for the byte layout.
