//! A TOML document as a tree of nodes that remember where they were written, and a serde `Deserializer` over that
//! tree whose errors carry the key path (`pass[0].select.roles`) and the line.
//!
//! The tree is read through the `toml` crate's deserializer, asking for every value as a spanned value (the same
//! protocol `toml::Spanned` uses). Deserializing typed sections from the tree instead of from the text lets the
//! pipeline parse a pass in two steps (its `kind`, then that kind's config) without losing positions, and lets it
//! collect every problem of a file instead of stopping at the first.

use std::fmt;
use std::ops::Range;

use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

// The protocol `toml` uses to hand out spans (serde_spanned's private names, stable within toml 0.8).
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];
const DATETIME_FIELD: &str = "$__toml_private_datetime";

/// A value and the byte range it was written at (absent for implicit tables).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub span: Option<Range<usize>>,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(String),
    Array(Vec<Node>),
    /// Entries in the order they were written.
    Table(Vec<(String, Node)>),
}

impl Value {
    /// How the value is called in messages (`a string`, `a table`).
    pub fn describe(&self) -> String {
        match self {
            Value::String(s) => format!("string {s:?}"),
            Value::Integer(i) => format!("integer `{i}`"),
            Value::Float(f) => format!("float `{f}`"),
            Value::Boolean(b) => format!("boolean `{b}`"),
            Value::Datetime(d) => format!("datetime `{d}`"),
            Value::Array(_) => "an array".into(),
            Value::Table(_) => "a table".into(),
        }
    }
}

impl Node {
    /// Parse a whole document; the root is a table.
    pub fn parse(text: &str) -> Result<Node, toml::de::Error> {
        let value: Value = serde::Deserialize::deserialize(toml::Deserializer::new(text))?;
        Ok(Node { span: None, value })
    }

    pub fn as_table(&self) -> Option<&[(String, Node)]> {
        match &self.value {
            Value::Table(t) => Some(t),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_table()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// The 1-based line of a byte offset in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    1 + text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, NodeVisitor)
    }
}

/// Accepts a spanned value (the span protocol) or, where the deserializer has no span, a plain value.
struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        ValueVisitor.visit_bool(v).map(plain)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        ValueVisitor.visit_i64(v).map(plain)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        ValueVisitor.visit_u64(v).map(plain)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        ValueVisitor.visit_f64(v).map(plain)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        ValueVisitor.visit_str(v).map(plain)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Node, A::Error> {
        ValueVisitor.visit_seq(seq).map(plain)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Ok(plain(Value::Table(Vec::new())));
        };
        if first != SPANNED_START {
            return table_from(first, map).map(plain);
        }
        let start: usize = map.next_value()?;
        let mut end = start;
        let mut value = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                SPANNED_END => end = map.next_value()?,
                SPANNED_VALUE => value = Some(map.next_value::<Value>()?),
                _ => {
                    return Err(de::Error::custom(format!(
                        "unexpected key `{key}` in a spanned value"
                    )))
                }
            }
        }
        let value = value.ok_or_else(|| de::Error::custom("spanned value without a value"))?;
        Ok(Node {
            span: Some(start..end),
            value,
        })
    }
}

fn plain(value: Value) -> Node {
    Node { span: None, value }
}

