//! Harness for tests that run in real network namespaces (being written).
