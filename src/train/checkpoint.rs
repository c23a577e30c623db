//! Checkpoints: everything a run needs to continue exactly where it stopped — parameters,
//! optimizer state (moments, Kronecker factors, moving averages, histories), the current
//! training points, the data stream's RNG state, step count and training time. Stored as
//! a safetensors file with a checksum in the metadata over every tensor's name and bytes
//! and every other metadata entry (step, time, RNG state, ...), so a flipped bit anywhere
//! that matters is caught; written atomically: a crash leaves the previous checkpoint,
//! and a truncated or corrupted file is rejected with a clear error instead of being
//! resumed from. (Checkpoints of format 1 checksummed the tensors only; they still load.)
//! Checked by `tests/resume.rs`.

use crate::error::{Error, Result};
use crate::optim::State;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// The state of a run between two steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub step: u64,
    pub elapsed: f64,
    pub last_loss: f64,
    pub optimizer: String,
    pub params: Vec<f64>,
    pub opt_state: State,
    /// Current training points per term.
    pub points: Vec<Vec<f64>>,
    /// ChaCha8 state of the data stream: seed, stream, word position.
    pub rng_seed: [u8; 32],
    pub rng_stream: u64,
    pub rng_word_pos: u128,
}

fn fnv1a(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= b as u64;
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

/// Version of the checkpoint layout: 2 checksums the metadata too.
const FORMAT: u32 = 2;

/// FNV-1a over the tensors (name, bytes; sorted by name) and, for format 2, every
/// metadata entry but the checksum itself (sorted by key).
fn checksum<'a>(
    tensors: impl Iterator<Item = (&'a str, &'a [u8])>,
    meta: Option<&HashMap<String, String>>,
) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for (k, b) in tensors {
        fnv1a(&mut h, k.as_bytes());
        fnv1a(&mut h, b);
    }
    if let Some(meta) = meta {
        let mut keys: Vec<&String> = meta.keys().filter(|k| *k != "checksum").collect();
        keys.sort();
        for k in keys {
            // separators keep ("ab","c") and ("a","bc") apart
            fnv1a(&mut h, &[0xff]);
            fnv1a(&mut h, k.as_bytes());
            fnv1a(&mut h, &[0xfe]);
            fnv1a(&mut h, meta[k].as_bytes());
        }
    }
    h
}

fn bytes_of(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

impl Checkpoint {
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut named: Vec<(String, Vec<u8>, usize)> =
            vec![("params".into(), bytes_of(&self.params), self.params.len())];
        for (k, v) in &self.opt_state {
            named.push((format!("opt.{k}"), bytes_of(v), v.len()));
        }
        for (t, p) in self.points.iter().enumerate() {
            named.push((format!("points.{t}"), bytes_of(p), p.len()));
        }
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("kind".to_string(), "kfac-pinn checkpoint".to_string());
        meta.insert("step".into(), self.step.to_string());
        meta.insert("elapsed".into(), format!("{:016x}", self.elapsed.to_bits()));
        meta.insert(
            "last_loss".into(),
            format!("{:016x}", self.last_loss.to_bits()),
        );
        meta.insert("optimizer".into(), self.optimizer.clone());
        meta.insert("rng_seed".into(), hex(&self.rng_seed));
        meta.insert("rng_stream".into(), self.rng_stream.to_string());
        meta.insert("rng_word_pos".into(), self.rng_word_pos.to_string());
        meta.insert("terms".into(), self.points.len().to_string());
        let h = checksum(
            named.iter().map(|(k, b, _)| (k.as_str(), b.as_slice())),
            Some(&meta),
        );
        meta.insert("checksum".into(), format!("{h:016x}"));
        let views: Vec<(String, TensorView<'_>)> = named
            .iter()
            .map(|(k, b, n)| TensorView::new(Dtype::F64, vec![*n], b).map(|v| (k.clone(), v)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Format {
                path: "checkpoint".into(),
                msg: e.to_string(),
            })?;
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::Format {
            path: "checkpoint".into(),
            msg: e.to_string(),
        })
    }

    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self> {
        let bad = |msg: String| Error::Format {
            path: path.display().to_string(),
            msg: format!("not a valid checkpoint: {msg}"),
        };
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let (_, m) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = m
            .metadata()
            .clone()
            .ok_or_else(|| bad("no metadata".into()))?;
        let get = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("missing `{k}`")))
        };
        if get("kind")? != "kfac-pinn checkpoint" {
            return Err(bad("wrong kind".into()));
        }
        let mut named: Vec<(String, Vec<f64>, Vec<u8>)> = Vec::new();
        for (k, v) in st.tensors() {
            if v.dtype() != Dtype::F64 || v.shape().len() != 1 {
                return Err(bad(format!("tensor `{k}` is not a 1-d f64 array")));
            }
            let raw = v.data().to_vec();
            let vals = raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            named.push((k, vals, raw));
        }
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let whole = match meta.get("format").map(String::as_str) {
            None => false,
            Some(f) if f == FORMAT.to_string() => true,
            Some(f) => {
                return Err(bad(format!(
                    "unknown format `{f}` (this build reads {FORMAT})"
                )))
            }
        };
        let h = checksum(
            named.iter().map(|(k, _, b)| (k.as_str(), b.as_slice())),
            whole.then_some(&meta),
        );
        if get("checksum")? != format!("{h:016x}") {
            return Err(bad("checksum mismatch (the file is corrupted)".into()));
        }
        let num = |k: &str| -> Result<u128> {
            get(k)?
                .parse::<u128>()
                .map_err(|_| bad(format!("`{k}` is not a number")))
        };
        let bits = |k: &str| -> Result<f64> {
            u64::from_str_radix(&get(k)?, 16)
                .map(f64::from_bits)
                .map_err(|_| bad(format!("`{k}` is malformed")))
        };
        let seed = unhex(&get("rng_seed")?)
            .filter(|s| s.len() == 32)
            .ok_or_else(|| bad("`rng_seed` is malformed".into()))?;
        let terms = num("terms")? as usize;
        let mut params = None;
        let mut opt_state = Vec::new();
        let mut points = vec![None; terms];
        for (k, v, _) in named {
            if k == "params" {
                params = Some(v);
            } else if let Some(name) = k.strip_prefix("opt.") {
                opt_state.push((name.to_string(), v));
            } else if let Some(t) = k.strip_prefix("points.") {
                let t: usize = t.parse().map_err(|_| bad(format!("tensor `{k}`")))?;
                *points
                    .get_mut(t)
                    .ok_or_else(|| bad(format!("tensor `{k}` beyond {terms} terms")))? = Some(v);
            } else {
                return Err(bad(format!("unexpected tensor `{k}`")));
            }
        }
        Ok(Checkpoint {
            step: num("step")? as u64,
            elapsed: bits("elapsed")?,
            last_loss: bits("last_loss")?,
            optimizer: get("optimizer")?,
            params: params.ok_or_else(|| bad("missing `params`".into()))?,
            opt_state,
            points: points
                .into_iter()
                .enumerate()
                .map(|(t, p)| p.ok_or_else(|| bad(format!("missing points of term {t}"))))
                .collect::<Result<_>>()?,
            rng_seed: seed.try_into().unwrap(),
            rng_stream: num("rng_stream")? as u64,
            rng_word_pos: num("rng_word_pos")?,
        })
    }

    /// Write atomically (replacing the previous checkpoint).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::io::write_atomic(path, &self.to_bytes()?)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, &bytes)
    }
}