fn table_from<'de, A: MapAccess<'de>>(first: String, mut map: A) -> Result<Value, A::Error> {
    if first == DATETIME_FIELD {
        return Ok(Value::Datetime(map.next_value::<String>()?));
    }
    let mut entries = vec![(first, map.next_value::<Node>()?)];
    while let Some(key) = map.next_key::<String>()? {
        let value = map.next_value::<Node>()?;
        entries.push((key, value));
    }
    Ok(Value::Table(entries))
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Boolean(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Integer(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Integer)
            .map_err(|_| E::custom(format!("integer `{v}` is too large")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(n) = seq.next_element::<Node>()? {
            items.push(n);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        match map.next_key::<String>()? {
            None => Ok(Value::Table(Vec::new())),
            Some(first) => table_from(first, map),
        }
    }
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A key path such as `pass[0].select.roles`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn key(&self, k: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }

    pub fn index(&self, i: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// What went wrong while deserializing a node.
#[derive(Debug, Clone, PartialEq)]
pub enum DeErrorKind {
    UnknownKey {
        key: String,
        expected: &'static [&'static str],
    },
    UnknownVariant {
        value: String,
        expected: &'static [&'static str],
    },
    MissingKey {
        key: &'static str,
    },
    InvalidType {
        found: String,
        expected: String,
    },
    InvalidValue {
        found: String,
        expected: String,
    },
    Custom(String),
}

/// A deserialization error with the key path and span of the value it is about (filled in on the way out).
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    pub kind: DeErrorKind,
    pub path: Option<KeyPath>,
    pub span: Option<Range<usize>>,
}

impl DeError {
    fn new(kind: DeErrorKind) -> Self {
        Self {
            kind,
            path: None,
            span: None,
        }
    }

    fn locate(mut self, path: &KeyPath, span: &Option<Range<usize>>) -> Self {
        if self.path.is_none() {
            self.path = Some(path.clone());
            self.span = span.clone();
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.kind {
            DeErrorKind::UnknownKey { key, .. } => write!(f, "unknown key `{key}`"),
            DeErrorKind::UnknownVariant { value, .. } => write!(f, "unknown value `{value}`"),
            DeErrorKind::MissingKey { key } => write!(f, "missing key `{key}`"),
            DeErrorKind::InvalidType { found, expected } => {
                write!(f, "expected {expected}, found {found}")
            }
            DeErrorKind::InvalidValue { found, expected } => {
                write!(f, "invalid value {found}, expected {expected}")
            }
            DeErrorKind::Custom(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DeError {}

/// serde's names for expected types, in TOML words.
fn toml_expected(exp: &dyn de::Expected) -> String {
    let s = exp.to_string();
    match s.as_str() {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative integer".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        _ if s.starts_with("struct ") => "a table".into(),
        _ if s.starts_with("enum ") => "a string".into(),
        _ => s,
    }
}

fn toml_unexpected(u: de::Unexpected) -> String {
    match u {
        de::Unexpected::Map => "a table".into(),
        de::Unexpected::Seq => "an array".into(),
        de::Unexpected::Signed(i) => format!("integer `{i}`"),
        de::Unexpected::Unsigned(i) => format!("integer `{i}`"),
        de::Unexpected::Float(x) => format!("float `{x}`"),
        de::Unexpected::Bool(b) => format!("boolean `{b}`"),
        de::Unexpected::Str(s) => format!("string {s:?}"),
        other => other.to_string(),
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(DeErrorKind::Custom(msg.to_string()))
    }
    fn invalid_type(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Self::new(DeErrorKind::InvalidType {
            found: toml_unexpected(unexp),
            expected: toml_expected(exp),
        })
    }
    fn invalid_value(unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Self::new(DeErrorKind::InvalidValue {
            found: toml_unexpected(unexp),
            expected: toml_expected(exp),
        })
    }
    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        Self::new(DeErrorKind::Custom(format!(
            "expected {exp}, found {len} element(s)"
        )))
    }
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::new(DeErrorKind::UnknownVariant {
            value: variant.to_string(),
            expected,
        })
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self::new(DeErrorKind::UnknownKey {
            key: field.to_string(),
            expected,
        })
    }
    fn missing_field(field: &'static str) -> Self {
        Self::new(DeErrorKind::MissingKey { key: field })
    }
}

/// Deserializes a typed value from a [`Node`], locating errors at their key path.
pub struct NodeDeserializer<'a> {
    node: &'a Node,
    path: KeyPath,
    /// Keys of this table to hide (a pass's `kind`, already read).
    skip: &'a [&'a str],
}

impl<'a> NodeDeserializer<'a> {
    pub fn new(node: &'a Node, path: KeyPath) -> Self {
        Self {
            node,
            path,
            skip: &[],
        }
    }

    /// Deserialize the table without the keys in `skip`.
    pub fn skipping(node: &'a Node, path: KeyPath, skip: &'a [&'a str]) -> Self {
        Self { node, path, skip }
    }

    fn fail(&self, e: DeError) -> DeError {
        e.locate(&self.path, &self.node.span)
    }
}

impl<'de> Deserializer<'de> for NodeDeserializer<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::String(s) => visitor.visit_str(s),
            Value::Integer(i) => visitor.visit_i64(*i),
            Value::Float(x) => visitor.visit_f64(*x),
            Value::Boolean(b) => visitor.visit_bool(*b),
            Value::Datetime(d) => {
                // No setting takes a datetime; say so instead of reading it as a string.
                let found = format!("datetime `{d}`");
                Err(de::Error::invalid_type(
                    de::Unexpected::Other(&found),
                    &visitor,
                ))
            }
            Value::Array(items) => visitor.visit_seq(Seq {
                items: items.iter().enumerate(),
                path: &self.path,
            }),
            Value::Table(entries) => visitor.visit_map(Map {
                entries: entries.iter(),
                skip: self.skip,
                path: &self.path,
                value: None,
            }),
        };
        result.map_err(|e| self.fail(e))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::String(s) => {
                let d: de::value::StrDeserializer<DeError> = s.as_str().into_deserializer();
                visitor.visit_enum(d).map_err(|e| self.fail(e))
            }
            other => Err(self.fail(DeError::new(DeErrorKind::InvalidType {
                found: other.describe(),
                expected: "a string".into(),
            }))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

struct Seq<'a, I> {
    items: I,
    path: &'a KeyPath,
}

impl<'de, 'a, I: Iterator<Item = (usize, &'a Node)>> SeqAccess<'de> for Seq<'a, I> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            None => Ok(None),
            Some((i, node)) => {
                let path = self.path.index(i);
                seed.deserialize(NodeDeserializer::new(node, path.clone()))
                    .map(Some)
                    .map_err(|e| e.locate(&path, &node.span))
            }
        }
    }
}

struct Map<'a, I> {
    entries: I,
    skip: &'a [&'a str],
    path: &'a KeyPath,
    value: Option<(&'a str, &'a Node)>,
}

