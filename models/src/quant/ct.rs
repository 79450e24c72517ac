//! The compressed-tensors `quantization_config` of config.json: read (to load quantized checkpoints, ours and
//! llm-compressor's) and written (for our artifacts), following FORMATS.md §2.2's conservative key set.

use serde_json::{json, Map, Value};

use super::{packed_words, Encoding, QuantTensor, Strategy};
use crate::tensor::{DType, HostTensor};

/// The parts of one compressed-tensors matrix `B` on disk (`B` is `M.weight`, or a low-rank factor such as
/// `M.weight_u`), as suffixes of `B`: packed codes (int32), scales (the scale dtype), the int64 `[2]` shape and,
/// for asymmetric codes only, packed zero points (int32).
pub const PARTS: [&str; 4] = ["_packed", "_scale", "_shape", "_zero_point"];

/// The last segment of a tensor name (`weight_scale` of `M.weight_scale`), for messages that name a part.
pub fn leaf(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(_, l)| l)
}

/// `q` as compressed-tensors parts of `base`: `{base}_packed`, `{base}_scale`, `{base}_shape` and, when
/// asymmetric, `{base}_zero_point`.
pub fn write_parts(base: &str, q: &QuantTensor) -> crate::Result<Vec<(String, HostTensor)>> {
    let mut out = vec![(format!("{base}_packed"), packed_part(q)?)];
    out.extend(small_parts(base, q)?);
    Ok(out)
}

/// The shape of `{base}_packed`: int32 words, `[rows, ceil(cols * bits / 32)]`.
pub fn packed_shape(q: &QuantTensor) -> Vec<usize> {
    vec![q.rows, packed_words(q.cols, q.encoding.bits)]
}

/// `{base}_packed`: the codes packed into int32 words (the large part, made when it is written).
pub fn packed_part(q: &QuantTensor) -> crate::Result<HostTensor> {
    let words = q.packed();
    HostTensor::from_bytes(
        DType::I32,
        packed_shape(q),
        bytemuck::cast_slice(&words).to_vec(),
    )
}

/// The parts besides `{base}_packed`: `_scale`, `_shape` and, when asymmetric, `_zero_point`.
pub fn small_parts(base: &str, q: &QuantTensor) -> crate::Result<Vec<(String, HostTensor)>> {
    let mut out = Vec::with_capacity(3);
    let [sr, sc] = q.encoding.strategy.scale_shape(q.rows, q.cols);
    out.push((
        format!("{base}_scale"),
        HostTensor::from_f32(vec![sr, sc], &q.scales, q.encoding.scale_dtype)?,
    ));
    out.push((
        format!("{base}_shape"),
        HostTensor::from_i64(vec![2], &[q.rows as i64, q.cols as i64])?,
    ));
    if !q.encoding.symmetric {
        let zp = q.packed_zero_points();
        out.push((
            format!("{base}_zero_point"),
            HostTensor::from_bytes(
                DType::I32,
                vec![packed_words(sr, q.encoding.bits), sc],
                bytemuck::cast_slice(&zp).to_vec(),
            )?,
        ));
    }
    Ok(out)
}

