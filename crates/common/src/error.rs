//! CNI errors: the spec's `{cniVersion, code, msg, details}` object, with context.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Error codes from the CNI spec (1.1.0, "Error"), plus Manifold's own from 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: incompatible CNI version.
    IncompatibleVersion,
    /// 2: unsupported field in network configuration.
    UnsupportedField,
    /// 3: container unknown or does not exist.
    UnknownContainer,
    /// 4: invalid necessary environment variables.
    InvalidEnvironment,
    /// 5: I/O failure.
    Io,
    /// 6: failed to decode content.
    Decode,
    /// 7: invalid network config.
    InvalidConfig,
    /// 11: try again later.
    TryAgainLater,
    /// 50: the plugin is not available (STATUS).
    PluginNotAvailable,
    /// 51: the plugin is not available, existing containers may be damaged (STATUS).
    PluginNotAvailableDamaged,
    /// 100: a kernel (netlink, sysctl, namespace) operation failed.
    Kernel,
    /// 101: a delegated plugin could not be run or returned garbage.
    Delegate,
    /// 102: CHECK found the container's network differs from the expected state.
    CheckFailed,
    /// Any other code, e.g. one relayed verbatim from a delegate.
    Other(u32),
}

impl ErrorCode {
    /// The numeric code put on the wire.
    pub fn as_u32(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::Io => 5,
            ErrorCode::Decode => 6,
            ErrorCode::InvalidConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::PluginNotAvailable => 50,
            ErrorCode::PluginNotAvailableDamaged => 51,
            ErrorCode::Kernel => 100,
            ErrorCode::Delegate => 101,
            ErrorCode::CheckFailed => 102,
            ErrorCode::Other(n) => n,
        }
    }

    /// The code for a numeric value read off the wire.
    pub fn from_u32(n: u32) -> Self {
        match n {
            1 => ErrorCode::IncompatibleVersion,
            2 => ErrorCode::UnsupportedField,
            3 => ErrorCode::UnknownContainer,
            4 => ErrorCode::InvalidEnvironment,
            5 => ErrorCode::Io,
            6 => ErrorCode::Decode,
            7 => ErrorCode::InvalidConfig,
            11 => ErrorCode::TryAgainLater,
            50 => ErrorCode::PluginNotAvailable,
            51 => ErrorCode::PluginNotAvailableDamaged,
            100 => ErrorCode::Kernel,
            101 => ErrorCode::Delegate,
            102 => ErrorCode::CheckFailed,
            n => ErrorCode::Other(n),
        }
    }
}

/// A CNI error: what a plugin prints on stdout (with a non-zero exit) when a verb fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// Spec or plugin-specific code.
    pub code: ErrorCode,
    /// Short human-readable message, prefixed with context as the error bubbles up.
    pub msg: String,
    /// Longer explanation, when there is one.
    pub details: String,
}

impl CniError {
    /// A new error with a code and message.
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details (the spec's `details` field).
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Shorthand for an invalid-config (7) error.
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidConfig, msg)
    }

    /// Shorthand for an invalid-environment (4) error.
    pub fn env(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidEnvironment, msg)
    }

    /// Shorthand for a kernel-operation (100) error.
    pub fn kernel(msg: impl Into<String>) -> Self {
        Self::new(ErrorCode::Kernel, msg)
    }

    /// Prefixes the message with what was being attempted.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.msg = format!("{what}: {}", self.msg);
        self
    }

    /// The wire form for a given result cniVersion.
    pub fn to_wire(&self, cni_version: &str) -> WireError {
        WireError {
            cni_version: cni_version.to_string(),
            code: self.code.as_u32(),
            msg: self.msg.clone(),
            details: if self.details.is_empty() {
                None
            } else {
                Some(self.details.clone())
            },
        }
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code.as_u32())?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

impl From<std::io::Error> for CniError {
    fn from(e: std::io::Error) -> Self {
        CniError::new(ErrorCode::Io, e.to_string())
    }
}

/// The JSON shape of an error on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// Version the error is expressed in.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// Numeric error code.
    pub code: u32,
    /// Message.
    #[serde(default)]
    pub msg: String,
    /// Optional details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

impl From<WireError> for CniError {
    fn from(w: WireError) -> Self {
        CniError {
            code: ErrorCode::from_u32(w.code),
            msg: w.msg,
            details: w.details.unwrap_or_default(),
        }
    }
}

/// Adds context to any fallible result convertible to [`CniError`].
pub trait Context<T> {
    /// On error, prefixes the message with `what`.
    fn context(self, what: impl fmt::Display) -> Result<T, CniError>;
    /// Like [`Context::context`], computing the prefix only on error.
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T, CniError>;
}

impl<T, E: Into<CniError>> Context<T> for Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T, CniError> {
        self.map_err(|e| e.into().context(what))
    }
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T, CniError> {
        self.map_err(|e| e.into().context(what()))
    }
}

/// Result alias used throughout Manifold.
pub type CniResult<T> = Result<T, CniError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_numbers() {
        for n in [1, 2, 3, 4, 5, 6, 7, 11, 50, 51, 100, 101, 102, 999] {
            assert_eq!(ErrorCode::from_u32(n).as_u32(), n);
        }
    }

    #[test]
    fn context_prefixes_message() {
        let r: Result<(), CniError> = Err(CniError::kernel("file exists"));
        let e = r.context("create macvlan \"net1\"").unwrap_err();
        assert_eq!(e.msg, "create macvlan \"net1\": file exists");
        assert_eq!(e.code, ErrorCode::Kernel);
    }

    #[test]
    fn wire_form_omits_empty_details() {
        let json = serde_json::to_string(&CniError::config("bad").to_wire("1.0.0")).unwrap();
        assert_eq!(json, r#"{"cniVersion":"1.0.0","code":7,"msg":"bad"}"#);
    }
}