impl<'de, 'a, I: Iterator<Item = &'a (String, Node)>> MapAccess<'de> for Map<'a, I> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        for (key, node) in self.entries.by_ref() {
            if self.skip.contains(&key.as_str()) {
                continue;
            }
            self.value = Some((key, node));
            let d: de::value::StrDeserializer<DeError> = key.as_str().into_deserializer();
            return seed
                .deserialize(d)
                .map(Some)
                .map_err(|e| e.locate(&self.path.key(key), &node.span));
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let (key, node) = self.value.take().ok_or_else(|| {
            DeError::new(DeErrorKind::Custom("value requested before its key".into()))
        })?;
        let path = self.path.key(key);
        seed.deserialize(NodeDeserializer::new(node, path.clone()))
            .map_err(|e| e.locate(&path, &node.span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Inner {
        max_length: Option<u32>,
        #[serde(default)]
        names: Vec<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        inner: Inner,
    }

    fn de(text: &str) -> Result<Outer, DeError> {
        let root = Node::parse(text).expect("valid toml");
        Outer::deserialize(NodeDeserializer::new(&root, KeyPath::default()))
    }

    #[test]
    fn tree_keeps_order_and_spans() {
        let text = "a = 1\n[t]\nz = \"s\"\nb = [1, 2]\n\n[[p]]\nk = 1\n[[p]]\nk = 2\n";
        let root = Node::parse(text).expect("valid");
        let t = root.get("t").expect("t");
        let keys: Vec<&str> = t
            .as_table()
            .expect("table")
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["z", "b"]);
        let z = t.get("z").expect("z");
        assert_eq!(line_of(text, z.span.clone().expect("span").start), 3);
        let Value::Array(p) = &root.get("p").expect("p").value else {
            panic!("array")
        };
        let k2 = p[1].get("k").expect("k");
        assert_eq!(k2.value, Value::Integer(2));
        assert_eq!(line_of(text, k2.span.clone().expect("span").start), 9);
    }

    #[test]
    fn errors_carry_the_key_path_and_span() {
        let e = de("[inner]\nmax-length = \"x\"\n").expect_err("must fail");
        assert_eq!(e.path.expect("path").to_string(), "inner.max-length");
        assert_eq!(
            e.kind,
            DeErrorKind::InvalidType {
                found: "string \"x\"".into(),
                expected: "a non-negative integer".into()
            }
        );
        let e = de("[inner]\nnames = [\"a\", 3]\n").expect_err("must fail");
        assert_eq!(e.path.expect("path").to_string(), "inner.names[1]");
        let e = de("[inner]\nmax_length = 3\n").expect_err("must fail");
        assert_eq!(
            e.path.clone().expect("path").to_string(),
            "inner.max_length"
        );
        assert!(matches!(e.kind, DeErrorKind::UnknownKey { ref key, .. } if key == "max_length"));
        let e = de("inner = 3\n").expect_err("must fail");
        assert_eq!(
            e.kind,
            DeErrorKind::InvalidType {
                found: "integer `3`".into(),
                expected: "a table".into()
            }
        );
        assert_eq!(
            de("[inner]\nmax-length = 7\n")
                .expect("ok")
                .inner
                .max_length,
            Some(7)
        );
        let e = de("[inner]\nnames = [1979-05-27]\n").expect_err("datetime");
        assert_eq!(
            e.kind,
            DeErrorKind::InvalidType {
                found: "datetime `1979-05-27`".into(),
                expected: "a string".into()
            }
        );
    }
}
