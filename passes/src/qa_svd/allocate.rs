//! Layer-wise pruning rates (UniQL `get_layer_ratio`): from block influence `s_l = 1 - cos(input, output)` over
//! all real tokens, `phi_l = L * rate * softmax(-s / temperature)_l`, clamped to `[0, MAX_LAYER_RATE]` (not
//! renormalised after clamping, as in the reference code). A layer keeps `1 - phi_l` of its FFN neurons and of each
//! head's query/key and value widths, rounded to multiples.

/// The most any layer is pruned.
pub const MAX_LAYER_RATE: f64 = 0.85;

/// The pruning rate of every layer.
pub fn layer_rates(influence: &[f64], rate: f64, temperature: f64) -> Vec<f64> {
    let n = influence.len();
    if n == 0 || rate == 0.0 {
        return vec![0.0; n];
    }
    let z: Vec<f64> = influence.iter().map(|s| -s / temperature).collect();
    let top = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - top).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter()
        .map(|v| (n as f64 * rate * v / sum).clamp(0.0, MAX_LAYER_RATE))
        .collect()
}

/// How many of `full` units a layer keeps at pruning rate `phi`: `(1 - phi) * full` rounded to a multiple of
/// `multiple`, at least one multiple (or `full` when smaller), at most `full`.
pub fn kept(full: usize, phi: f64, multiple: usize) -> usize {
    if phi <= 0.0 {
        return full;
    }
    let m = multiple.max(1);
    let k = (((1.0 - phi) * full as f64) / m as f64).round() as usize * m;
    k.clamp(m.min(full), full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn less_influential_layers_lose_more_and_the_mean_is_the_rate() {
        let rates = layer_rates(&[0.1, 0.2, 0.3], 0.2, 0.1);
        assert!(rates[0] > rates[1] && rates[1] > rates[2]);
        assert!((rates.iter().sum::<f64>() / 3.0 - 0.2).abs() < 1e-12);
        // Clamped at 0.85 when one layer would take more.
        let rates = layer_rates(&[0.0, 1.0, 1.0], 0.5, 0.1);
        assert_eq!(rates[0], MAX_LAYER_RATE);
        assert_eq!(layer_rates(&[0.1, 0.2], 0.0, 0.1), vec![0.0, 0.0]);
    }

    #[test]
    fn widths_round_to_multiples_within_bounds() {
        assert_eq!(kept(32, 0.25, 8), 24);
        assert_eq!(kept(32, 0.0, 8), 32);
        assert_eq!(kept(32, 0.85, 8), 8);
        assert_eq!(kept(1536, 0.3, 32), 1088);
        assert_eq!(kept(4, 0.5, 8), 4);
    }
}
