//! Zatt's load generator as a library, so that its tests can reach the parts the binary glues
//! together. See `main.rs` for the command line.
