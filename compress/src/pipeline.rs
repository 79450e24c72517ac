//! `pipeline.toml`: the raw spec, parsed strictly (unknown keys, unknown pass kinds and wrong types are errors
//! that name the key path and line, with a did-you-mean hint), every problem of the file reported at once.
//!
//! Passes are parsed in two steps: the `kind` key first, then that kind's `Config` from the rest of the table.
//! Relative paths are relative to the folder of the pipeline file.

use std::path::{Path, PathBuf};

use compressor_eval::tasks::TaskSpec;
use compressor_passes::registry::{self, PassSpec};
use compressor_passes::suggest::did_you_mean;
use serde::{Deserialize, Serialize};

use crate::problems::{Problem, Problems};
use crate::tomltree::{line_of, DeError, DeErrorKind, KeyPath, Node, NodeDeserializer, Value};

/// The top-level keys of a pipeline file.
pub const SECTIONS: &[&str] = &["model", "calibration", "pass", "output", "eval"];

/// `[model]`: the checkpoint to compress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ModelSection {
    /// A Hugging Face checkpoint folder (config.json, model.safetensors, tokenizer files).
    pub path: String,
}

/// `[calibration]`: the data shared by every pass that needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CalibrationSection {
    /// A local JSONL file with one record per line.
    pub data: String,
    /// The record field holding the text.
    #[serde(default = "default_field")]
    pub field: String,
    /// How many records to sample.
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// Token sequences are cut to this length.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Seed for sampling (and for every pass that samples).
    #[serde(default)]
    pub seed: u64,
    /// The field of each record's second text (sentence pairs, as MRPC's `sentence2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair_field: Option<String>,
}

fn default_field() -> String {
    "text".into()
}
fn default_samples() -> usize {
    256
}
fn default_max_length() -> usize {
    128
}

/// The artifact's on-disk format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// Dense safetensors with standard Hugging Face names and shapes.
    #[default]
    Safetensors,
}

impl OutputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Safetensors => "safetensors",
        }
    }
}

/// `[output]`: where and how the artifact is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OutputSection {
    /// The artifact folder; must not exist unless `--force` is given, and must lie outside the model folder.
    pub dir: String,
    #[serde(default)]
    pub format: OutputFormat,
}

/// A parsed pipeline with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// The pipeline file as given.
    pub file: PathBuf,
    /// The folder relative paths are resolved against.
    pub base: PathBuf,
    pub model: ModelSection,
    pub calibration: Option<CalibrationSection>,
    pub passes: Vec<PassSpec>,
    pub output: OutputSection,
    /// `[[eval]]`: tasks run on the original and the compressed model; paths as written.
    pub evals: Vec<TaskSpec>,
}

/// The resolved pipeline as a document (what `compressor plan` prints and the manifest records).
#[derive(Debug, Serialize)]
pub struct Resolved<'a> {
    pub model: &'a ModelSection,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<&'a CalibrationSection>,
    pub pass: &'a [PassSpec],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<&'a OutputSection>,
    #[serde(skip_serializing_if = "<[TaskSpec]>::is_empty")]
    pub eval: &'a [TaskSpec],
}

impl Pipeline {
    /// The model folder, resolved against the pipeline's folder.
    pub fn model_dir(&self) -> PathBuf {
        self.base.join(&self.model.path)
    }

    /// The output folder, resolved against the pipeline's folder.
    pub fn output_dir(&self) -> PathBuf {
        self.base.join(&self.output.dir)
    }

    /// The calibration data file, resolved against the pipeline's folder.
    pub fn calibration_data(&self) -> Option<PathBuf> {
        self.calibration.as_ref().map(|c| self.base.join(&c.data))
    }

    /// The `[calibration]` section as passes see it, with its data path resolved.
    pub fn calibration_spec(&self) -> Option<compressor_passes::CalibrationSpec> {
        self.calibration
            .as_ref()
            .map(|c| compressor_passes::CalibrationSpec {
                data: self.base.join(&c.data),
                field: c.field.clone(),
                samples: c.samples,
                max_length: c.max_length,
                seed: c.seed,
                pair_field: c.pair_field.clone(),
            })
    }

