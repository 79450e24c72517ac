//! How the binary shows an error: `error: ...`, one `Caused by:` block per cause (causes whose text the previous
//! messages already contain are left out), then every `hint: ...` line found in the chain.

use crate::problems::split_hints;

/// The text printed on stderr for `err`.
pub fn render(err: &anyhow::Error) -> String {
    let mut messages: Vec<String> = Vec::new();
    let mut hints: Vec<String> = Vec::new();
    let mut seen = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !seen.is_empty() && seen.contains(text.trim()) {
            continue;
        }
        seen.push_str(&text);
        seen.push('\n');
        let (message, h) = split_hints(&text);
        if !message.is_empty() {
            messages.push(message);
        }
        for h in h {
            if !hints.contains(&h) {
                hints.push(h);
            }
        }
    }
    let mut out = format!(
        "error: {}\n",
        messages.first().map_or("(no message)", String::as_str)
    );
    for m in messages.iter().skip(1) {
        out.push_str("\nCaused by:\n");
        for line in m.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    if !hints.is_empty() {
        out.push('\n');
        for h in &hints {
            out.push_str(&format!("hint: {h}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn chain_causes_and_hints() {
        let inner: anyhow::Result<()> = Err(anyhow::anyhow!(
            "`m` has no config.json\nhint: point it at a folder"
        ));
        let err = inner
            .context("cannot open model `m`")
            .expect_err("must fail");
        assert_eq!(
            render(&err),
            "error: cannot open model `m`\n\nCaused by:\n  `m` has no config.json\n\nhint: point it at a folder\n"
        );
    }

    #[test]
    fn causes_already_shown_are_skipped() {
        let io = std::io::Error::other("disk on fire");
        let err = anyhow::Error::new(io).context("cannot read `x`: disk on fire");
        assert_eq!(render(&err), "error: cannot read `x`: disk on fire\n");
    }
}
