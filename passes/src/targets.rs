//! Choosing and planning the tensors a pass changes, shared by the passes: selector matching with its errors, and
//! the plan of integer encodings for quantization passes.

use compressor_models::{DType, Encoding, Form, Kind, Role, Selector};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pass::{PassPlan, PlanContext, PlannedChange, TensorMeta};

/// The tensors `select` matches (key `select`); an error when the selector is invalid or matches nothing.
pub(crate) fn selected<'i>(ctx: &'i PlanContext, select: &Selector) -> Result<Vec<&'i TensorMeta>> {
    let selector = select.compile().map_err(|problem| Error::Config {
        key: "select".into(),
        problem,
    })?;
    let matched: Vec<&TensorMeta> = ctx
        .info
        .tensors
        .iter()
        .filter(|t| selector.matches(&t.spec()))
        .collect();
    if matched.is_empty() {
        return Err(Error::EmptySelection {
            key: "select".into(),
            roles: Role::ALL
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(matched)
}

/// An error (key `select`) listing the selected tensors for which `bad` holds, with `what` they are and a hint.
pub(crate) fn reject(
    matched: &[&TensorMeta],
    bad: impl Fn(&TensorMeta) -> bool,
    what: &str,
    hint: &str,
) -> Result<()> {
    let names: Vec<&str> = matched
        .iter()
        .filter(|t| bad(t))
        .map(|t| t.name.as_str())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    Err(Error::Config {
        key: "select".into(),
        problem: format!(
            "selects tensors that are {what}: {}\nhint: {hint}",
            names.join(", ")
        ),
    })
}

/// The float matrices `select` matches; an error when it matches nothing or anything else.
pub(crate) fn selected_matrices<'i>(
    ctx: &'i PlanContext,
    select: &Selector,
) -> Result<Vec<&'i TensorMeta>> {
    let matched = selected(ctx, select)?;
    reject(
        &matched,
        |t| t.shape.len() != 2 || !t.dtype.is_float(),
        "not float matrices",
        "select weight matrices (kinds = [\"weight\"])",
    )?;
    reject(
        &matched,
        |t| matches!(t.form, compressor_models::Form::LowRank { .. }),
        "stored low-rank (two factors)",
        "leave them out (`exclude`); the pass that factorizes them quantizes their factors",
    )?;
    Ok(matched)
}

/// The tensors an encoding does not fit, grouped by the problem (tensors of one width share one line), so a bad
/// `group-size` says once per width what is wrong instead of once per tensor.
#[derive(Debug, Default)]
pub(crate) struct Misfits {
    /// (problem, names of the tensors that have it), in first-seen order.
    groups: Vec<(String, Vec<String>)>,
}

/// How many tensor names a [`Misfits`] line lists before `and N more`.
const NAMED: usize = 3;

