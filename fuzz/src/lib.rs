//! The fuzz targets' view of edge's HTTP/1.1 parsing: `edge::http` compiled from
//! edge's own source files (`edge/src/http/`, which depend on nothing else in edge),
//! so the fuzz build needs httparse, httpdate and thiserror instead of the whole
//! server (tokio, rustls, hyper, axum, sled, pprof, ...). The targets fuzz exactly the
//! code the server runs; if that module ever reaches into the rest of edge, this
//! build fails and says so.
#![allow(dead_code)]

#[path = "../../edge/src/http/mod.rs"]
pub mod http;