/// Read the compressed-tensors parts of `base` with `encoding` (its scale dtype is taken from the scale tensor):
/// `{base}_packed` int32 with `{base}_scale`, `{base}_shape` and optional `{base}_zero_point`, or, when `base`
/// itself is an int8 matrix (`int-quantized`), its codes with `{base}_scale`. `context` (the config group) is added
/// to size errors. The error names the part by its last segment (`weight_scale`).
pub fn read_parts(
    base: &str,
    encoding: Encoding,
    context: &str,
    part: &crate::tensor::PartOf,
) -> Result<QuantTensor, String> {
    let name = |suffix: &str| format!("{base}{suffix}");
    let missing = |suffix: &str| format!("`{}` is missing", leaf(&name(suffix)));
    let mut scales = Scales::read(base, encoding, context, part)?;
    let encoding = scales.encoding;
    let quant = match part(&name("_packed")) {
        None => {
            let w = part(base)
                .filter(|w| w.dtype == DType::I8)
                .ok_or_else(|| missing("_packed"))?;
            let (rows, cols) = match w.shape[..] {
                [r, c] => (r, c),
                _ => return Err(format!("has shape {:?}, expected a matrix", w.shape)),
            };
            if encoding.bits != 8 {
                return Err(format!(
                    "is stored as int8 but its config group says {} bits",
                    encoding.bits
                ));
            }
            scales.check_shape(rows, cols)?;
            let codes: Vec<i8> = bytemuck::cast_slice::<u8, i8>(w.bytes()).to_vec();
            QuantTensor::from_codes(encoding, rows, cols, codes, scales.take(), None)
        }
        Some(packed) => {
            let shape = part(&name("_shape"))
                .ok_or_else(|| missing("_shape"))?
                .to_i64(&name("_shape"))
                .map_err(|e| format!("`{}`: {e}", leaf(&name("_shape"))))?;
            let (rows, cols) = match shape[..] {
                [r, c] if r > 0 && c > 0 => (r as usize, c as usize),
                _ => {
                    return Err(format!(
                        "`{}` holds {shape:?}, expected [out, in]",
                        leaf(&name("_shape"))
                    ))
                }
            };
            scales.check_shape(rows, cols)?;
            let words = scales.codes(
                "_packed",
                &packed,
                &[rows, super::packed_words(cols, encoding.bits)],
            )?;
            let zp = scales.zero_points(rows, cols, part)?;
            QuantTensor::from_packed(encoding, rows, cols, &words, scales.take(), zp.as_deref())
        }
    };
    quant.map_err(|p| scales.in_context(p))
}

/// The scales of a compressed-tensors matrix `base` (or of the quantized values of a sparse one), read and checked
/// before the matrix's other parts: `{base}_scale` exists, is finite and positive, and sets the scale dtype.
pub struct Scales<'a> {
    base: &'a str,
    context: &'a str,
    pub encoding: Encoding,
    scale_shape: Vec<usize>,
    values: Vec<f32>,
}

impl<'a> Scales<'a> {
    pub fn read(
        base: &'a str,
        mut encoding: Encoding,
        context: &'a str,
        part: &crate::tensor::PartOf,
    ) -> Result<Self, String> {
        let name = format!("{base}_scale");
        let scale = part(&name).ok_or_else(|| format!("`{}` is missing", leaf(&name)))?;
        encoding.scale_dtype = scale.dtype;
        let values = scale
            .to_f32(&name)
            .map_err(|e| format!("`{}`: {e}", leaf(&name)))?;
        if let Some((i, v)) = values
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && **v > 0.0))
        {
            return Err(format!(
                "`{}` holds {} scale {v} at flat index {i}; every scale must be finite and positive",
                leaf(&name),
                if v.is_finite() {
                    "a non-positive"
                } else {
                    "a non-finite"
                }
            ));
        }
        Ok(Self {
            base,
            context,
            encoding,
            scale_shape: scale.shape,
            values,
        })
    }

    /// `message` with the encoding it was read under: `(config group `g`: 4 bits, group 128)`.
    pub fn in_context(&self, message: String) -> String {
        format!(
            "{message} ({}: {} bits, {})",
            self.context,
            self.encoding.bits,
            self.encoding.strategy.describe()
        )
    }

    fn shape_error(&self, suffix: &str, got: &[usize], expected: &[usize]) -> String {
        self.in_context(format!(
            "`{}{suffix}` has shape {got:?}, expected {expected:?}",
            leaf(self.base)
        ))
    }

    /// The scale tensor's shape against the matrix's.
    pub fn check_shape(&self, rows: usize, cols: usize) -> Result<(), String> {
        let expected = self.encoding.strategy.scale_shape(rows, cols);
        if self.scale_shape[..] != expected[..] {
            return Err(self.shape_error("_scale", &self.scale_shape, &expected));
        }
        Ok(())
    }

    /// The packed int32 codes of part `{base}{suffix}`, which must have `shape`.
    pub fn codes(
        &self,
        suffix: &str,
        packed: &HostTensor,
        shape: &[usize],
    ) -> Result<Vec<i32>, String> {
        if packed.dtype != DType::I32 {
            return Err(format!(
                "`{}{suffix}` is {}, expected I32",
                leaf(self.base),
                packed.dtype
            ));
        }
        if packed.shape[..] != shape[..] {
            return Err(self.shape_error(suffix, &packed.shape, shape));
        }
        Ok(bytemuck::pod_collect_to_vec(packed.bytes()))
    }

    /// The packed zero points `{base}_zero_point` of a `[rows, cols]` matrix, if stored.
    pub fn zero_points(
        &self,
        rows: usize,
        cols: usize,
        part: &crate::tensor::PartOf,
    ) -> Result<Option<Vec<i32>>, String> {
        let [sr, sc] = self.encoding.strategy.scale_shape(rows, cols);
        match part(&format!("{}_zero_point", self.base)) {
            Some(z) if z.dtype == DType::I32 => {
                let expected = [super::packed_words(sr, self.encoding.bits), sc];
                if z.shape[..] != expected[..] {
                    return Err(self.shape_error("_zero_point", &z.shape, &expected));
                }
                Ok(Some(bytemuck::pod_collect_to_vec(z.bytes())))
            }
            Some(z) => Err(format!(
                "`{}_zero_point` is {}, expected packed I32",
                leaf(self.base),
                z.dtype
            )),
            None => Ok(None),
        }
    }

    /// The scale values (once).
    pub fn take(&mut self) -> Vec<f32> {
        std::mem::take(&mut self.values)
    }
}

