//! The model-facing input of a forward pass: token ids with masks, already padded to one length.

/// A batch of tokenized inputs, right-padded to `seq_len`, row-major `[batch, seq_len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    pub batch_size: usize,
    pub seq_len: usize,
    pub input_ids: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
}

impl EncodedBatch {
    /// Number of real (non-padding) tokens of each row.
    pub fn lengths(&self) -> Vec<usize> {
        self.attention_mask
            .chunks(self.seq_len.max(1))
            .map(|row| row.iter().filter(|&&m| m != 0).count())
            .collect()
    }

    /// Position ids, row-major `[batch, seq_len]`: `0..seq_len` in every row, or, where positions count after the
    /// padding id (RoBERTa, MPNet: `padding = Some(pad)`), `pad + k` for the `k`-th id that is not `pad` and `pad`
    /// for `pad` itself (transformers' `create_position_ids_from_input_ids`).
    pub fn position_ids(&self, padding: Option<i64>) -> Vec<i64> {
        let t = self.seq_len.max(1);
        match padding {
            None => (0..self.batch_size * self.seq_len)
                .map(|i| (i % t) as i64)
                .collect(),
            Some(pad) => self
                .input_ids
                .chunks(t)
                .flat_map(|row| {
                    let mut k = 0;
                    row.iter().map(move |&id| {
                        if id == pad {
                            pad
                        } else {
                            k += 1;
                            pad + k
                        }
                    })
                })
                .collect(),
        }
    }

    /// Rows `start..end` as a batch, re-padded to their own longest row.
    pub fn rows(&self, start: usize, end: usize) -> Self {
        self.select(&(start..end).collect::<Vec<_>>())
    }

    /// The rows `rows` (in the order given) as a batch, re-padded to their own longest row.
    pub fn select(&self, rows: &[usize]) -> Self {
        let t = self.seq_len;
        let lengths = self.lengths();
        let rows: Vec<(Vec<i64>, Vec<i64>)> = rows
            .iter()
            .map(|&r| {
                let n = lengths[r];
                (
                    self.input_ids[r * t..r * t + n].to_vec(),
                    self.token_type_ids[r * t..r * t + n].to_vec(),
                )
            })
            .collect();
        let pad = self
            .attention_mask
            .iter()
            .position(|&m| m == 0)
            .map_or(0, |i| self.input_ids[i]);
        Self::from_rows(&rows, pad)
    }

    /// Build a batch from unpadded rows of (ids, type ids), right-padding with `pad_id`.
    pub fn from_rows(rows: &[(Vec<i64>, Vec<i64>)], pad_id: i64) -> Self {
        let seq_len = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
        let mut input_ids = Vec::with_capacity(rows.len() * seq_len);
        let mut token_type_ids = Vec::with_capacity(rows.len() * seq_len);
        let mut attention_mask = Vec::with_capacity(rows.len() * seq_len);
        for (ids, types) in rows {
            let pad = seq_len - ids.len();
            input_ids.extend_from_slice(ids);
            input_ids.extend(std::iter::repeat_n(pad_id, pad));
            token_type_ids.extend(
                types
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(0))
                    .take(ids.len()),
            );
            token_type_ids.extend(std::iter::repeat_n(0, pad));
            attention_mask.extend(std::iter::repeat_n(1, ids.len()));
            attention_mask.extend(std::iter::repeat_n(0, pad));
        }
        Self {
            batch_size: rows.len(),
            seq_len,
            input_ids,
            token_type_ids,
            attention_mask,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_rows_pads_right_and_masks() {
        let b = EncodedBatch::from_rows(
            &[(vec![2, 7, 3], vec![0, 0, 0]), (vec![2, 3], vec![0, 1])],
            0,
        );
        assert_eq!(b.seq_len, 3);
        assert_eq!(b.input_ids, vec![2, 7, 3, 2, 3, 0]);
        assert_eq!(b.token_type_ids, vec![0, 0, 0, 0, 1, 0]);
        assert_eq!(b.attention_mask, vec![1, 1, 1, 1, 1, 0]);
        assert_eq!(b.lengths(), vec![3, 2]);
        let picked = b.select(&[1]);
        assert_eq!((picked.seq_len, picked.input_ids), (2, vec![2, 3]));
        assert_eq!(b.rows(0, 2), b);
        assert_eq!(b.position_ids(None), vec![0, 1, 2, 0, 1, 2]);
        // RoBERTa's scheme with padding id 0: positions from 1, the padding at 0.
        assert_eq!(b.position_ids(Some(0)), vec![1, 2, 3, 1, 2, 0]);
    }
}
