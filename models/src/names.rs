//! Canonical tensor names, roles and selectors.
//!
//! A canonical name is the checkpoint key after stripping the model prefix (`bert.`), e.g.
//! `encoder.layer.3.attention.self.query.weight`. Passes select tensors by [`Role`] (plus globs), never by
//! substring.

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

/// What a tensor is for, independent of its architecture's naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    #[serde(rename = "embed.tokens")]
    EmbedTokens,
    #[serde(rename = "embed.positions")]
    EmbedPositions,
    #[serde(rename = "embed.types")]
    EmbedTypes,
    /// MPNet's relative position bias table (`[buckets, heads]`), added to every layer's attention scores.
    #[serde(rename = "position.bias")]
    PositionBias,
    #[serde(rename = "norm")]
    Norm,
    #[serde(rename = "attn.q")]
    AttnQ,
    #[serde(rename = "attn.k")]
    AttnK,
    #[serde(rename = "attn.v")]
    AttnV,
    #[serde(rename = "attn.out")]
    AttnOut,
    #[serde(rename = "ffn.up")]
    FfnUp,
    #[serde(rename = "ffn.down")]
    FfnDown,
    #[serde(rename = "pooler")]
    Pooler,
    #[serde(rename = "head")]
    Head,
    /// Non-parameter buffers such as `embeddings.position_ids`.
    #[serde(rename = "buffer")]
    Buffer,
}

impl Role {
    pub const ALL: [Role; 14] = [
        Role::EmbedTokens,
        Role::EmbedPositions,
        Role::EmbedTypes,
        Role::PositionBias,
        Role::Norm,
        Role::AttnQ,
        Role::AttnK,
        Role::AttnV,
        Role::AttnOut,
        Role::FfnUp,
        Role::FfnDown,
        Role::Pooler,
        Role::Head,
        Role::Buffer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::EmbedTokens => "embed.tokens",
            Role::EmbedPositions => "embed.positions",
            Role::EmbedTypes => "embed.types",
            Role::PositionBias => "position.bias",
            Role::Norm => "norm",
            Role::AttnQ => "attn.q",
            Role::AttnK => "attn.k",
            Role::AttnV => "attn.v",
            Role::AttnOut => "attn.out",
            Role::FfnUp => "ffn.up",
            Role::FfnDown => "ffn.down",
            Role::Pooler => "pooler",
            Role::Head => "head",
            Role::Buffer => "buffer",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a tensor is a weight matrix / embedding table, a bias / norm vector, or a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Weight,
    Bias,
    Buffer,
}

/// Everything the architecture says about one expected tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: Role,
    pub kind: Kind,
    pub layer: Option<usize>,
    /// Buffers that checkpoints may or may not carry (`embeddings.position_ids`).
    pub optional: bool,
}

/// Which tensors a pass touches: role globs (`attn.*`), name globs, exclusions, layer indices and kinds.
/// Empty `roles` and `names` select everything; a tensor must match `roles` AND `names` when both are given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<Kind>>,
}

/// A selector with its globs compiled.
pub struct CompiledSelector {
    roles: Vec<GlobMatcher>,
    names: Vec<GlobMatcher>,
    exclude: Vec<GlobMatcher>,
    layers: Option<Vec<usize>>,
    kinds: Option<Vec<Kind>>,
}

impl Selector {
    /// Compile the globs; the error names the bad pattern.
    pub fn compile(&self) -> Result<CompiledSelector, String> {
        let glob = |p: &String| {
            Glob::new(p)
                .map(|g| g.compile_matcher())
                .map_err(|e| format!("invalid glob `{p}`: {e}"))
        };
        for r in &self.roles {
            let g = glob(r)?;
            if !Role::ALL.iter().any(|role| g.is_match(role.as_str())) {
                let known: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                return Err(format!(
                    "role pattern `{r}` matches no role (roles: {})",
                    known.join(", ")
                ));
            }
        }
        Ok(CompiledSelector {
            roles: self.roles.iter().map(glob).collect::<Result<_, _>>()?,
            names: self.names.iter().map(glob).collect::<Result<_, _>>()?,
            exclude: self.exclude.iter().map(glob).collect::<Result<_, _>>()?,
            layers: self.layers.clone(),
            kinds: self.kinds.clone(),
        })
    }
}

impl CompiledSelector {
    pub fn matches(&self, spec: &TensorSpec) -> bool {
        if !self.roles.is_empty() && !self.roles.iter().any(|g| g.is_match(spec.role.as_str())) {
            return false;
        }
        if !self.names.is_empty() && !self.names.iter().any(|g| g.is_match(&spec.name)) {
            return false;
        }
        if self.exclude.iter().any(|g| g.is_match(&spec.name)) {
            return false;
        }
        if let Some(layers) = &self.layers {
            match spec.layer {
                Some(l) if layers.contains(&l) => {}
                _ => return false,
            }
        }
        if let Some(kinds) = &self.kinds {
            if !kinds.contains(&spec.kind) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, role: Role, kind: Kind, layer: Option<usize>) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            shape: vec![1],
            role,
            kind,
            layer,
            optional: false,
        }
    }

    #[test]
    fn selector_combines_roles_names_exclude_layers_and_kinds() {
        let q = spec(
            "encoder.layer.0.attention.self.query.weight",
            Role::AttnQ,
            Kind::Weight,
            Some(0),
        );
        let qb = spec(
            "encoder.layer.0.attention.self.query.bias",
            Role::AttnQ,
            Kind::Bias,
            Some(0),
        );
        let up = spec(
            "encoder.layer.1.intermediate.dense.weight",
            Role::FfnUp,
            Kind::Weight,
            Some(1),
        );
        let sel = Selector {
            roles: vec!["attn.*".into(), "ffn.up".into()],
            kinds: Some(vec![Kind::Weight]),
            ..Default::default()
        }
        .compile()
        .expect("valid");
        assert!(sel.matches(&q) && !sel.matches(&qb) && sel.matches(&up));
        let sel = Selector {
            exclude: vec!["*.layer.1.*".into()],
            layers: Some(vec![0, 1]),
            ..Default::default()
        }
        .compile()
        .expect("valid");
        assert!(sel.matches(&q) && !sel.matches(&up));
    }

    #[test]
    fn role_pattern_matching_no_role_is_an_error() {
        let err = Selector {
            roles: vec!["atn.*".into()],
            ..Default::default()
        }
        .compile()
        .err()
        .expect("must fail");
        assert!(
            err.starts_with("role pattern `atn.*` matches no role (roles: embed.tokens,"),
            "{err}"
        );
    }
}