    pub fn seed(&self) -> u64 {
        self.calibration.as_ref().map_or(0, |c| c.seed)
    }

    /// The pass that carries out `spec`, with the relative paths of its config resolved against the pipeline's
    /// folder (the spec itself keeps the paths as written, for the plan and the manifest).
    pub fn build_pass(&self, spec: &PassSpec) -> Box<dyn compressor_passes::Pass> {
        spec.with_base(&self.base).build()
    }

    /// The resolved document; `with_output` false leaves out `[output]` (the manifest does not record where the
    /// artifact was written, so the same run into two folders gives identical files).
    pub fn resolved(&self, with_output: bool) -> Resolved<'_> {
        Resolved {
            model: &self.model,
            calibration: self.calibration.as_ref(),
            pass: &self.passes,
            output: with_output.then_some(&self.output),
            eval: &self.evals,
        }
    }

    /// The `[[eval]]` specs with their data paths resolved against the pipeline's folder.
    pub fn resolved_evals(&self) -> Vec<TaskSpec> {
        self.evals
            .iter()
            .map(|e| {
                let mut e = e.clone();
                if e.name.is_none() {
                    e.name = Some(e.display_name());
                }
                e.data = e.data.iter().map(|d| self.base.join(d)).collect();
                e.test = e.test.as_ref().map(|t| self.base.join(t));
                e
            })
            .collect()
    }

    /// The resolved pipeline as TOML that parses back to the same pipeline.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.resolved(true))
            .unwrap_or_else(|e| format!("# cannot print the pipeline: {e}\n"))
    }
}

/// Why a pipeline could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("failed to read pipeline `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is a folder, not a pipeline file\nhint: give the pipeline file (e.g. `{}`); to compress a model folder without one: `compressor quantize {} --bits 4 --output DIR`, or `compressor init {}` to write a pipeline", path.display(), path.join("pipeline.toml").display(), path.display(), path.display())]
    Folder { path: PathBuf },
    #[error("failed to parse pipeline `{}`", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        problems: Problems,
    },
}

/// Read and parse a pipeline file.
pub fn load(file: &Path) -> Result<Pipeline, PipelineError> {
    if file.is_dir() {
        return Err(PipelineError::Folder {
            path: file.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(file).map_err(|source| PipelineError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    parse(file, &text)
}

/// Parse pipeline text read from `file` (used for messages and to resolve relative paths).
pub fn parse(file: &Path, text: &str) -> Result<Pipeline, PipelineError> {
    let fail = |problems: Vec<Problem>| PipelineError::Parse {
        path: file.to_path_buf(),
        problems: Problems(problems),
    };
    let root = Node::parse(text).map_err(|e| fail(vec![Problem::new(e.to_string().trim_end())]))?;
    let mut p = Parser {
        text,
        problems: Vec::new(),
    };
    let mut model = None;
    let mut calibration = None;
    let mut passes = Vec::new();
    let mut output = None;
    let mut evals = Vec::new();
    for (key, node) in root.as_table().unwrap_or_default() {
        let path = KeyPath::default().key(key);
        match key.as_str() {
            "model" => model = p.typed::<ModelSection>(node, path),
            "calibration" => calibration = p.typed::<CalibrationSection>(node, path),
            "output" => output = p.typed::<OutputSection>(node, path),
            "pass" => match &node.value {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(spec) = p.pass(item, path.index(i)) {
                            passes.push(spec);
                        }
                    }
                }
                other => p.problems.push(
                    Problem::new(format!(
                        "wrong type for `pass`{}: expected an array of tables, found {}",
                        p.line(node),
                        other.describe()
                    ))
                    .hint("write each pass as a `[[pass]]` table"),
                ),
            },
            "eval" => match &node.value {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(spec) = p.typed::<TaskSpec>(item, path.index(i)) {
                            evals.push(spec);
                        }
                    }
                }
                other => p.problems.push(
                    Problem::new(format!(
                        "wrong type for `eval`{}: expected an array of tables, found {}",
                        p.line(node),
                        other.describe()
                    ))
                    .hint("write each evaluation as an `[[eval]]` table"),
                ),
            },
            other => p.unknown_key(&path, node, other, SECTIONS),
        }
    }
    if model.is_none() && root.get("model").is_none() {
        p.problems.push(
            Problem::new("missing table `[model]`")
                .hint("add `[model]` with `path = \"<checkpoint folder>\"`"),
        );
    }
    if output.is_none() && root.get("output").is_none() {
        p.problems.push(
            Problem::new("missing table `[output]`")
                .hint("add `[output]` with `dir = \"<artifact folder>\"`"),
        );
    }
    if let Some(c) = &calibration {
        p.check_calibration(c, &root);
    }
    if let Some(o) = &output {
        if o.dir.trim().is_empty() {
            p.problems.push(Problem::new(format!(
                "`output.dir`{} must not be empty",
                p.line_at(&root, &["output", "dir"])
            )));
        }
    }
    if let Some(m) = &model {
        if m.path.trim().is_empty() {
            p.problems.push(Problem::new(format!(
                "`model.path`{} must not be empty",
                p.line_at(&root, &["model", "path"])
            )));
        }
    }
    match (model, output) {
        (Some(model), Some(output)) if p.problems.is_empty() => Ok(Pipeline {
            file: file.to_path_buf(),
            base: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            model,
            calibration,
            passes,
            output,
            evals,
        }),
        _ => Err(fail(p.problems)),
    }
}

