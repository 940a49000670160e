//! serde stops at a file's first wrong value. To report every one at once, the config is read again once
//! per value written in the file, with every other entry hidden: what serde then refuses is that value's
//! own problem, with its place in the file. Once they are known, the file is read a last time with those
//! wrong values hidden, so the rest of it still takes the env overrides and the checks. Only the error
//! path pays for this.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, Visitor};
use std::fmt;

/// Read `T` from `de` seeing only the entries on `path` (keys of nested maps, outermost first); a value
/// off the path is skipped unread. Struct defaults fill what is hidden.
pub fn read<'de, T: serde::Deserialize<'de>, D: Deserializer<'de>>(
    de: D,
    path: &[String],
) -> Result<T, D::Error> {
    KeepSeed {
        seed: std::marker::PhantomData::<T>,
        keep: (!path.is_empty()).then_some(Keep::Only(path)),
    }
    .deserialize(de)
}

/// Read `T` from `de` with the entries at `hidden` (key paths, outermost first) left unread, so struct
/// defaults take their place.
pub fn read_without<'de, T: serde::Deserialize<'de>, D: Deserializer<'de>>(
    de: D,
    hidden: &[Vec<String>],
) -> Result<T, D::Error> {
    let hidden: Vec<&[String]> = hidden
        .iter()
        .map(Vec::as_slice)
        .filter(|p| !p.is_empty())
        .collect();
    KeepSeed {
        seed: std::marker::PhantomData::<T>,
        keep: (!hidden.is_empty()).then_some(Keep::Except(hidden)),
    }
    .deserialize(de)
}

/// Which entries of the maps on the way are read. Every path is non-empty, and was found under maps by
/// the file's own walk, so wherever a `Keep` applies, the file has a map.
enum Keep<'p> {
    /// Only the entries on this path.
    Only(&'p [String]),
    /// Every entry but those at these paths.
    Except(Vec<&'p [String]>),
}

impl<'p> Keep<'p> {
    /// For the entry `key`: `None` to skip it; `Some(None)` to read it whole; `Some(Some(k))` to read it
    /// filtered by `k`.
    fn below(&self, key: &str) -> Option<Option<Keep<'p>>> {
        let first_is = |p: &[String]| p.first().is_some_and(|k| k == key);
        match self {
            Keep::Only(path) => first_is(path).then(|| {
                let rest = &path[1..];
                (!rest.is_empty()).then_some(Keep::Only(rest))
            }),
            Keep::Except(hidden) => {
                let below: Vec<&[String]> = hidden
                    .iter()
                    .filter(|p| first_is(p))
                    .map(|p| &p[1..])
                    .collect();
                if below.iter().any(|p| p.is_empty()) {
                    None
                } else {
                    Some((!below.is_empty()).then_some(Keep::Except(below)))
                }
            }
        }
    }
}

/// A seed for a value read as a whole (`keep: None`) or filtered.
struct KeepSeed<'p, S> {
    seed: S,
    keep: Option<Keep<'p>>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for KeepSeed<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        match self.keep {
            None => self.seed.deserialize(de),
            Some(keep) => self.seed.deserialize(Filtered { de, keep }),
        }
    }
}

/// A map whose entries are filtered by `keep`: whatever the type asks for, it is handed that map.
struct Filtered<'p, D> {
    de: D,
    keep: Keep<'p>,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Filtered<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.de.deserialize_map(FilterVisitor {
            visitor,
            keep: self.keep,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

struct FilterVisitor<'p, V> {
    visitor: V,
    keep: Keep<'p>,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for FilterVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_map(FilteredMap {
            map,
            keep: self.keep,
            below: None,
        })
    }
}

/// Yields the entries `keep` reads; `below` is how the value of the key just given is read.
struct FilteredMap<'p, A> {
    map: A,
    keep: Keep<'p>,
    below: Option<Keep<'p>>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for FilteredMap<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.map.next_key::<String>()? {
            match self.keep.below(&key) {
                None => {
                    self.map.next_value::<IgnoredAny>()?;
                }
                Some(below) => {
                    self.below = below;
                    return seed
                        .deserialize(IntoDeserializer::<A::Error>::into_deserializer(key))
                        .map(Some);
                }
            }
        }
        Ok(None)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.map.next_value_seed(KeepSeed {
            seed,
            keep: self.below.take(),
        })
    }
}
