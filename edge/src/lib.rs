//! The `edge` data plane: configuration, listeners, the HTTP/1.1 request loop, TLS
//! (rustls, with kernel TLS offload where the kernel can), and the body paths
//! (`sendfile` on plain and kTLS sockets, pooled `pread` + rustls otherwise).
//!
//! It owns client sockets and never depends on the admin plane's HTTP stack: it only
//! hands a metrics registry to `web-ui`. All `unsafe` code lives in [`sys`].

pub mod cache;
pub mod config;
pub mod conn;
pub mod demo;
pub mod handler;
pub mod http;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod offload;
pub mod reload;
pub mod server;
pub mod streams;
pub mod sys;
pub mod tickets;
pub mod tls;
pub mod tls_session;
pub mod transport;
pub mod upstream;
