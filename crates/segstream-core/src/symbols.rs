//! Interned names: event types, trait keys and favourite values become small integers, so
//! profiles store 2- or 4-byte symbols instead of strings.
//!
//! The table belongs to one engine (it is part of its state and its snapshot). Every class
//! of name has a cap, so input cannot grow it without bound; callers handle `None`.

use hashbrown::HashMap;

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
    /// Each class has its own id space, sized to the bits profiles store it in:
    /// event types and trait names in 12 bits, values in 16.
    fn cap(self) -> usize {
        match self {
            SymbolClass::EventType => 4_095,
            SymbolClass::TraitKey => 4_095,
            SymbolClass::Value => 65_535,
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// Interned names, one id space per [`SymbolClass`].
#[derive(Debug, Clone, Default)]
pub struct Symbols {
    names: [Vec<Box<str>>; 3],
    index: [HashMap<Box<str>, u32>; 3],
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
        let names = &mut self.names[class.index()];
        if names.len() >= class.cap() {
            return None;
        }
        let sym = names.len() as u32;
        names.push(name.into());
        self.index[class.index()].insert(name.into(), sym);
        Some(sym)
    }

    pub fn name(&self, class: SymbolClass, sym: u32) -> &str {
        self.names[class.index()]
            .get(sym as usize)
            .map_or("?", |n| n)
    }

    /// The symbol of an event's type: fixed for known kinds, interned for custom ones.
    pub fn event_type(&mut self, kind: EventKind, name: &str) -> Option<u16> {
        if kind != EventKind::Custom {
            return Some(kind as u16);
        }
        self.intern(name, SymbolClass::EventType).map(|s| s as u16)
    }

    /// Number of names in a class.
    pub fn len(&self, class: SymbolClass) -> usize {
        self.names[class.index()].len()
    }
}

impl Serialize for Symbols {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Symbols {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let names = <[Vec<Box<str>>; 3]>::deserialize(d)?;
        let mut s = Symbols::default();
        for (class, list) in names.iter().enumerate() {
            for (i, n) in list.iter().enumerate() {
                s.index[class].insert(n.clone(), i as u32);
            }
        }
        s.names = names;
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
        assert_eq!((a, b), (0, 0), "classes have their own id spaces");
        assert_eq!(s.intern("role", SymbolClass::TraitKey), Some(a));
        assert_eq!(s.name(SymbolClass::TraitKey, a), "role");
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