impl Misfits {
    fn push(&mut self, name: &str, problem: String) {
        match self.groups.iter_mut().find(|(p, _)| *p == problem) {
            Some((_, names)) => names.push(name.to_string()),
            None => self.groups.push((problem, vec![name.to_string()])),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The number of tensors that do not fit.
    pub(crate) fn len(&self) -> usize {
        self.groups.iter().map(|(_, n)| n.len()).sum()
    }

    /// One line per problem: `group size 24 does not divide the input dimension 32; ... (10 tensors: `a`, `b`,
    /// `c` and 7 more)`, joined with `sep`.
    pub(crate) fn join(&self, sep: &str) -> String {
        self.groups
            .iter()
            .map(|(problem, names)| {
                let shown: Vec<String> =
                    names.iter().take(NAMED).map(|n| format!("`{n}`")).collect();
                let more = match names.len().saturating_sub(NAMED) {
                    0 => String::new(),
                    n => format!(" and {n} more"),
                };
                let count = if names.len() == 1 {
                    "1 tensor".to_string()
                } else {
                    format!("{} tensors", names.len())
                };
                format!("{problem} ({count}: {}{more})", shown.join(", "))
            })
            .collect::<Vec<_>>()
            .join(sep)
    }
}

/// The plan of storing each `[rows, cols]` tensor in its encoding, and the tensors the encoding does not fit.
pub(crate) fn plan_encodings<'i>(
    targets: impl IntoIterator<Item = (&'i TensorMeta, Encoding)>,
) -> (PassPlan, Misfits) {
    let mut plan = PassPlan::default();
    let mut problems = Misfits::default();
    for (t, e) in targets {
        let [rows, cols] = [t.shape[0], t.shape[1]];
        if let Err(p) = e.check(rows, cols) {
            problems.push(&t.name, p);
            continue;
        }
        if t.encoding.is_some() {
            plan.notes.push(format!(
                "`{}` is already quantized; it is decoded and quantized again",
                t.name
            ));
        }
        plan.changes.push(PlannedChange {
            name: t.name.clone(),
            dtype_before: t.dtype,
            dtype_after: DType::F32,
            shape_before: t.shape.clone(),
            shape_after: t.shape.clone(),
            bytes_before: t.bytes(),
            bytes_after: t.quantized_form(e).bytes(&t.shape),
            encoding_after: Some(e),
            form_after: match t.quantized_form(e) {
                Form::Quant { .. } => None,
                sparse => Some(sparse),
            },
        });
    }
    (plan, problems)
}

/// A plan note when the artifact may hold more than one distinct encoding, i.e. more than one compressed-tensors
/// config group: transformers 5.24 decodes every dense module with the first group's scheme
/// (`get_dense_scheme` in its compressed-tensors integration), so such artifacts fail to load there.
pub(crate) fn config_groups_note(encodings: impl IntoIterator<Item = Encoding>) -> Option<String> {
    let mut distinct: Vec<Encoding> = Vec::new();
    for e in encodings {
        if !distinct.contains(&e) {
            distinct.push(e);
        }
    }
    (distinct.len() > 1).then(|| format!(
        "the artifact may hold {} encodings (compressed-tensors config groups): transformers 5.24 decodes every module with the first group's scheme and fails to load it (measured; 4.57 with compressed-tensors 0.12 loads mixed 2-, 4- and 8-bit Linears without quantized embeddings). Our runtime reads it; for transformers use one width for every tensor or `compressor export --format dense`",
        distinct.len()
    ))
}

pub fn default_select() -> Selector {
    Selector {
        roles: vec!["attn.*".into(), "ffn.*".into()],
        kinds: Some(vec![Kind::Weight]),
        ..Selector::default()
    }
}

/// Bit widths of the embedding tables; a table left out stays as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EmbeddingBits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<u8>,
    /// Values per scale along a row; default: the pass's `group-size` (or one scale per row when the weights use
    /// another granularity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_size: Option<usize>,
}

/// An error unless `bits` is a width the format layer encodes (2 to 8).
pub(crate) fn check_bits(key: &str, bits: u8) -> Result<()> {
    if (compressor_models::quant::MIN_BITS..=compressor_models::quant::MAX_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(Error::Config {
            key: key.into(),
            problem: format!("{bits} bits is outside the supported range 2 to 8"),
        })
    }
}

/// The embedding tables `e` asks to quantize: (table, bits, config key). Errors for a width outside 2-8, a table the
/// model does not have, or a table already in `taken` (selected by the pass's `select`).
pub(crate) fn embedding_targets<'i>(
    ctx: &'i PlanContext,
    e: &EmbeddingBits,
    taken: &[&str],
) -> Result<Vec<(&'i TensorMeta, u8, &'static str)>> {
    let mut out = Vec::new();
    for (key, bits, role) in [
        ("embeddings.word", e.word, Role::EmbedTokens),
        ("embeddings.position", e.position, Role::EmbedPositions),
        ("embeddings.token-type", e.token_type, Role::EmbedTypes),
    ] {
        let Some(bits) = bits else { continue };
        check_bits(key, bits)?;
        let tables: Vec<&TensorMeta> = ctx
            .info
            .tensors
            .iter()
            .filter(|t| t.role == role && t.kind == Kind::Weight)
            .collect();
        if tables.is_empty() {
            return Err(Error::Config {
                key: key.into(),
                problem: format!("this model has no `{role}` table"),
            });
        }
        for t in tables {
            if taken.contains(&t.name.as_str()) {
                return Err(Error::Config {
                    key: key.into(),
                    problem: format!("`{}` is also selected by `select`; choose one", t.name),
                });
            }
            out.push((t, bits, key));
        }
    }
    Ok(out)
}
