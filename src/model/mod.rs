//! The tanh MLP: architecture, flat parameter layout and initialisation.
//!
//! Parameters live in one flat vector, layer after layer, each layer as its weight
//! matrix `W` (out × in, row-major, as PyTorch stores `Linear.weight`) followed by its
//! bias `b` (out). That is exactly PyTorch's `state_dict` order for an `nn.Sequential` of
//! `Linear`/`Tanh`, which keeps model files interchangeable.
//!
//! An inverse problem's unknown scalar coefficients (design §7) ride at the end of the
//! same vector, after the last layer's bias ([`Mlp::with_coefficients`]): every layer
//! offset is unchanged, and the vector the optimizers update is `[network | coefficients]`.
//!
//! Checked by the unit tests below (layout, counts from the paper) and by every test
//! that differentiates through the network.

pub mod io;
pub mod stats;

use crate::error::{Error, Result};
use crate::scalar::Real;
use rand::{Rng, SeedableRng};

/// Architecture of a tanh MLP: `widths[0]` inputs, hidden widths, `widths[L]` outputs.
/// Hidden layers use tanh; the output layer is linear.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mlp {
    widths: Vec<usize>,
    /// Trainable scalar coefficients after the network's parameters (0 for a plain
    /// network; absent from files written before they existed).
    #[serde(default, skip_serializing_if = "is_zero")]
    coefs: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Where one layer's parameters sit in the flat vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerLayout {
    pub fan_in: usize,
    pub fan_out: usize,
    /// Offset of `W` (fan_out × fan_in, row-major).
    pub w_off: usize,
    /// Offset of `b` (fan_out).
    pub b_off: usize,
}

impl LayerLayout {
    /// Number of parameters of the layer (weights and bias).
    pub fn len(&self) -> usize {
        self.fan_out * (self.fan_in + 1)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Offset of the layer's first parameter.
    pub fn off(&self) -> usize {
        self.w_off
    }
}

impl Mlp {
    /// `widths` = [input, hidden..., output]; at least two entries, all positive.
    pub fn new(widths: &[usize]) -> Result<Self> {
        if widths.len() < 2 {
            return Err(Error::invalid(
                "widths",
                format!("{widths:?}"),
                "at least an input and an output width, e.g. 2,64,1",
            ));
        }
        if let Some(i) = widths.iter().position(|&w| w == 0) {
            return Err(Error::invalid(
                format!("widths[{i}]"),
                0,
                "a positive layer width",
            ));
        }
        Ok(Mlp {
            widths: widths.to_vec(),
            coefs: 0,
        })
    }

    /// Parse "2,64,64,1" (also accepts 'x' or '→' separators).
    pub fn parse(s: &str) -> Result<Self> {
        // separators: `,`, `x`, `→`, `->`, or whitespace alone; an empty item (`2,,64`)
        // is a typo, not something to skip
        let norm = s.replace("->", ",").replace(['x', '→'], ",");
        let parts: Vec<&str> = if norm.contains(',') {
            norm.split(',').map(str::trim).collect()
        } else {
            norm.split_whitespace().collect()
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(Error::invalid(
                "widths",
                s,
                "comma-separated positive integers without empty items, e.g. 2,64,1",
            ));
        }
        let mut w = Vec::with_capacity(parts.len());
        for p in parts {
            w.push(p.parse::<usize>().map_err(|_| {
                Error::invalid(
                    "widths",
                    s,
                    "comma-separated positive integers, e.g. 2,64,1",
                )
            })?);
        }
        Mlp::new(&w)
    }

    pub fn widths(&self) -> &[usize] {
        &self.widths
    }
    pub fn input_dim(&self) -> usize {
        self.widths[0]
    }
    pub fn output_dim(&self) -> usize {
        *self.widths.last().unwrap()
    }
    /// Number of linear layers.
    pub fn num_layers(&self) -> usize {
        self.widths.len() - 1
    }

    pub fn layer(&self, l: usize) -> LayerLayout {
        let mut off = 0;
        for i in 0..l {
            off += self.widths[i + 1] * (self.widths[i] + 1);
        }
        let (fan_in, fan_out) = (self.widths[l], self.widths[l + 1]);
        LayerLayout {
            fan_in,
            fan_out,
            w_off: off,
            b_off: off + fan_in * fan_out,
        }
    }

    pub fn layers(&self) -> Vec<LayerLayout> {
        (0..self.num_layers()).map(|l| self.layer(l)).collect()
    }

    /// Length of the trainable vector: the network's parameters and the coefficients.
    pub fn num_params(&self) -> usize {
        self.num_net_params() + self.coefs
    }

    /// The network's own parameters (the offset of the first coefficient).
    pub fn num_net_params(&self) -> usize {
        self.widths.windows(2).map(|w| w[1] * (w[0] + 1)).sum()
    }

