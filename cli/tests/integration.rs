//! The CLI's integration tests, one module per file, in one binary: linked once, where a binary per file
//! compiled and linked the async gRPC stack again for each.

mod errors;
mod newcomer;
mod processes;
