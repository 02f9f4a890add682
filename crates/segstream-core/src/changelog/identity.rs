//! Identity entries: in the changelog partition of a person's profile, one entry per id
//! that belongs to that person without being its canonical id (an anonymous id merged
//! into a known customer, an earlier device). The key is [`IDENTITY_KEY_PREFIX`] followed by
//! the id, the value the canonical id; a tombstone when the id belongs to nobody any more
//! (the person was forgotten, expired or evicted). Ids cannot contain control characters,
//! so these keys never collide with a customer's profile record or the position marker.

/// The start of every identity entry's key.
pub const IDENTITY_KEY_PREFIX: &str = "\u{1}id:";

/// The changelog key of `id`'s identity entry.
pub fn identity_key(id: &str) -> String {
    format!("{IDENTITY_KEY_PREFIX}{id}")
}

/// The id an identity entry's key is about, if `key` is one.
pub fn identity_of_key(key: &str) -> Option<&str> {
    key.strip_prefix(IDENTITY_KEY_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_customer_ids_are_not_identity_keys() {
        assert_eq!(identity_of_key(&identity_key("cookie-1")), Some("cookie-1"));
        assert_eq!(identity_of_key("cookie-1"), None);
        assert_eq!(identity_of_key(crate::changelog::POSITION_KEY), None);
    }
}
