//! The pure core of segstream: everything that decides *what* happens, nothing that talks to
//! the outside world.
//!
//! ```text
//!   bytes ──► event ──► engine ──────────────► Vec<Transition>   (transition)
//!   (JSON)    (parse,     │  ▲                  entered / exited, cause, sequence
//!              validate)  │  │ time: watermarks and "now" come in as plain numbers
//!                         ▼  │
//!                  profile (segment of one) ◄── segment (file, language, compiler)
//!                         │
//!                         ▼
//!                  changelog (a profile as portable bytes; position markers)
//! ```
//!
//! # Layout
//! - [`time`]: event time (RFC 3339, durations), no clock.
//! - [`event`]: the input contract; one JSON object in, a typed [`event::Event`] or a
//!   rejection with a reason out.
//! - [`symbols`]: interning of event types, trait names and values.
//! - [`profile`]: the compact per-customer profile.
//! - [`segment`]: the definitions file, the condition language and its compiler.
//! - [`engine`]: profiles + definitions + timers; events and time in, transitions out.
//! - [`changelog`]: the changelog record and the position marker.
//! - [`transition`]: the output record.
//!
//! This crate never reads a file, the wall clock or the network, and starts no thread: the
//! service crate (`segstream`) is the adapter that does. Its normal dependencies exclude
//! tokio, rdkafka, axum, hyper and prometheus; the service's test suite checks that.

pub mod changelog;
pub mod engine;
pub mod event;
pub mod profile;
pub mod segment;
pub mod symbols;
pub mod time;
pub mod transition;
