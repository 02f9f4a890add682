//! Interned names: event types, trait keys and favourite values become small integers, so
//! profiles store 2- or 4-byte symbols instead of strings.
//!
//! The table belongs to one engine (it is part of its state and its snapshot). Every class
//! of name has a cap, so input cannot grow it without bound; callers handle `None`.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::EventKind;

/// What a symbol names; each class has its own cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolClass {
    EventType,
    TraitKey,
    Value,
}

impl SymbolClass {
    fn cap(self) -> usize {
        match self {
            SymbolClass::EventType => 2_048,
            SymbolClass::TraitKey => 4_096,
            SymbolClass::Value => 50_000,
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Default)]
pub struct Symbols {
    names: Vec<(Box<str>, SymbolClass)>,
    index: [HashMap<Box<str>, u32>; 3],
    counts: [usize; 3],
}

impl Symbols {
    /// A table in which every [`EventKind`] but `Custom` has the symbol of its discriminant.
    pub fn new() -> Self {
        let mut s = Symbols::default();
        for k in EventKind::KNOWN {
            let sym = s.intern(k.name(), SymbolClass::EventType);
            debug_assert_eq!(sym, Some(k as u32));
        }
        s
    }

    pub fn get(&self, name: &str, class: SymbolClass) -> Option<u32> {
        self.index[class.index()].get(name).copied()
    }

    /// The symbol of `name`, interning it if the class is not full.
    pub fn intern(&mut self, name: &str, class: SymbolClass) -> Option<u32> {
        if let Some(s) = self.get(name, class) {
            return Some(s);
        }
        if self.counts[class.index()] >= class.cap() || self.names.len() >= u16::MAX as usize {
            return None;
        }
        let sym = self.names.len() as u32;
        self.names.push((name.into(), class));
        self.index[class.index()].insert(name.into(), sym);
        self.counts[class.index()] += 1;
        Some(sym)
    }

    pub fn name(&self, sym: u32) -> &str {
        self.names.get(sym as usize).map_or("?", |(n, _)| n)
    }

    /// The symbol of an event's type: fixed for known kinds, interned for custom ones.
    pub fn event_type(&mut self, kind: EventKind, name: &str) -> Option<u16> {
        if kind != EventKind::Custom {
            return Some(kind as u16);
        }
        self.intern(name, SymbolClass::EventType).map(|s| s as u16)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[derive(Serialize, Deserialize)]
struct Entry {
    name: String,
    class: u8,
}

impl Serialize for Symbols {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let entries: Vec<Entry> = self
            .names
            .iter()
            .map(|(n, c)| Entry {
                name: n.to_string(),
                class: *c as u8,
            })
            .collect();
        entries.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Symbols {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = Vec::<Entry>::deserialize(d)?;
        let mut s = Symbols::default();
        for e in entries {
            let class = match e.class {
                0 => SymbolClass::EventType,
                1 => SymbolClass::TraitKey,
                _ => SymbolClass::Value,
            };
            let sym = s.names.len() as u32;
            s.names.push((e.name.as_str().into(), class));
            s.index[class.index()].insert(e.name.into(), sym);
            s.counts[class.index()] += 1;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_kinds_have_fixed_symbols_and_classes_are_separate() {
        let mut s = Symbols::new();
        assert_eq!(
            s.event_type(EventKind::Purchase, "purchase"),
            Some(EventKind::Purchase as u16)
        );
        let a = s.intern("role", SymbolClass::TraitKey).unwrap();
        let b = s.intern("role", SymbolClass::Value).unwrap();
        assert_ne!(a, b);
        assert_eq!(s.intern("role", SymbolClass::TraitKey), Some(a));
        assert_eq!(s.name(a), "role");
        let json = serde_json::to_string(&s).unwrap();
        let back: Symbols = serde_json::from_str(&json).unwrap();
        assert_eq!(back.get("role", SymbolClass::TraitKey), Some(a));
    }

    #[test]
    fn classes_are_capped() {
        let mut s = Symbols::new();
        let cap = SymbolClass::EventType.cap() - EventKind::KNOWN.len();
        for i in 0..cap {
            assert!(s.intern(&format!("t{i}"), SymbolClass::EventType).is_some());
        }
        assert_eq!(s.intern("one-too-many", SymbolClass::EventType), None);
        assert!(s.intern("still-fine", SymbolClass::TraitKey).is_some());
    }
}
