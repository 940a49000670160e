//! serde stops at a file's first wrong value. To report every one at once, the config is read again once
//! per value written in the file, with every other entry hidden: what serde then refuses is that value's
//! own problem, with its place in the file. Only the error path pays for this.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, IntoDeserializer, MapAccess, Visitor};
use std::fmt;

/// Read `T` from `de` seeing only the entries on `path` (keys of nested maps, outermost first); a value
/// off the path is skipped unread. Struct defaults fill what is hidden.
pub fn read<'de, T: serde::Deserialize<'de>, D: Deserializer<'de>>(
    de: D,
    path: &[String],
) -> Result<T, D::Error> {
    PathSeed {
        seed: std::marker::PhantomData::<T>,
        rest: path,
    }
    .deserialize(de)
}

/// A seed for the value at the rest of the path: read as it is at the path's end, filtered before.
struct PathSeed<'p, S> {
    seed: S,
    rest: &'p [String],
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for PathSeed<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        if self.rest.is_empty() {
            self.seed.deserialize(de)
        } else {
            self.seed.deserialize(OnPath {
                de,
                path: self.rest,
            })
        }
    }
}

/// A map whose entries off the path are hidden. Only ever built with a non-empty path, so whatever the
/// type asks for, the file has a map here.
struct OnPath<'p, D> {
    de: D,
    path: &'p [String],
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for OnPath<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.de.deserialize_map(Filter {
            visitor,
            path: self.path,
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

/// Hands the type a map that yields only the path's next key.
struct Filter<'p, V> {
    visitor: V,
    path: &'p [String],
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Filter<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_map(OnlyKey {
            map,
            path: self.path,
        })
    }
}

struct OnlyKey<'p, A> {
    map: A,
    path: &'p [String],
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for OnlyKey<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.map.next_key::<String>()? {
            if Some(&key) == self.path.first() {
                return seed
                    .deserialize(IntoDeserializer::<A::Error>::into_deserializer(key))
                    .map(Some);
            }
            self.map.next_value::<IgnoredAny>()?;
        }
        Ok(None)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.map.next_value_seed(PathSeed {
            seed,
            rest: self.path.get(1..).unwrap_or_default(),
        })
    }
}

/// Read `T` from `de` with the entries at `hidden` (key paths, outermost first) left unread, so struct
/// defaults take their place: after a file's wrong values are reported, the rest of it is still read, for
/// the env overrides and the checks that need a whole config. Used only on the error path.
pub fn read_without<'de, T: serde::Deserialize<'de>, D: Deserializer<'de>>(
    de: D,
    hidden: &[Vec<String>],
) -> Result<T, D::Error> {
    let hidden: Vec<&[String]> = hidden.iter().map(Vec::as_slice).collect();
    ExceptSeed {
        seed: std::marker::PhantomData::<T>,
        hidden,
    }
    .deserialize(de)
}

/// A seed for a value some of whose nested entries are hidden (`hidden`: paths relative to it).
struct ExceptSeed<'p, S> {
    seed: S,
    hidden: Vec<&'p [String]>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for ExceptSeed<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        if self.hidden.is_empty() {
            self.seed.deserialize(de)
        } else {
            self.seed.deserialize(Except {
                de,
                hidden: self.hidden,
            })
        }
    }
}

/// A map with some entries hidden. Only built where a hidden path continues, which the file's own walk
/// found under a map, so whatever the type asks for, the file has a map here.
struct Except<'p, D> {
    de: D,
    hidden: Vec<&'p [String]>,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Except<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.de.deserialize_map(ExceptFilter {
            visitor,
            hidden: self.hidden,
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

struct ExceptFilter<'p, V> {
    visitor: V,
    hidden: Vec<&'p [String]>,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for ExceptFilter<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_map(ExceptKeys {
            map,
            hidden: self.hidden,
            below: Vec::new(),
        })
    }
}

/// Yields every entry but the hidden ones; `below` holds the hidden paths under the key just given.
struct ExceptKeys<'p, A> {
    map: A,
    hidden: Vec<&'p [String]>,
    below: Vec<&'p [String]>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for ExceptKeys<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.map.next_key::<String>()? {
            let below: Vec<&[String]> = self
                .hidden
                .iter()
                .filter(|p| p.first() == Some(&key))
                .map(|p| &p[1..])
                .collect();
            if below.iter().any(|p| p.is_empty()) {
                self.map.next_value::<IgnoredAny>()?;
                continue;
            }
            self.below = below;
            return seed
                .deserialize(IntoDeserializer::<A::Error>::into_deserializer(key))
                .map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.map.next_value_seed(ExceptSeed {
            seed,
            hidden: std::mem::take(&mut self.below),
        })
    }
}
