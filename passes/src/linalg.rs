//! Dense linear algebra in f64 on row-major slices, through faer: the one module the passes call it from
//! (symmetric eigendecomposition, thin SVD, products).

use faer::{Mat, MatRef, Side};

use crate::error::{Error, Result};

fn failed(what: &str, problem: impl std::fmt::Debug) -> Error {
    compressor_models::Error::Runtime(format!("{what} did not converge: {problem:?}")).into()
}

fn mat(rows: usize, cols: usize, a: &[f64]) -> Mat<f64> {
    Mat::from_fn(rows, cols, |i, j| a[i * cols + j])
}

fn row_major(m: MatRef<'_, f64>) -> Vec<f64> {
    let (rows, cols) = (m.nrows(), m.ncols());
    let mut out = Vec::with_capacity(rows * cols);
    for i in 0..rows {
        for j in 0..cols {
            out.push(*m.get(i, j));
        }
    }
    out
}

/// The eigendecomposition of a symmetric matrix: `a = V diag(values) V^T`.
#[derive(Debug, Clone)]
pub struct Eigen {
    pub n: usize,
    /// Ascending.
    pub values: Vec<f64>,
    /// `[n, n]` row-major; column `k` is the eigenvector of `values[k]`.
    pub vectors: Vec<f64>,
}

impl Eigen {
    /// `V diag(f(values)) V^T`.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Vec<f64> {
        let n = self.n;
        let fv: Vec<f64> = self.values.iter().map(|&l| f(l)).collect();
        let scaled: Vec<f64> = self
            .vectors
            .iter()
            .enumerate()
            .map(|(k, v)| v * fv[k % n])
            .collect();
        matmul(n, n, n, &scaled, &transpose(n, n, &self.vectors))
    }
}

/// The eigendecomposition of the symmetric `[n, n]` matrix `a` (its lower triangle is read).
pub fn eigh(n: usize, a: &[f64]) -> Result<Eigen> {
    let e = mat(n, n, a)
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| failed("the symmetric eigendecomposition", e))?;
    Ok(Eigen {
        n,
        values: e.S().column_vector().iter().copied().collect(),
        vectors: row_major(e.U()),
    })
}

/// `a^{1/2}` of a positive semi-definite `[n, n]` matrix (negative rounding-level eigenvalues taken as 0).
pub fn psd_sqrt(n: usize, a: &[f64]) -> Result<Vec<f64>> {
    Ok(eigh(n, a)?.map(|l| l.max(0.0).sqrt()))
}

/// A thin SVD `a = U diag(s) V^T` of an `[m, n]` matrix: `U` `[m, k]`, `s` (descending), `V` `[n, k]`,
/// `k = min(m, n)`, row-major.
#[derive(Debug, Clone)]
pub struct Svd {
    pub k: usize,
    pub u: Vec<f64>,
    pub s: Vec<f64>,
    pub v: Vec<f64>,
}

pub fn thin_svd(m: usize, n: usize, a: &[f64]) -> Result<Svd> {
    let svd = mat(m, n, a)
        .thin_svd()
        .map_err(|e| failed("the singular value decomposition", e))?;
    Ok(Svd {
        k: m.min(n),
        u: row_major(svd.U()),
        s: svd.S().column_vector().iter().copied().collect(),
        v: row_major(svd.V()),
    })
}

/// The Cholesky factor `L` (lower, `a = L L^T`) of a symmetric positive definite `[n, n]` matrix; `None` when `a`
/// is not positive definite.
pub fn cholesky_lower(n: usize, a: &[f64]) -> Option<Vec<f64>> {
    let llt = mat(n, n, a).llt(Side::Lower).ok()?;
    Some(row_major(llt.L()))
}

/// `a^-1` of a symmetric positive definite `[n, n]` matrix (through its Cholesky factor); `None` when `a` is not
/// positive definite.
pub fn spd_inverse(n: usize, a: &[f64]) -> Option<Vec<f64>> {
    use faer::linalg::solvers::DenseSolveCore as _;
    let llt = mat(n, n, a).llt(Side::Lower).ok()?;
    Some(row_major(llt.inverse().as_ref()))
}

/// Add `factor * mean(diag a)` to the diagonal of the `[n, n]` matrix `a` (the usual damping of a second moment).
pub fn damp(n: usize, a: &mut [f64], factor: f64) {
    let mean = (0..n).map(|i| a[i * n + i]).sum::<f64>() / n.max(1) as f64;
    for i in 0..n {
        a[i * n + i] += factor * mean;
    }
}

/// `a b` for row-major `a` `[m, k]` and `b` `[k, n]`.
pub fn matmul(m: usize, k: usize, n: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
    row_major((mat(m, k, a) * mat(k, n, b)).as_ref())
}

/// `a^T` of a row-major `[m, n]` matrix.
pub fn transpose(m: usize, n: usize, a: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[j * m + i] = a[i * n + j];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    }

    #[test]
    fn the_square_root_squares_back_and_the_svd_multiplies_back() {
        // A positive definite 3x3 and a 3x2.
        let c = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0];
        let r = psd_sqrt(3, &c).expect("sqrt");
        assert!(close(&matmul(3, 3, 3, &r, &r), &c, 1e-12));
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.5];
        let svd = thin_svd(3, 2, &a).expect("svd");
        assert!(svd.s[0] >= svd.s[1]);
        let us: Vec<f64> = (0..3 * 2).map(|i| svd.u[i] * svd.s[i % 2]).collect();
        let back = matmul(3, 2, 2, &us, &transpose(2, 2, &svd.v));
        assert!(close(&back, &a, 1e-12), "{back:?}");
        let e = eigh(3, &c).expect("eigh");
        assert!(e.values.windows(2).all(|w| w[0] <= w[1]));
    }
}
