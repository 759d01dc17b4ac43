//! Providers against their platforms: the OpenFaaS provider API (a fake provider on
//! 127.0.0.1).

#[path = "../support/mod.rs"]
mod support;

mod openfaas;
