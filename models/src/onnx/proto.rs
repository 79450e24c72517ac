//! A minimal protobuf encoder for the ONNX messages the exporter writes (field numbers from onnx.proto, proto2):
//! `ModelProto`, `OperatorSetIdProto`, `GraphProto`, `NodeProto`, `AttributeProto`, `TensorProto` (dims, data
//! type, name, `raw_data`), `ValueInfoProto` / `TypeProto.Tensor` / `TensorShapeProto` (dims by value or by
//! name).
//!
//! Every message knows its encoded length ([`Message::encoded_len`]) and writes itself to any `Write`
//! ([`Message::write_to`]), so a model is written in one pass with no copy of its initializers (the bulk of the
//! bytes): a length-delimited field needs only the length of what follows, computed without encoding it.
//! Fields are written in field-number order and repeated scalars unpacked, as the reference (Python) protobuf
//! runtime writes them, so small messages are byte-identical to `onnx`'s own serialisation.

use std::io::{self, Write};

/// `TensorProto.DataType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum DataType {
    Float = 1,
    Uint8 = 2,
    Int8 = 3,
    Int32 = 6,
    Int64 = 7,
}

impl DataType {
    /// Bytes of one element.
    pub fn size(self) -> usize {
        match self {
            DataType::Float | DataType::Int32 => 4,
            DataType::Uint8 | DataType::Int8 => 1,
            DataType::Int64 => 8,
        }
    }
}

/// The ONNX IR version written (IR 8 is the first to allow opset 17).
pub const IR_VERSION: i64 = 8;

const VARINT: u32 = 0;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// Bytes of `v` as a varint (negative values take ten bytes, as int64 two's complement).
pub fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

pub fn write_varint(w: &mut dyn Write, mut v: u64) -> io::Result<()> {
    let mut buf = [0u8; 10];
    let mut n = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf[n] = byte;
            n += 1;
            break;
        }
        buf[n] = byte | 0x80;
        n += 1;
    }
    w.write_all(&buf[..n])
}

fn tag_len(field: u32) -> usize {
    varint_len(u64::from(field << 3))
}

fn write_tag(w: &mut dyn Write, field: u32, wire: u32) -> io::Result<()> {
    write_varint(w, u64::from((field << 3) | wire))
}

/// A message field by field: lengths first ([`Message::encoded_len`]), bytes second ([`Message::write_to`]).
pub trait Message {
    fn encoded_len(&self) -> usize;
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()>;

    /// The encoded bytes (for small messages and tests).
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        // Writing into a Vec cannot fail.
        let _ = self.write_to(&mut out);
        out
    }
}

// Field helpers: `*_len` is the field's bytes including its tag, `put_*` writes it.
fn int_len(field: u32, v: i64) -> usize {
    tag_len(field) + varint_len(v as u64)
}
fn put_int(w: &mut dyn Write, field: u32, v: i64) -> io::Result<()> {
    write_tag(w, field, VARINT)?;
    write_varint(w, v as u64)
}
fn bytes_len(field: u32, n: usize) -> usize {
    tag_len(field) + varint_len(n as u64) + n
}
fn put_bytes(w: &mut dyn Write, field: u32, b: &[u8]) -> io::Result<()> {
    write_tag(w, field, LEN)?;
    write_varint(w, b.len() as u64)?;
    w.write_all(b)
}
fn msg_len(field: u32, m: &dyn Message) -> usize {
    bytes_len(field, m.encoded_len())
}
fn put_msg(w: &mut dyn Write, field: u32, m: &dyn Message) -> io::Result<()> {
    write_tag(w, field, LEN)?;
    write_varint(w, m.encoded_len() as u64)?;
    m.write_to(w)
}
/// A string field that is written only when non-empty (proto2 `optional` left unset).
fn opt_str_len(field: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        bytes_len(field, s.len())
    }
}
fn put_opt_str(w: &mut dyn Write, field: u32, s: &str) -> io::Result<()> {
    if s.is_empty() {
        Ok(())
    } else {
        put_bytes(w, field, s.as_bytes())
    }
}

/// `OperatorSetIdProto`: domain (1), version (2). The default domain is the empty string.
#[derive(Debug, Clone, PartialEq)]
pub struct OpsetId {
    pub domain: String,
    pub version: i64,
}

impl Message for OpsetId {
    fn encoded_len(&self) -> usize {
        // The domain is written even when empty: the ONNX checker reads an absent domain as the default one too,
        // but writing it keeps the two imports symmetric.
        bytes_len(1, self.domain.len()) + int_len(2, self.version)
    }
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        put_bytes(w, 1, self.domain.as_bytes())?;
        put_int(w, 2, self.version)
    }
}

/// `TensorProto` with its values in `raw_data` (little-endian, row-major): dims (1), data_type (2), name (8),
/// raw_data (9).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<i64>,
    pub data_type: DataType,
    pub raw: Vec<u8>,
}