/// One `config_groups` entry: which modules and how their weights are encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub targets: Vec<String>,
    pub encoding: Encoding,
    /// The group's `format` (or the global one): `pack-quantized` or `int-quantized`.
    pub format: String,
}

/// A parsed `quantization_config` with `quant_method = "compressed-tensors"`.
#[derive(Debug, Clone, PartialEq)]
pub struct CtConfig {
    pub format: String,
    pub groups: Vec<Group>,
    pub ignore: Vec<String>,
}

/// Formats whose integer weights we decode.
pub const READABLE_FORMATS: &[&str] = &[
    "pack-quantized",
    "int-quantized",
    "naive-quantized",
    "mixed-precision",
];

/// What kind of module a name refers to, for class-name targets (`Linear`, `Embedding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleClass {
    Linear,
    Embedding,
}

impl ModuleClass {
    fn class_name(self) -> &'static str {
        match self {
            ModuleClass::Linear => "Linear",
            ModuleClass::Embedding => "Embedding",
        }
    }
}

impl CtConfig {
    /// Parse `quantization_config`. `Ok(None)` when there is none or its method is not compressed-tensors; an
    /// error (naming the key) for a compressed-tensors config we cannot decode.
    pub fn from_config(raw: &Map<String, Value>) -> Result<Option<Self>, String> {
        let Some(q) = raw.get("quantization_config") else {
            return Ok(None);
        };
        if q.get("quant_method").and_then(Value::as_str) != Some("compressed-tensors") {
            return Ok(None);
        }
        let format = q
            .get("format")
            .and_then(Value::as_str)
            .unwrap_or("dense")
            .to_string();
        let status = q.get("quantization_status").and_then(Value::as_str);
        if !matches!(status, None | Some("compressed")) {
            return Err(format!(
                "`quantization_config.quantization_status` is `{}`; only compressed checkpoints can be read",
                status.unwrap_or_default()
            ));
        }
        let mut groups = Vec::new();
        if let Some(g) = q.get("config_groups").and_then(Value::as_object) {
            for (name, group) in g {
                let key = format!("quantization_config.config_groups.{name}");
                let targets = string_list(group.get("targets"))
                    .ok_or_else(|| format!("`{key}.targets` must be a list of names"))?;
                let Some(weights) = group.get("weights").filter(|w| !w.is_null()) else {
                    continue;
                };
                let encoding =
                    parse_weights(weights).map_err(|p| format!("`{key}.weights`: {p}"))?;
                let gformat = group
                    .get("format")
                    .and_then(Value::as_str)
                    .unwrap_or(&format)
                    .to_string();
                if !READABLE_FORMATS.contains(&gformat.as_str()) || gformat == "mixed-precision" {
                    return Err(format!(
                        "`{key}.format` `{gformat}` is not supported (supported: pack-quantized, int-quantized, naive-quantized)"
                    ));
                }
                groups.push(Group {
                    name: name.clone(),
                    targets,
                    encoding,
                    format: gformat,
                });
            }
        }
        let ignore = string_list(q.get("ignore")).unwrap_or_default();
        Ok(Some(Self {
            format,
            groups,
            ignore,
        }))
    }

