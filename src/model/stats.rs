//! Neuron statistics of the hidden layers: mean and standard deviation of the tanh
//! activations over a set of points. The HIG book chapter uses them to show saturation:
//! under Gauss–Newton on the ill-conditioned toy every neuron ends at ±1 for every
//! input (std across inputs ≈ 0), which also kills all later gradients.
//!
//! Host-only, f64, one forward pass per point: meant for validation sets and logging
//! every so often, not for the training hot path. Checked by `tests/hig.rs` against a
//! direct computation through truncated networks ([`Mlp::eval_host`]).

use super::Mlp;
use crate::error::{Error, Result};

/// Statistics of one hidden layer's activations `a = tanh(z)` over N points.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LayerStats {
    /// Hidden layer index, 1-based (layer l's activations feed linear layer l+1).
    pub layer: usize,
    pub width: usize,
    /// Mean over all N·width activations.
    pub mean: f64,
    /// Standard deviation (population) over all N·width activations.
    pub std: f64,
    /// Mean over neurons of each neuron's standard deviation across the points: near 0
    /// when the neurons answer every input alike (saturated or dead).
    pub input_std: f64,
    /// Fraction of activations with |a| > 0.99.
    pub saturated: f64,
}

/// Per hidden layer statistics of the network `mlp` with parameters `params` (host
/// values, the flat layout of [`Mlp`]) on `points` (row-major, `input_dim` columns).
pub fn neuron_stats(mlp: &Mlp, params: &[f64], points: &[f64]) -> Result<Vec<LayerStats>> {
    mlp.check_params(params.len())?;
    let d = mlp.input_dim();
    if points.is_empty() || !points.len().is_multiple_of(d) {
        return Err(Error::invalid(
            "points",
            format!("{} coordinates", points.len()),
            format!("a positive whole number of {d}-dimensional points"),
        ));
    }
    let n = points.len() / d;
    let layers = mlp.layers();
    let hidden = layers.len() - 1;
    // activations per hidden layer: n × width, row-major
    let mut acts: Vec<Vec<f64>> = layers[..hidden]
        .iter()
        .map(|l| Vec::with_capacity(n * l.fan_out))
        .collect();
    let mut a = Vec::new();
    for x in points.chunks(d) {
        a.clear();
        a.extend_from_slice(x);
        for (li, l) in layers[..hidden].iter().enumerate() {
            let next: Vec<f64> = (0..l.fan_out)
                .map(|o| {
                    let w = &params[l.w_off + o * l.fan_in..][..l.fan_in];
                    let z = params[l.b_off + o] + w.iter().zip(&a).map(|(w, a)| w * a).sum::<f64>();
                    z.tanh()
                })
                .collect();
            acts[li].extend_from_slice(&next);
            a = next;
        }
    }
    Ok(acts
        .iter()
        .zip(&layers)
        .enumerate()
        .map(|(li, (act, l))| {
            let w = l.fan_out;
            let total = act.len() as f64;
            let mean = act.iter().sum::<f64>() / total;
            let var = act.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / total;
            let input_std = (0..w)
                .map(|j| {
                    let col = act.iter().skip(j).step_by(w);
                    let m = col.clone().sum::<f64>() / n as f64;
                    (col.map(|v| (v - m) * (v - m)).sum::<f64>() / n as f64).sqrt()
                })
                .sum::<f64>()
                / w as f64;
            let saturated = act.iter().filter(|v| v.abs() > 0.99).count() as f64 / total;
            LayerStats {
                layer: li + 1,
                width: w,
                mean,
                std: var.sqrt(),
                input_std,
                saturated,
            }
        })
        .collect())
}
