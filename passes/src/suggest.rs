//! Did-you-mean suggestions for misspelled keys, kinds and values.

/// The candidate closest to `input`, when it is close enough to be a likely typo (Jaro-Winkler similarity of at
/// least 0.8, or an edit distance of at most 2 for short words). Ties go to the first candidate.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(&'a str, f64)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(input, c);
        let close =
            score >= 0.8 || (strsim::levenshtein(input, c) <= 2 && input.len().min(c.len()) >= 3);
        if close && best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(did_you_mean("dtyp", ["dtype", "select"]), Some("dtype"));
        assert_eq!(did_you_mean("fp16", ["f16", "bf16", "f32"]), Some("f16"));
        assert_eq!(did_you_mean("cst", ["cast"]), Some("cast"));
        assert_eq!(
            did_you_mean(
                "max_length",
                ["data", "field", "samples", "max-length", "seed"]
            ),
            Some("max-length")
        );
        assert_eq!(did_you_mean("quantize", ["cast"]), None);
        assert_eq!(did_you_mean("x", ["dtype", "select"]), None);
    }
}
