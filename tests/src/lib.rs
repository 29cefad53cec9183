//! Helpers for unprivileged tests that run the built plugin binaries.
