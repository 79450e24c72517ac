//! Optimisers shared by the passes that train (QAT, VIB masks).

/// Adam (Kingma and Ba; beta 0.9 / 0.999, epsilon 1e-8, no weight decay) on one flat vector of values, with its
/// moments. A negative learning rate ascends (the Lagrange multipliers of `vib-prune`).
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    pub value: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    pub fn new(value: Vec<f32>) -> Self {
        let n = value.len();
        Self {
            value,
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// An optimiser resumed from its values and moments (as [`Adam::parts`] gave them).
    pub fn from_parts(value: Vec<f32>, m: Vec<f32>, v: Vec<f32>) -> Self {
        Self { value, m, v }
    }

    /// The values, first and second moments.
    pub fn parts(&self) -> [&[f32]; 3] {
        [&self.value, &self.m, &self.v]
    }

    /// One Adam step with bias correction (`t` counts from 1).
    pub fn step(&mut self, grad: &[f32], lr: f64, t: usize) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let c1 = 1.0 - b1.powi(t as i32);
        let c2 = 1.0 - b2.powi(t as i32);
        for (((x, m), v), &g) in self
            .value
            .iter_mut()
            .zip(&mut self.m)
            .zip(&mut self.v)
            .zip(grad)
        {
            let g = f64::from(g);
            let mn = b1 * f64::from(*m) + (1.0 - b1) * g;
            let vn = b2 * f64::from(*v) + (1.0 - b2) * g * g;
            *m = mn as f32;
            *v = vn as f32;
            *x = (f64::from(*x) - lr * (mn / c1) / ((vn / c2).sqrt() + eps)) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_first_step_moves_each_value_by_the_learning_rate_against_its_gradient() {
        let mut a = Adam::new(vec![1.0, -2.0, 0.5]);
        a.step(&[0.3, -4.0, 0.0], 0.1, 1);
        // With bias correction the first step is lr * g / |g| (and nothing where g = 0).
        assert!((a.value[0] - 0.9).abs() < 1e-6, "{:?}", a.value);
        assert!((a.value[1] + 1.9).abs() < 1e-6, "{:?}", a.value);
        assert_eq!(a.value[2], 0.5);
    }
}
