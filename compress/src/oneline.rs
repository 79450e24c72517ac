//! One-line commands for the common cases: `compressor quantize`, `compressor trim` and `compressor init`.
//!
//! `quantize` and `trim` write the text of the equivalent `pipeline.toml` and run it through the same parser,
//! planner and runner as `compressor run`, so they write the same bytes as that pipeline would (paths in the text
//! are as typed on the command line, relative to the working folder). `--print-pipeline` prints that text.
//! `init` writes a commented pipeline for a model, with the embedder or classifier recipe filled in.

use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;
use compressor_models::{Checkpoint, Head};

use crate::human::{size, thousands};
use crate::pipeline::{self, Pipeline};

/// `"..."`: a TOML basic string.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A path as UTF-8 text (TOML holds only UTF-8).
fn utf8<'p>(what: &str, p: &'p Path) -> anyhow::Result<&'p str> {
    p.to_str().with_context(|| {
        format!(
            "{what} `{}` is not valid UTF-8, which a pipeline file cannot hold\nhint: rename it, or write the pipeline by hand (`compressor init`)",
            p.display()
        )
    })
}

/// The settings of `compressor quantize`.
#[derive(Debug, Clone)]
pub struct Quantize {
    pub model: PathBuf,
    pub bits: u8,
    pub group_size: Option<usize>,
    /// Bits of the word, position and token-type embeddings (unchanged when absent).
    pub embeddings: Option<u8>,
    /// Whether the model has a token-type table (DistilBERT and MPNet have none).
    pub token_types: bool,
    pub output: PathBuf,
}

impl Quantize {
    /// The equivalent pipeline text.
    pub fn pipeline_text(&self) -> anyhow::Result<String> {
        let mut s = format!(
            "# compressor quantize: blockwise-quant of every encoder Linear{}\n[model]\npath = {}\n\n[[pass]]\nkind = \"blockwise-quant\"\nbits = {}\n",
            if self.embeddings.is_some() { " and the embeddings" } else { "" },
            quoted(utf8("model folder", &self.model)?),
            self.bits
        );
        if let Some(g) = self.group_size {
            s.push_str(&format!("group-size = {g}\n"));
        }
        if let Some(e) = self.embeddings {
            let types = if self.token_types {
                format!(", token-type = {e}")
            } else {
                String::new()
            };
            s.push_str(&format!(
                "embeddings = {{ word = {e}, position = {e}{types} }}\n"
            ));
        }
        s.push_str(&format!(
            "\n[output]\ndir = {}\n",
            quoted(utf8("output folder", &self.output)?)
        ));
        Ok(s)
    }
}

/// The settings of `compressor trim`.
#[derive(Debug, Clone)]
pub struct Trim {
    pub model: PathBuf,
    pub corpus: Vec<PathBuf>,
    /// JSONL field / TSV or CSV column holding the text.
    pub field: Option<String>,
    pub min_frequency: Option<u64>,
    pub output: PathBuf,
}

impl Trim {
    pub fn pipeline_text(&self) -> anyhow::Result<String> {
        let corpus: Vec<String> = self
            .corpus
            .iter()
            .map(|c| utf8("corpus file", c).map(quoted))
            .collect::<anyhow::Result<_>>()?;
        let mut s = format!(
            "# compressor trim: keep the token ids the corpus uses\n[model]\npath = {}\n\n[[pass]]\nkind = \"vocab-trim\"\ncorpus = [{}]\n",
            quoted(utf8("model folder", &self.model)?),
            corpus.join(", ")
        );
        if let Some(f) = &self.field {
            s.push_str(&format!("field = {}\n", quoted(f)));
        }
        if let Some(m) = self.min_frequency {
            s.push_str(&format!("min-frequency = {m}\n"));
        }
        s.push_str(&format!(
            "\n[output]\ndir = {}\n",
            quoted(utf8("output folder", &self.output)?)
        ));
        Ok(s)
    }
}

/// Parse a one-line command's pipeline text as if it were a file in the working folder named after the command
/// (`compressor quantize`), so that its relative paths are relative to the working folder.
pub fn parse(command: &str, text: &str) -> anyhow::Result<Pipeline> {
    pipeline::parse(Path::new(command), text).with_context(|| {
        format!("`{command}` built a pipeline that does not parse (this is a bug):\n{text}")
    })
}

/// The largest group size at most 128 that divides every width a weight group runs along (hidden size and FFN
/// width), so the template plans on any model.
pub fn group_size_for(hidden: usize, intermediate: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = gcd(hidden, intermediate).max(1);
    (1..=g.min(128))
        .rev()
        .find(|d| g.is_multiple_of(*d))
        .unwrap_or(1)
}

