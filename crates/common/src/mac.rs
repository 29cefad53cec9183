//! Being written by the netlink helper.
