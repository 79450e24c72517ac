//! Problems: messages with hints, collected so a command reports everything wrong at once.

use std::fmt;

/// One problem: a message (may span lines) and its hints (printed as `hint: ...` lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub hints: Vec<String>,
}

impl Problem {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hints: Vec::new(),
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// A problem from an error's text: lines starting with `hint: ` become hints, `prefix` goes before the rest.
    pub fn from_error(prefix: &str, err: &dyn std::error::Error) -> Self {
        let (message, hints) = split_hints(&err.to_string());
        Self {
            message: format!("{prefix}{message}"),
            hints,
        }
    }
}

/// Split `text` into its non-hint lines (joined) and the bodies of its `hint: ` lines.
pub fn split_hints(text: &str) -> (String, Vec<String>) {
    let mut lines = Vec::new();
    let mut hints = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("hint: ") {
            Some(h) => hints.push(h.to_string()),
            None => lines.push(line),
        }
    }
    (lines.join("\n").trim_end().to_string(), hints)
}

/// Several problems, shown one after the other, their hints last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let messages: Vec<&str> = self.0.iter().map(|p| p.message.as_str()).collect();
        write!(f, "{}", messages.join("\n"))?;
        for p in &self.0 {
            for h in &p.hints {
                write!(f, "\nhint: {h}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}
