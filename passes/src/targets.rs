//! Choosing and planning the tensors a pass changes, shared by the passes: selector matching with its errors, and
//! the plan of integer encodings for quantization passes.

use compressor_models::{DType, Encoding, Role, Selector};

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
    Ok(matched)
}

/// The plan of storing each `[rows, cols]` tensor in its encoding, and a line per tensor the encoding does not fit.
pub(crate) fn plan_encodings<'i>(
    targets: impl IntoIterator<Item = (&'i TensorMeta, Encoding)>,
) -> (PassPlan, Vec<String>) {
    let mut plan = PassPlan::default();
    let mut problems = Vec::new();
    for (t, e) in targets {
        let [rows, cols] = [t.shape[0], t.shape[1]];
        if let Err(p) = e.check(rows, cols) {
            problems.push(format!("tensor `{}` {:?}: {p}", t.name, t.shape));
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
            bytes_after: e.stored_bytes(rows, cols),
            encoding_after: Some(e),
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
