//! Conformance tests (issue 5): model == client on the in-memory store == client on the emulator. Not built yet.