    /// Number of trailing scalar coefficients (inverse problems; 0 otherwise).
    pub fn num_coefs(&self) -> usize {
        self.coefs
    }

    /// The same network with `k` trainable coefficients after its parameters.
    pub fn with_coefficients(&self, k: usize) -> Self {
        Mlp {
            widths: self.widths.clone(),
            coefs: k,
        }
    }

    /// The network alone (no coefficients).
    pub fn network(&self) -> Self {
        self.with_coefficients(0)
    }

    /// "2→64→1"
    pub fn describe(&self) -> String {
        self.widths
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("→")
    }

    /// PyTorch's default `Linear` initialisation: weights and biases uniform in
    /// ±1/sqrt(fan_in), drawn from a ChaCha8 stream seeded with `seed`; coefficients
    /// (if any) zero, for the caller to set to their initial values.
    pub fn init<T: Real>(&self, seed: u64) -> Vec<T> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut p = Vec::with_capacity(self.num_params());
        for l in self.layers() {
            let bound = 1.0 / (l.fan_in as f64).sqrt();
            for _ in 0..l.len() {
                p.push(T::from_f64(rng.random_range(-bound..bound)));
            }
        }
        p.resize(self.num_params(), T::ZERO);
        p
    }

    /// Check that a parameter vector fits this architecture.
    pub fn check_params(&self, len: usize) -> Result<()> {
        if len != self.num_params() {
            let coefs = match self.coefs {
                0 => String::new(),
                k => format!(" ({} and {k} coefficients)", self.num_net_params()),
            };
            return Err(Error::Shape(format!(
                "network {} has {} parameters{coefs}, got a vector of {len}",
                self.describe(),
                self.num_params()
            )));
        }
        Ok(())
    }

    /// Plain forward pass on the host (f64, one sample): the value `u(x)`. A slow,
    /// obviously-correct reference for tests and tools.
    pub fn eval_host(&self, params: &[f64], x: &[f64]) -> Vec<f64> {
        let mut a = x.to_vec();
        let nl = self.num_layers();
        for (li, l) in self.layers().into_iter().enumerate() {
            let mut z = vec![0.0; l.fan_out];
            for (o, zo) in z.iter_mut().enumerate() {
                let w = &params[l.w_off + o * l.fan_in..l.w_off + (o + 1) * l.fan_in];
                *zo = params[l.b_off + o] + w.iter().zip(&a).map(|(w, a)| w * a).sum::<f64>();
            }
            if li + 1 < nl {
                z.iter_mut().for_each(|v| *v = v.tanh());
            }
            a = z;
        }
        a
    }
}

impl std::fmt::Display for Mlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_parameter_counts() {
        let cases: [(&[usize], usize); 7] = [
            (&[2, 64, 1], 257),
            (&[5, 64, 1], 449),
            (&[2, 64, 64, 48, 48, 1], 9_873),
            (&[5, 64, 64, 48, 48, 1], 10_065),
            (&[2, 256, 256, 128, 128, 1], 116_097),
            (&[5, 256, 256, 128, 128, 1], 116_865),
            (&[100, 768, 768, 512, 512, 1], 1_325_057),
        ];
        for (w, n) in cases {
            assert_eq!(Mlp::new(w).unwrap().num_params(), n, "{w:?}");
        }
    }

    #[test]
    fn layout_is_contiguous_weights_then_bias() {
        let m = Mlp::new(&[3, 4, 2]).unwrap();
        let l0 = m.layer(0);
        let l1 = m.layer(1);
        assert_eq!((l0.w_off, l0.b_off), (0, 12));
        assert_eq!((l1.w_off, l1.b_off), (16, 24));
        assert_eq!(l1.b_off + 2, m.num_params());
    }

    #[test]
    fn init_is_seeded_and_bounded() {
        let m = Mlp::new(&[4, 9, 1]).unwrap();
        let a: Vec<f64> = m.init(7);
        let b: Vec<f64> = m.init(7);
        let c: Vec<f64> = m.init(8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let l0 = m.layer(0);
        assert!(a[..l0.len()].iter().all(|x| x.abs() <= 0.5));
        let l1 = m.layer(1);
        assert!(a[l1.off()..].iter().all(|x| x.abs() <= 1.0 / 3.0));
        // not degenerate: spread over the interval
        let max = a[..l0.len()]
            .iter()
            .cloned()
            .fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(max > 0.4);
    }

    #[test]
    fn bad_widths_are_rejected_with_the_value() {
        let e = Mlp::new(&[2, 0, 1]).unwrap_err().to_string();
        assert!(e.contains("widths[1]") && e.contains("Got 0"), "{e}");
        assert!(Mlp::new(&[2]).is_err());
        let e = Mlp::parse("2,abc,1").unwrap_err().to_string();
        assert!(e.contains("2,abc,1"), "{e}");
        assert_eq!(Mlp::parse("2,64,1").unwrap().widths(), &[2, 64, 1]);
    }
}
