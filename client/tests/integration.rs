//! The client's integration tests, one module per file, in one binary: linked once, where a binary per file
//! compiled and linked the async gRPC stack again for each. `metrics.rs` and `soak.rs` are binaries of their
//! own (a global recorder; resident memory).

mod driver;
mod emulator;
mod examples;
mod leader;
mod memory;
mod readme;