    /// The group whose targets match module `name` of class `class`, unless the module is ignored.
    pub fn group_for(&self, name: &str, class: ModuleClass) -> Option<&Group> {
        if self.ignore.iter().any(|t| target_matches(t, name, class)) {
            return None;
        }
        self.groups
            .iter()
            .find(|g| g.targets.iter().any(|t| target_matches(t, name, class)))
    }
}

/// compressed-tensors' matching: an exact module name, a class name, or `re:<pattern>` matched at the start of the
/// name (Python's `re.match`).
pub fn target_matches(target: &str, name: &str, class: ModuleClass) -> bool {
    if let Some(pattern) = target.strip_prefix("re:") {
        return regex::Regex::new(&format!("^(?:{pattern})")).is_ok_and(|r| r.is_match(name));
    }
    target == name || target == class.class_name()
}

/// The strings of a JSON list (non-strings skipped); `None` when `v` is not a list.
fn string_list(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    })
}

fn parse_weights(w: &Value) -> Result<Encoding, String> {
    let bits = w
        .get("num_bits")
        .and_then(Value::as_u64)
        .ok_or("`num_bits` is missing")?;
    if w.get("type").and_then(Value::as_str).unwrap_or("int") != "int" {
        return Err("only integer weights (`type = \"int\"`) are supported".into());
    }
    let symmetric = w.get("symmetric").and_then(Value::as_bool).unwrap_or(true);
    let strategy = match w
        .get("strategy")
        .and_then(Value::as_str)
        .unwrap_or("tensor")
    {
        "tensor" => Strategy::Tensor,
        "channel" => Strategy::Channel,
        "group" => Strategy::Group {
            size: w
                .get("group_size")
                .and_then(Value::as_u64)
                .ok_or("strategy `group` needs `group_size`")? as usize,
        },
        "block" => {
            let b = w
                .get("block_structure")
                .and_then(Value::as_array)
                .filter(|b| b.len() == 2)
                .ok_or("strategy `block` needs `block_structure` = [rows, cols]")?;
            let dim = |i: usize| {
                b[i].as_u64()
                    .map(|v| v as usize)
                    .ok_or("`block_structure` must hold integers")
            };
            Strategy::Block {
                rows: dim(0)?,
                cols: dim(1)?,
            }
        }
        other => {
            return Err(format!(
                "strategy `{other}` is not supported (supported: tensor, channel, group, block)"
            ))
        }
    };
    if w.get("actorder")
        .is_some_and(|a| !a.is_null() && a != &json!(false))
    {
        return Err("activation ordering (`actorder`) is not supported".into());
    }
    Ok(Encoding {
        bits: u8::try_from(bits).map_err(|_| format!("{bits} bits is not supported"))?,
        symmetric,
        strategy,
        // The stored scale dtype is read from the tensor itself.
        scale_dtype: DType::F32,
        pow2_scales: false,
    })
}

/// The `weights` arguments of one encoding, with the conservative key set every loader accepts.
pub fn weights_args(e: &Encoding) -> Value {
    let (strategy, group_size, block) = match e.strategy {
        Strategy::Tensor => ("tensor", Value::Null, Value::Null),
        Strategy::Channel => ("channel", Value::Null, Value::Null),
        Strategy::Group { size } => ("group", json!(size), Value::Null),
        Strategy::Block { rows, cols } => ("block", Value::Null, json!([rows, cols])),
    };
    json!({
        "num_bits": e.bits,
        "type": "int",
        "symmetric": e.symmetric,
        "group_size": group_size,
        "strategy": strategy,
        "block_structure": block,
        "dynamic": false,
        "actorder": null,
        "observer": "minmax",
        "observer_kwargs": {}
    })
}