impl Tensor {
    pub fn f32(name: &str, dims: &[usize], values: &[f32]) -> Self {
        Self::new(
            name,
            dims,
            DataType::Float,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    pub fn i64(name: &str, dims: &[usize], values: &[i64]) -> Self {
        Self::new(
            name,
            dims,
            DataType::Int64,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    pub fn i32(name: &str, dims: &[usize], values: &[i32]) -> Self {
        Self::new(
            name,
            dims,
            DataType::Int32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    pub fn i8(name: &str, dims: &[usize], values: &[i8]) -> Self {
        Self::new(
            name,
            dims,
            DataType::Int8,
            values.iter().map(|&v| v as u8).collect(),
        )
    }

    pub fn u8(name: &str, dims: &[usize], values: Vec<u8>) -> Self {
        Self::new(name, dims, DataType::Uint8, values)
    }

    fn new(name: &str, dims: &[usize], data_type: DataType, raw: Vec<u8>) -> Self {
        Self {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type,
            raw,
        }
    }

    /// Number of elements the dims describe.
    pub fn numel(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }
}

impl Message for Tensor {
    fn encoded_len(&self) -> usize {
        self.dims.iter().map(|&d| int_len(1, d)).sum::<usize>()
            + int_len(2, self.data_type as i64)
            + opt_str_len(8, &self.name)
            + bytes_len(9, self.raw.len())
    }
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        for &d in &self.dims {
            put_int(w, 1, d)?;
        }
        put_int(w, 2, self.data_type as i64)?;
        put_opt_str(w, 8, &self.name)?;
        put_bytes(w, 9, &self.raw)
    }
}

/// The value of an attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Float(f32),
    Int(i64),
    String(String),
    Tensor(Tensor),
    Ints(Vec<i64>),
}

/// `AttributeProto`: name (1), f (2), i (3), s (4), t (5), ints (8), type (20).
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub name: String,
    pub value: AttrValue,
}

impl Attribute {
    pub fn int(name: &str, v: i64) -> Self {
        Self {
            name: name.into(),
            value: AttrValue::Int(v),
        }
    }
    pub fn float(name: &str, v: f32) -> Self {
        Self {
            name: name.into(),
            value: AttrValue::Float(v),
        }
    }
    pub fn ints(name: &str, v: &[i64]) -> Self {
        Self {
            name: name.into(),
            value: AttrValue::Ints(v.to_vec()),
        }
    }
    pub fn string(name: &str, v: &str) -> Self {
        Self {
            name: name.into(),
            value: AttrValue::String(v.into()),
        }
    }
    pub fn tensor(name: &str, t: Tensor) -> Self {
        Self {
            name: name.into(),
            value: AttrValue::Tensor(t),
        }
    }

    /// `AttributeProto.AttributeType`.
    fn type_code(&self) -> i64 {
        match self.value {
            AttrValue::Float(_) => 1,
            AttrValue::Int(_) => 2,
            AttrValue::String(_) => 3,
            AttrValue::Tensor(_) => 4,
            AttrValue::Ints(_) => 7,
        }
    }
}

impl Message for Attribute {
    fn encoded_len(&self) -> usize {
        let value = match &self.value {
            AttrValue::Float(_) => tag_len(2) + 4,
            AttrValue::Int(v) => int_len(3, *v),
            AttrValue::String(s) => bytes_len(4, s.len()),
            AttrValue::Tensor(t) => msg_len(5, t),
            AttrValue::Ints(v) => v.iter().map(|&x| int_len(8, x)).sum(),
        };
        bytes_len(1, self.name.len()) + value + int_len(20, self.type_code())
    }
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        put_bytes(w, 1, self.name.as_bytes())?;
        match &self.value {
            AttrValue::Float(f) => {
                write_tag(w, 2, FIXED32)?;
                w.write_all(&f.to_le_bytes())?;
            }
            AttrValue::Int(v) => put_int(w, 3, *v)?,
            AttrValue::String(s) => put_bytes(w, 4, s.as_bytes())?,
            AttrValue::Tensor(t) => put_msg(w, 5, t)?,
            AttrValue::Ints(v) => {
                for &x in v {
                    put_int(w, 8, x)?;
                }
            }
        }
        put_int(w, 20, self.type_code())
    }
}

/// `NodeProto`: input (1), output (2), name (3), op_type (4), attribute (5), domain (7).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub name: String,
    pub op_type: String,
    pub attributes: Vec<Attribute>,
    /// Empty: the default (ai.onnx) domain.
    pub domain: String,
}

impl Message for Node {
    fn encoded_len(&self) -> usize {
        self.inputs
            .iter()
            .chain(&self.outputs)
            .map(|s| bytes_len(1, s.len()))
            .sum::<usize>()
            + opt_str_len(3, &self.name)
            + bytes_len(4, self.op_type.len())
            + self.attributes.iter().map(|a| msg_len(5, a)).sum::<usize>()
            + opt_str_len(7, &self.domain)
    }
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        for s in &self.inputs {
            put_bytes(w, 1, s.as_bytes())?;
        }
        for s in &self.outputs {
            put_bytes(w, 2, s.as_bytes())?;
        }
        put_opt_str(w, 3, &self.name)?;
        put_bytes(w, 4, self.op_type.as_bytes())?;
        for a in &self.attributes {
            put_msg(w, 5, a)?;
        }
        put_opt_str(w, 7, &self.domain)
    }
}

