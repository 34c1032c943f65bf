//! Asks a serde struct for its field names, so the loader can name the nearest valid key
//! without a second, hand-kept list of keys that could drift from the structs.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Visitor};

/// The field names a `#[derive(Deserialize)]` struct declares.
pub(crate) fn field_names<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut names = None;
    let _ = T::deserialize(Probe(&mut names));
    names.unwrap_or(&[])
}

/// A deserializer that records the field list handed to `deserialize_struct` and stops.
struct Probe<'a>(&'a mut Option<&'static [&'static str]>);

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("field probe")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<M: fmt::Display>(_: M) -> Self {
        Stop
    }
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        *self.0 = Some(fields);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::field_names;
    use crate::config::raw::RawApi;

    #[test]
    fn lists_the_fields_of_a_raw_section() {
        let names = field_names::<RawApi>();
        assert!(names.contains(&"rate_limit_per_minute"));
        assert!(names.contains(&"media_asset_path"));
        assert_eq!(names.len(), 7);
    }
}
