//! The developers' tools' integration tests, one module per file, in one binary (the async gRPC stack is
//! compiled and linked once).

mod chaos;
mod processes;