/// The `quantization_config` for modules stored with the given encodings (`(module name, encoding)` in any order):
/// one config group per distinct encoding, targeting exact module names, all `pack-quantized`. `dequantize` asks
/// transformers 5.x to decompress at load (needed by sentence-transformers, FORMATS.md §2.2).
pub fn quantization_config(modules: &[(String, Encoding)], dequantize: bool) -> Value {
    let mut distinct: Vec<Encoding> = Vec::new();
    for (_, e) in modules {
        let key = ct_key(e);
        if !distinct.iter().any(|d| ct_key(d) == key) {
            distinct.push(*e);
        }
    }
    distinct.sort_by_key(|e| {
        (
            std::cmp::Reverse(e.bits),
            format!("{:?}", e.strategy),
            !e.symmetric,
        )
    });
    let mut groups = Map::new();
    for (i, e) in distinct.iter().enumerate() {
        let mut targets: Vec<&str> = modules
            .iter()
            .filter(|(_, m)| ct_key(m) == ct_key(e))
            .map(|(n, _)| n.as_str())
            .collect();
        targets.sort_unstable();
        groups.insert(
            format!("group_{i}"),
            json!({
                "targets": targets,
                "weights": weights_args(e),
                "input_activations": null,
                "output_activations": null,
                "format": "pack-quantized"
            }),
        );
    }
    let mut q = json!({
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": groups,
        "ignore": [],
        "kv_cache_scheme": null,
        "global_compression_ratio": null,
        "sparsity_config": {},
        "transform_config": {},
        "version": "0.20.0"
    });
    if dequantize {
        q["dequantize"] = json!(true);
    }
    q
}

/// What compressed-tensors' config distinguishes (it does not record the scale dtype or power-of-two scales).
fn ct_key(e: &Encoding) -> (u8, bool, Strategy) {
    (e.bits, e.symmetric, e.strategy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_match_like_compressed_tensors() {
        assert!(target_matches(
            "Linear",
            "encoder.layer.0.attention.self.query",
            ModuleClass::Linear
        ));
        assert!(!target_matches(
            "Linear",
            "embeddings.word_embeddings",
            ModuleClass::Embedding
        ));
        assert!(target_matches(
            "re:.*attention\\.self\\.(query|key)$",
            "encoder.layer.3.attention.self.key",
            ModuleClass::Linear
        ));
        assert!(!target_matches(
            "re:attention",
            "encoder.layer.3.attention.self.key",
            ModuleClass::Linear
        ));
        assert!(target_matches(
            "pooler.dense",
            "pooler.dense",
            ModuleClass::Linear
        ));
    }

    #[test]
    fn written_configs_parse_back() -> Result<(), String> {
        let g = Encoding::symmetric(4, Strategy::Group { size: 128 });
        let c = Encoding::symmetric(8, Strategy::Channel);
        let q = quantization_config(
            &[
                ("encoder.layer.0.output.dense".into(), g),
                ("encoder.layer.0.intermediate.dense".into(), g),
                ("embeddings.word_embeddings".into(), c),
            ],
            true,
        );
        let mut raw = Map::new();
        raw.insert("quantization_config".into(), q);
        let ct = CtConfig::from_config(&raw)?.ok_or("compressed-tensors")?;
        assert_eq!(ct.groups.len(), 2);
        assert_eq!(ct.groups[0].encoding, c);
        assert_eq!(
            ct.group_for("encoder.layer.0.output.dense", ModuleClass::Linear)
                .map(|g| g.encoding),
            Some(g)
        );
        assert_eq!(ct.group_for("pooler.dense", ModuleClass::Linear), None);
        Ok(())
    }
}