struct Parser<'t> {
    text: &'t str,
    problems: Vec<Problem>,
}

impl Parser<'_> {
    /// ` (line N)` for a node with a position, else empty.
    fn line(&self, node: &Node) -> String {
        self.span_line(&node.span)
    }

    fn span_line(&self, span: &Option<std::ops::Range<usize>>) -> String {
        match span {
            Some(s) => format!(" (line {})", line_of(self.text, s.start)),
            None => String::new(),
        }
    }

    fn line_at(&self, root: &Node, keys: &[&str]) -> String {
        let mut node = Some(root);
        for k in keys {
            node = node.and_then(|n| n.get(k));
        }
        node.map(|n| self.line(n)).unwrap_or_default()
    }

    fn typed<T: for<'de> Deserialize<'de>>(&mut self, node: &Node, path: KeyPath) -> Option<T> {
        match T::deserialize(NodeDeserializer::new(node, path)) {
            Ok(v) => Some(v),
            Err(e) => {
                let problem = self.problem(e, None);
                self.problems.push(problem);
                None
            }
        }
    }

    fn unknown_key(&mut self, path: &KeyPath, node: &Node, key: &str, expected: &[&str]) {
        let problem = Problem::new(format!(
            "unknown key `{path}`{}, expected {}",
            self.line(node),
            one_of(expected)
        ));
        self.problems
            .push(with_suggestion(problem, path, key, expected));
    }

    /// Two-step parse of one `[[pass]]` table.
    fn pass(&mut self, node: &Node, path: KeyPath) -> Option<PassSpec> {
        if node.as_table().is_none() {
            self.problems.push(Problem::new(format!(
                "wrong type for `{path}`{}: expected a table, found {}",
                self.line(node),
                node.value.describe()
            )));
            return None;
        }
        let kind = match node.get("kind") {
            None => {
                self.problems.push(
                    Problem::new(format!(
                        "missing key `{}`{}",
                        path.key("kind"),
                        self.line(node)
                    ))
                    .hint(format!(
                        "every `[[pass]]` needs a `kind`: one of {}",
                        registry::kinds()
                    )),
                );
                return None;
            }
            Some(Node {
                value: Value::String(k),
                ..
            }) => k.clone(),
            Some(other) => {
                self.problems.push(Problem::new(format!(
                    "wrong type for `{}`{}: expected a string, found {}",
                    path.key("kind"),
                    self.line(other),
                    other.value.describe()
                )));
                return None;
            }
        };
        let kind_node = node.get("kind").unwrap_or(node);
        match PassSpec::from_config(
            &kind,
            NodeDeserializer::skipping(node, path.clone(), &["kind"]),
        ) {
            Ok(Some(spec)) => Some(spec),
            Ok(None) => {
                let problem = Problem::new(format!(
                    "unknown pass kind `{kind}` at `{}`{}",
                    path.key("kind"),
                    self.line(kind_node)
                ));
                let problem = match registry::suggest(&kind) {
                    Some(s) => problem.hint(format!("did you mean `{s}`?")),
                    None => problem.hint(format!(
                        "the pass kinds are: {} (`compressor passes` describes them)",
                        registry::kinds()
                    )),
                };
                self.problems.push(problem);
                None
            }
            Err(e) => {
                let problem = self.problem(e, Some(&kind));
                self.problems.push(problem);
                None
            }
        }
    }

    /// A located deserialization error as a problem with hints.
    fn problem(&self, e: DeError, pass_kind: Option<&str>) -> Problem {
        let path = e.path.clone().unwrap_or_default();
        let line = self.span_line(&e.span);
        let shown = if path.is_root() {
            "(top level)".to_string()
        } else {
            path.to_string()
        };
        match e.kind {
            DeErrorKind::UnknownKey { key, expected } => {
                let mut expected: Vec<&str> = expected.to_vec();
                if pass_kind.is_some() && path.0.len() == 3 {
                    // A pass table also holds `kind`.
                    expected.insert(0, "kind");
                }
                let problem = Problem::new(format!(
                    "unknown key `{shown}`{line}, expected {}",
                    one_of(&expected)
                ));
                with_suggestion(problem, &path, &key, &expected)
            }
            DeErrorKind::UnknownVariant { value, expected } => {
                let problem = Problem::new(format!(
                    "unknown value `{value}` for `{shown}`{line}, expected {}",
                    one_of(expected)
                ));
                match did_you_mean(&value, expected.iter().copied()) {
                    Some(s) => problem.hint(format!("did you mean `{s}`?")),
                    None => problem,
                }
            }
            DeErrorKind::MissingKey { key } => {
                let full = if path.is_root() {
                    key.to_string()
                } else {
                    path.key(key).to_string()
                };
                Problem::new(format!("missing key `{full}`{line}"))
            }
            DeErrorKind::InvalidType { found, expected } => Problem::new(format!(
                "wrong type for `{shown}`{line}: expected {expected}, found {found}"
            )),
            DeErrorKind::InvalidValue { found, expected } => Problem::new(format!(
                "invalid value for `{shown}`{line}: expected {expected}, found {found}"
            )),
            DeErrorKind::Custom(m) => Problem::new(format!("invalid `{shown}`{line}: {m}")),
        }
    }

    fn check_calibration(&mut self, c: &CalibrationSection, root: &Node) {
        if c.samples == 0 {
            let line = self.line_at(root, &["calibration", "samples"]);
            self.problems.push(Problem::new(format!(
                "`calibration.samples`{line} must be at least 1"
            )));
        }
        if c.max_length == 0 {
            let line = self.line_at(root, &["calibration", "max-length"]);
            self.problems.push(Problem::new(format!(
                "`calibration.max-length`{line} must be at least 1"
            )));
        }
    }
}

