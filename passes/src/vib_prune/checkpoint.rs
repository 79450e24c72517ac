//! The training state as a checkpoint: arrays in the analyses cache's safetensors format (f64, exact for the f32
//! state), with the key's parts (model fingerprint, data hash, settings) as the file's metadata, so a checkpoint
//! says what run it belongs to.

use std::path::PathBuf;

use super::train::State;
use crate::analyses::cache::{self, Arrays, Key};
use crate::error::{Error, Result};
use crate::optim::Adam;

/// A checkpoint's arrays: masks and their moments, the multipliers and theirs, trained weights, the history.
fn to_arrays(state: &State) -> Arrays {
    let mut a = Arrays::default();
    let f = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    a.insert("step", vec![1], vec![state.step as f64]);
    for (prefix, opt) in [("masks", &state.mask_opt), ("lambdas", &state.lambdas)] {
        for (part, v) in ["value", "m", "v"].iter().zip(opt.parts()) {
            a.insert(format!("{prefix}.{part}"), vec![v.len()], f(v));
        }
    }
    for w in &state.weights {
        for (what, opt) in [("weight", &w.weight), ("bias", &w.bias)] {
            for (part, v) in ["value", "m", "v"].iter().zip(opt.parts()) {
                a.insert(
                    format!("weights.{}.{what}.{part}", w.name),
                    vec![v.len()],
                    f(v),
                );
            }
        }
    }
    let history: Vec<f64> = state.history.iter().flatten().copied().collect();
    a.insert("history", vec![state.history.len(), 4], history);
    a
}

/// Restore `state` (made fresh, with the same masks and weights layout) from a checkpoint's arrays.
fn from_arrays(state: &mut State, a: &Arrays) -> Option<()> {
    let f =
        |name: &str| -> Option<Vec<f32>> { Some(a.get(name)?.iter().map(|&x| x as f32).collect()) };
    let opt = |prefix: &str, len: usize| -> Option<Adam> {
        let [v, m, s] = ["value", "m", "v"].map(|p| f(&format!("{prefix}.{p}")));
        let (v, m, s) = (v?, m?, s?);
        (v.len() == len && m.len() == len && s.len() == len).then(|| Adam::from_parts(v, m, s))
    };
    state.step = *a.get("step")?.first()? as usize;
    state.mask_opt = opt("masks", state.mask_opt.value.len())?;
    state.lambdas = opt("lambdas", 2)?;
    for w in &mut state.weights {
        w.weight = opt(&format!("weights.{}.weight", w.name), w.weight.value.len())?;
        w.bias = opt(&format!("weights.{}.bias", w.name), w.bias.value.len())?;
    }
    state.history = a
        .get("history")?
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect();
    let values = state.mask_opt.value.clone();
    state.masks.set_flat(&values);
    Some(())
}

/// Where checkpoints go, and whether a checkpoint there that was made for another key is an error (the user's
/// folder) or a miss (the shared cache, keyed by the digest).
pub(super) struct Checkpoints {
    pub path: Option<PathBuf>,
    pub explicit: bool,
    pub key: Key,
}

impl Checkpoints {
    pub fn load(&self, state: &mut State) -> Result<bool> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let Some((meta, arrays)) = cache::read_arrays_at(path) else {
            if self.explicit && path.exists() {
                return Err(Error::File {
                    path: path.clone(),
                    problem: "is not a readable vib-prune checkpoint\nhint: remove it to start over, or set `checkpoint` to another folder".into(),
                });
            }
            return Ok(false);
        };
        let want = self.key.metadata();
        if meta != want {
            if !self.explicit {
                return Ok(false);
            }
            let differs: Vec<&str> = ["model", "data", "settings", "kind", "version"]
                .into_iter()
                .filter(|k| meta.get(*k) != want.get(*k))
                .collect();
            return Err(Error::File {
                path: path.clone(),
                problem: format!(
                    "is a checkpoint of another run (its {} differ from this one's)\nhint: remove it to start over, or set `checkpoint` to another folder",
                    differs.join(", ")
                ),
            });
        }
        if from_arrays(state, &arrays).is_none() {
            return Err(Error::File {
                path: path.clone(),
                problem: "is a vib-prune checkpoint with missing or mis-sized arrays\nhint: remove it to start over".into(),
            });
        }
        Ok(true)
    }

    pub fn save(&self, state: &State) -> Result<()> {
        match &self.path {
            Some(path) => Ok(cache::write_arrays_at(path, &self.key, &to_arrays(state))?),
            None => Ok(()),
        }
    }
}
