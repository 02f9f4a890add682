//! segstream: real-time customer segmentation on Kafka. This crate is the service: the
//! adapters around the pure core ([`segstream_core`]).
//!
//! # Layout
//! - [`service`]: the running service (consume → engine → produce → store offsets), its
//!   parts in `service/`; [`shared`]: the state it shares with the HTTP handlers.
//! - [`kafka`]: Kafka clients, callbacks, outgoing records, producing, admin checks.
//! - [`http`]: the HTTP API (metrics, health, profiles, segments, reload).
//! - [`metrics`]: every Prometheus metric, registered in one place.
//! - [`config`]: layered configuration with every error listed.
//! - [`definitions`]: reading a segment definitions file from disk.
//! - [`clock`]: the wall clock.
//! - [`profile_view`]: a profile as JSON (HTTP API, replay).
//! - [`replay`], [`generator`], [`demo`]: offline replay, the funnel simulator, the demo.

pub mod activity;
pub mod clock;
pub mod config;
pub mod definitions;
pub mod demo;
pub mod generator;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod profile_view;
pub mod replay;
pub mod service;
pub mod shared;
