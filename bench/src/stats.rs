//! Order statistics of a run's own samples (the latency histograms are in `latency`).

/// The `q` quantile (0..=1) of `v`, sorted in place: the sample at rank `(n - 1) × q`, rounded;
/// NaN when empty.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}