/// "`a`" or "one of `a`, `b`".
fn one_of(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    match quoted.len() {
        0 => "no keys here".into(),
        1 => quoted[0].clone(),
        _ => format!("one of {}", quoted.join(", ")),
    }
}

fn with_suggestion(problem: Problem, path: &KeyPath, key: &str, expected: &[&str]) -> Problem {
    match did_you_mean(key, expected.iter().copied()) {
        Some(s) => {
            let mut parent = path.clone();
            parent.0.pop();
            problem.hint(format!("did you mean `{}`?", parent.key(s)))
        }
        None => problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> String {
        match parse(Path::new("p.toml"), text) {
            Ok(_) => "ok".into(),
            Err(PipelineError::Parse { problems, .. }) => problems.to_string(),
            Err(e) => e.to_string(),
        }
    }

    const GOOD: &str = "[model]\npath = \"m\"\n\n[[pass]]\nkind = \"cast\"\ndtype = \"f16\"\n\n[output]\ndir = \"out\"\n";

    #[test]
    fn a_good_pipeline_parses_and_prints_back() -> Result<(), PipelineError> {
        let p = parse(Path::new("dir/p.toml"), GOOD)?;
        assert_eq!(p.model_dir(), Path::new("dir/m"));
        assert_eq!(p.output.format, OutputFormat::Safetensors);
        let again = parse(Path::new("dir/p.toml"), &p.to_toml())?;
        assert_eq!(again, p);
        Ok(())
    }

    #[test]
    fn every_problem_is_listed_with_path_line_and_hint() {
        let text = "[model]\npth = \"m\"\n\n[[pass]]\nkind = \"cst\"\n\n[[pass]]\nkind = \"cast\"\ndtype = \"fp16\"\nselect = { roles = 3 }\n\n[output]\ndir = 5\n[calibraton]\n";
        assert_eq!(
            problems(text),
            "unknown key `model.pth` (line 2), expected `path`\n\
             unknown pass kind `cst` at `pass[0].kind` (line 5)\n\
             unknown value `fp16` for `pass[1].dtype` (line 9), expected one of `f16`, `bf16`, `f32`\n\
             wrong type for `output.dir` (line 13): expected a string, found integer `5`\n\
             unknown key `calibraton` (line 14), expected one of `model`, `calibration`, `pass`, `output`, `eval`\n\
             hint: did you mean `model.path`?\n\
             hint: did you mean `cast`?\n\
             hint: did you mean `f16`?\n\
             hint: did you mean `calibration`?"
        );
    }

    #[test]
    fn pass_keys_and_missing_pieces() {
        let text = "[model]\npath = \"m\"\n[[pass]]\nkind = \"cast\"\ndtyp = \"f16\"\n[[pass]]\ndtype = \"f16\"\n";
        assert_eq!(
            problems(text),
            "unknown key `pass[0].dtyp` (line 5), expected one of `kind`, `dtype`, `select`\n\
             missing key `pass[1].kind` (line 6)\n\
             missing table `[output]`\n\
             hint: did you mean `pass[0].dtype`?\n\
             hint: every `[[pass]]` needs a `kind`: one of cast, blockwise-quant, hessian-mp, prune, qa-svd, fisher-prune, vib-prune, vocab-trim\n\
             hint: add `[output]` with `dir = \"<artifact folder>\"`"
        );
        assert_eq!(
            problems("[model]\npath = \"m\"\n[[pass]]\nkind = \"cast\"\n[output]\ndir = \"o\"\n[[eval]]\ntask = \"sts\"\n"),
            "missing key `pass[0].dtype` (line 3)\nmissing key `eval[0].data` (line 7)"
        );
    }

    #[test]
    fn syntax_errors_come_from_toml() {
        let msg = problems("[model\npath = 1\n");
        assert!(
            msg.starts_with("TOML parse error at line 1, column 7"),
            "{msg}"
        );
    }

    #[test]
    fn calibration_defaults_are_filled_in() -> Result<(), PipelineError> {
        let p = parse(
            Path::new("p.toml"),
            "[model]\npath = \"m\"\n[calibration]\ndata = \"d.jsonl\"\n[output]\ndir = \"o\"\n",
        )?;
        let c = p.calibration.clone().expect("calibration");
        assert_eq!(
            (c.field.as_str(), c.samples, c.max_length, c.seed),
            ("text", 256, 128, 0)
        );
        assert!(p.to_toml().contains("max-length = 128"));
        Ok(())
    }
}
