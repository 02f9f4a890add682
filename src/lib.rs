//! segstream: real-time customer segmentation.

pub mod changelog;
pub mod config;
pub mod demo;
pub mod engine;
pub mod event;
pub mod generator;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod profile;
pub mod replay;
pub mod segment;
pub mod service;
pub mod symbols;
pub mod time;
pub mod transition;
