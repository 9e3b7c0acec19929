//! The conformance tests, one module per file, in one binary: linked once, where a binary per file compiled and
//! linked the async gRPC stack again for each.

mod conformance;
mod driver_conformance;
