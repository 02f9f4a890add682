//! The changelog: what a compacted Kafka topic keyed by customer id holds so that another
//! instance can take over a partition's state.
//!
//! - [`record`]: a customer's profile as versioned, portable bytes (the value of a
//!   customer's key; a tombstone when the profile is gone).
//! - [`position`]: the position marker written after each batch's records, saying up to
//!   which input offsets and event time the records before it reflect.
//! - [`identity`]: identity entries, one per id that belongs to another person's profile
//!   (the canonical id as value; a tombstone when the person is gone).
//!
//! Both are pure encodings: the service crate produces and reads them.

pub mod identity;
pub mod position;
pub mod record;

pub use identity::{identity_key, identity_of_key, IDENTITY_KEY_PREFIX};
pub use position::{Position, POSITION_KEY};
pub use record::{Codec, DecodeError, Decoded, Parsed, FORMAT_VERSION};