/// One dimension of a value's shape: a size, or a name (`batch`) for a dynamic axis.
#[derive(Debug, Clone, PartialEq)]
pub enum Dim {
    Value(i64),
    Param(String),
}

/// `ValueInfoProto` of a tensor: name (1), type (2) = `TypeProto { tensor_type (1) = { elem_type (1), shape (2) =
/// TensorShapeProto { dim (1) = { dim_value (1) | dim_param (2) } } } }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub elem_type: DataType,
    pub shape: Vec<Dim>,
}

struct DimMsg<'a>(&'a Dim);
impl Message for DimMsg<'_> {
    fn encoded_len(&self) -> usize {
        match self.0 {
            Dim::Value(v) => int_len(1, *v),
            Dim::Param(p) => bytes_len(2, p.len()),
        }
    }
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        match self.0 {
            Dim::Value(v) => put_int(w, 1, *v),
            Dim::Param(p) => put_bytes(w, 2, p.as_bytes()),
        }
    }
}

struct ShapeMsg<'a>(&'a [Dim]);
impl Message for ShapeMsg<'_> {
    fn encoded_len(&self) -> usize {
        self.0.iter().map(|d| msg_len(1, &DimMsg(d))).sum()
    }
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        for d in self.0 {
            put_msg(w, 1, &DimMsg(d))?;
        }
        Ok(())
    }
}

struct TensorTypeMsg<'a>(&'a ValueInfo);
impl Message for TensorTypeMsg<'_> {
    fn encoded_len(&self) -> usize {
        int_len(1, self.0.elem_type as i64) + msg_len(2, &ShapeMsg(&self.0.shape))
    }
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        put_int(w, 1, self.0.elem_type as i64)?;
        put_msg(w, 2, &ShapeMsg(&self.0.shape))
    }
}

struct TypeMsg<'a>(&'a ValueInfo);
impl Message for TypeMsg<'_> {
    fn encoded_len(&self) -> usize {
        msg_len(1, &TensorTypeMsg(self.0))
    }
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        put_msg(w, 1, &TensorTypeMsg(self.0))
    }
}

impl Message for ValueInfo {
    fn encoded_len(&self) -> usize {
        bytes_len(1, self.name.len()) + msg_len(2, &TypeMsg(self))
    }
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        put_bytes(w, 1, self.name.as_bytes())?;
        put_msg(w, 2, &TypeMsg(self))
    }
}

/// `GraphProto`: node (1), name (2), initializer (5), input (11), output (12).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub name: String,
    pub initializers: Vec<Tensor>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

impl Message for Graph {
    fn encoded_len(&self) -> usize {
        self.nodes.iter().map(|n| msg_len(1, n)).sum::<usize>()
            + opt_str_len(2, &self.name)
            + self
                .initializers
                .iter()
                .map(|t| msg_len(5, t))
                .sum::<usize>()
            + self.inputs.iter().map(|v| msg_len(11, v)).sum::<usize>()
            + self.outputs.iter().map(|v| msg_len(12, v)).sum::<usize>()
    }
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        for n in &self.nodes {
            put_msg(w, 1, n)?;
        }
        put_opt_str(w, 2, &self.name)?;
        for t in &self.initializers {
            put_msg(w, 5, t)?;
        }
        for v in &self.inputs {
            put_msg(w, 11, v)?;
        }
        for v in &self.outputs {
            put_msg(w, 12, v)?;
        }
        Ok(())
    }
}

/// `ModelProto`: ir_version (1), producer_name (2), producer_version (3), graph (7), opset_import (8).
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub ir_version: i64,
    pub producer_name: String,
    pub producer_version: String,
    pub graph: Graph,
    pub opset_import: Vec<OpsetId>,
}

impl Message for Model {
    fn encoded_len(&self) -> usize {
        int_len(1, self.ir_version)
            + opt_str_len(2, &self.producer_name)
            + opt_str_len(3, &self.producer_version)
            + msg_len(7, &self.graph)
            + self
                .opset_import
                .iter()
                .map(|o| msg_len(8, o))
                .sum::<usize>()
    }
    fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        put_int(w, 1, self.ir_version)?;
        put_opt_str(w, 2, &self.producer_name)?;
        put_opt_str(w, 3, &self.producer_version)?;
        put_msg(w, 7, &self.graph)?;
        for o in &self.opset_import {
            put_msg(w, 8, o)?;
        }
        Ok(())
    }
}