/// `to` relative to the folder `from` (both made absolute first), for paths written into a pipeline file.
pub fn relative(to: &Path, from: &Path) -> PathBuf {
    let to = crate::output::absolute(to);
    let from = crate::output::absolute(from);
    let t: Vec<Component> = to.components().collect();
    let f: Vec<Component> = from.components().collect();
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c.as_os_str());
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// The commented pipeline `compressor init` writes for the model at `model` into the file `file`.
pub fn init_text(model: &Path, file: &Path) -> anyhow::Result<String> {
    let ckpt = Checkpoint::open(model)
        .with_context(|| format!("cannot open model `{}`", model.display()))?;
    let b = ckpt.config.bert();
    let folder = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = crate::output::absolute(model)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let model_rel = relative(model, folder);
    let out_rel = relative(&Path::new("out").join(format!("{name}-w4")), folder);
    let shared = relative(Path::new("../shared/data"), folder);
    let shared = utf8("data folder", &shared)?;
    let group = group_size_for(b.hidden_size, b.intermediate_size);
    let classifier = !matches!(b.head, Head::None);
    let mut s = String::new();
    s.push_str(&format!(
        "# Pipeline for `{}`: {} ({} layers, hidden {}, {} parameters, {}).\n",
        name,
        ckpt.config.architecture,
        b.num_hidden_layers,
        b.hidden_size,
        thousands(ckpt.parameter_count()),
        size(ckpt.store.total_bytes())
    ));
    s.push_str(
        "# Written by `compressor init`. Check it: `compressor plan FILE` (reads no weight); run it: `compressor run FILE`.\n\
         # Paths are relative to this file's folder. Every key: docs/pipeline.md. Recipes and what they cost: docs/recipes.md.\n\n",
    );
    s.push_str(&format!(
        "[model]\npath = {}\n\n",
        quoted(utf8("model folder", &model_rel)?)
    ));
    s.push_str(
        "# Calibration text: needed by `activations` below, `hessian-mp`, and `prune` with activation importance.\n\
         # [calibration]\n",
    );
    s.push_str(&format!(
        "# data = {}   # JSONL, one {{\"text\": ...}} per line\n# samples = 256\n# max-length = 128\n\n",
        quoted(&format!("{shared}/calibration-wiki/en.jsonl"))
    ));
    s.push_str(
        "# Optional first pass (structure): keep only the token ids your text uses. Put text of your own domain in the\n\
         # corpus (and your evaluation's training split): trimmed to Wikipedia alone, all-MiniLM-L6-v2 lost 3.2 STS-B\n\
         # points; with STS-B and SST-2 train text added, 0.3 (docs/passes/vocab-trim.md).\n\
         # [[pass]]\n# kind = \"vocab-trim\"\n# corpus = [\"my-domain-text.jsonl\"]\n# min-frequency = 2\n\n",
    );
    s.push_str(&format!(
        "# {} recipe: 4-bit weights of every encoder Linear, one scale per {group} inputs, and 4-bit embeddings.\n\
         # all-MiniLM-L6-v2: 7.15x smaller, STS-B -0.37 points (docs/passes/blockwise-quant.md). Group sizes must\n\
         # divide the hidden size ({}) and the FFN width ({}). `bits` 2 to 8 (8 per channel: STS-B -0.04 points).\n",
        if classifier { "The classifier" } else { "The embedder" },
        b.hidden_size,
        b.intermediate_size
    ));
    // Only the tables the family has (DistilBERT and MPNet have no token types).
    let types = if b.naming().token_type.is_some() {
        ", token-type = 4"
    } else {
        ""
    };
    s.push_str(&format!(
        "[[pass]]\nkind = \"blockwise-quant\"\nbits = 4\ngroup-size = {group}\nembeddings = {{ word = 4, position = 4{types} }}\n\
         # activations = {{ bits = 8, block-size = 16 }}   # static 8-bit activations (our runtime); needs [calibration]\n\n"
    ));
    s.push_str(&format!(
        "[output]\ndir = {}\n\n",
        quoted(utf8("output folder", &out_rel)?)
    ));
    s.push_str(
        "# Measure the original and the compressed model on the same data (report.md beside the model). With\n\
         # max-regression the run exits 1 when the main metric drops by more (0.01 = 1 point); docs/eval.md.\n",
    );
    if classifier {
        s.push_str(&format!(
            "# [[eval]]\n# task = \"glue\"\n# data = {}\n# max-regression = 0.01\n",
            quoted(&format!("{shared}/sst2/dev.jsonl"))
        ));
    } else {
        s.push_str(&format!(
            "# [[eval]]\n# task = \"sts\"\n# data = {}\n# max-regression = 0.01\n",
            quoted(&format!("{shared}/sts-b/test.jsonl"))
        ));
    }
    Ok(s)
}

/// Write `text` to `file` atomically (a temporary file beside it, then a rename); an existing file is replaced only
/// with `force`.
pub fn write_new_file(file: &Path, text: &str, force: bool) -> anyhow::Result<()> {
    if file.is_dir() {
        anyhow::bail!(
            "`{}` is a folder\nhint: give the pipeline file to write, e.g. `--output {}`",
            file.display(),
            file.join("pipeline.toml").display()
        );
    }
    if file.exists() && !force {
        anyhow::bail!(
            "`{}` already exists\nhint: add --force to replace it, or choose another file with --output",
            file.display()
        );
    }
    let name = file
        .file_name()
        .with_context(|| format!("`{}` names no file", file.display()))?;
    let tmp = file.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::write(&tmp, text)
        .and_then(|_| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, file));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write `{}`", file.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_sizes_divide_both_widths() {
        assert_eq!(group_size_for(384, 1536), 128);
        assert_eq!(group_size_for(16, 32), 16);
        assert_eq!(group_size_for(768, 3072), 128);
        assert_eq!(group_size_for(312, 1200), 24);
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/a/b/model"), Path::new("/a/c")),
            Path::new("../b/model")
        );
        assert_eq!(
            relative(Path::new("/a/b"), Path::new("/a/b")),
            Path::new(".")
        );
    }

    #[test]
    fn quantize_text_parses_to_the_pass_it_names() -> anyhow::Result<()> {
        let q = Quantize {
            model: "m \"x\"".into(),
            bits: 3,
            group_size: Some(64),
            embeddings: Some(8),
            token_types: true,
            output: "o".into(),
        };
        let p = parse("compressor quantize", &q.pipeline_text()?)?;
        assert_eq!(p.model.path, "m \"x\"");
        let json = serde_json::to_value(&p.passes[0])?;
        assert_eq!(json["bits"], 3);
        assert_eq!(json["group-size"], 64);
        assert_eq!(json["embeddings"]["token-type"], 8);
        assert_eq!(p.output_dir(), Path::new("o"));
        Ok(())
    }
}
