//! segstream: real-time customer segmentation.

pub mod engine;
pub mod event;
pub mod generator;
pub mod profile;
pub mod replay;
pub mod segment;
pub mod symbols;
pub mod time;
pub mod transition;
