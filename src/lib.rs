//! segstream: real-time customer segmentation.

pub mod generator;
pub mod segment;
pub mod event;
pub mod profile;
pub mod time;
pub mod symbols;
pub mod engine;
pub mod transition;
pub mod replay;
