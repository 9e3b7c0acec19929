//! Deterministic failure simulator (issue 4): drives the model client machine against a seeded in-memory world. Not built yet.
