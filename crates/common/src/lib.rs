//! Shared code of every Manifold CNI plugin.
//!
//! Protocol: [`version`], [`error`], [`env`], [`args`], [`config`], [`result`],
//! [`dispatch`] (the verb dispatcher every `main` calls).
//! Operating system: [`netns`], [`netlink`], [`sysctl`], [`ipconfig`], [`mac`].
//! Plugins calling plugins: [`delegate`], [`ipam`] (in-process for host-local: [`hostlocal`]). Stacked-link plugins: [`child_link`]. Diagnostics: [`logging`].

pub mod args;
pub mod child_link;
pub mod config;
pub mod delegate;
pub mod dispatch;
pub mod env;
pub mod error;
pub mod hostlocal;
pub mod ipam;
pub mod ipconfig;
pub mod logging;
pub mod mac;
pub mod netlink;
pub mod netns;
pub mod result;
pub mod sysctl;
pub mod version;

pub use error::{CniError, CniResult, Context, ErrorCode};
pub use result::NetworkResult;
pub use version::CniVersion;
