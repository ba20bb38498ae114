//! The "close" comparison of a result with a case's reference values.

use std::fmt;

/// What [`compare_close`] found: the largest `|got - want|` and, when some element is
/// outside the tolerance, the worst one.
#[derive(Debug, Clone)]
pub struct Closeness<G, T> {
    /// The largest `|got - want|` (infinite when a NaN stands against a number).
    pub max_abs: f64,
    /// The worst element outside the tolerance, if any.
    pub mismatch: Option<Mismatch<G, T>>,
}

/// The elements outside the tolerance, by the worst of them (the largest excess of
/// `|got - want|` over the tolerance). Its `Display` is the failure message.
#[derive(Debug, Clone)]
pub struct Mismatch<G, T> {
    /// How many elements are outside the tolerance.
    pub bad: usize,
    /// How many elements the reference has.
    pub total: usize,
    /// The worst element's flat (row-major) index.
    pub index: usize,
    /// The worst element's coordinates in the reference's shape.
    pub coords: Vec<usize>,
    /// The worst element's computed value.
    pub got: G,
    /// The worst element's reference value.
    pub want: f32,
    /// The absolute tolerance compared under.
    pub atol: T,
    /// The relative tolerance compared under.
    pub rtol: T,
}

impl<G: Copy + Into<f64> + fmt::Display, T: fmt::Display> fmt::Display for Mismatch<G, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} elements outside atol {} rtol {}; worst at index {} {:?}: got {}, want {} (|diff| {:.3e})",
            self.bad,
            self.total,
            self.atol,
            self.rtol,
            self.index,
            self.coords,
            self.got,
            self.want,
            (self.got.into() - f64::from(self.want)).abs()
        )
    }
}

impl<G: Copy + Into<f64> + fmt::Display, T: fmt::Display> Closeness<G, T> {
    /// The largest `|got - want|`, or the failure message.
    pub fn into_result(self) -> Result<f64, String> {
        match self.mismatch {
            None => Ok(self.max_abs),
            Some(m) => Err(m.to_string()),
        }
    }
}

/// Compares `got` with the reference `want` (of shape `shape`), element by element,
/// under `|got - want| <= atol + rtol * |want|` computed in f64; NaN matches NaN and
/// equal values always match. Only as many elements as both slices hold are compared:
/// the caller checks the shapes first.
///
/// `got`, `atol` and `rtol` keep their own types so that a failure message shows them
/// exactly as given (an f32 `1e-3` as `0.001`, not as its f64 widening).
pub fn compare_close<G, T>(got: &[G], want: &[f32], shape: &[usize], atol: T, rtol: T) -> Closeness<G, T>
where
    G: Copy + Into<f64>,
    T: Copy + Into<f64>,
{
    let (atol64, rtol64): (f64, f64) = (atol.into(), rtol.into());
    let mut max_abs = 0.0f64;
    let mut bad = 0usize;
    let mut worst: Option<(usize, f64)> = None; // (index, excess over the tolerance)
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.into(), f64::from(w));
        let diff = (g - w).abs();
        let tol = atol64 + rtol64 * w.abs();
        let ok = diff <= tol || (g.is_nan() && w.is_nan()) || g == w;
        if !diff.is_nan() {
            max_abs = max_abs.max(diff);
        } else if !ok {
            max_abs = f64::INFINITY;
        }
        if !ok {
            bad += 1;
            let excess = if diff.is_nan() { f64::INFINITY } else { diff - tol };
            if worst.is_none_or(|(_, e)| excess > e) {
                worst = Some((i, excess));
            }
        }
    }
    let mismatch = worst.map(|(index, _)| Mismatch {
        bad,
        total: want.len(),
        index,
        coords: unravel(index, shape),
        got: got[index],
        want: want[index],
        atol,
        rtol,
    });
    Closeness { max_abs, mismatch }
}

/// The coordinates of the flat (row-major) `index` in `shape`.
pub fn unravel(mut index: usize, shape: &[usize]) -> Vec<usize> {
    let mut coords = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            coords[k] = index % d;
            index /= d;
        }
    }
    coords
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_tolerance_reports_the_largest_difference() {
        let c = compare_close(&[1.0f32, 2.0005], &[1.0, 2.0], &[2], 1e-3f32, 0.0);
        assert!(c.mismatch.is_none());
        assert!((c.max_abs - 0.0005).abs() < 1e-6, "{}", c.max_abs);
    }

    #[test]
    fn the_worst_element_is_the_largest_excess() {
        let c = compare_close(&[1.1f64, 2.0, 3.5, f64::NAN], &[1.0, 2.0, 3.0, 4.0], &[2, 2], 0.0, 0.0);
        let m = c.mismatch.as_ref().map(|m| (m.bad, m.index, m.coords.clone()));
        assert_eq!(m, Some((3, 3, vec![1, 1])));
        assert_eq!(c.max_abs, f64::INFINITY);
    }

    #[test]
    fn nan_matches_nan_and_the_message_keeps_the_given_types() {
        assert!(compare_close(&[f32::NAN], &[f32::NAN], &[], 0.0f64, 0.0).mismatch.is_none());
        let msg = compare_close(&[0.1f32, 5.0], &[0.1, 4.0], &[2], 1e-3f32, 0.0).into_result();
        assert_eq!(
            msg,
            Err("1 of 2 elements outside atol 0.001 rtol 0; worst at index 1 [1]: got 5, want 4 (|diff| 1.000e0)"
                .into())
        );
    }

    #[test]
    fn unravel_is_row_major() {
        assert_eq!(unravel(5, &[2, 3]), vec![1, 2]);
        assert_eq!(unravel(0, &[]), Vec::<usize>::new());
    }
}
