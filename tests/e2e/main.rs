//! End-to-end tests of the data plane over real loopback sockets: HTTP semantics on
//! both listeners, bad input and limits, hardening regressions, TLS byte integrity,
//! and (with strace) the zero-copy body path of the real binary.

mod alloc;
mod bad_input;
mod cache;
mod cli;
mod descriptors;
mod fleet_tls;
mod hardening;
mod manifests;
mod scale;
mod semantics;
mod storms;
mod tls_integrity;
mod zero_copy;
