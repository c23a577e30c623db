//! Model files in safetensors format. Tensor names follow PyTorch's `state_dict` of
//! `nn.Sequential(Linear, Tanh, Linear, …, Linear)`: layer l's weight is `{2l}.weight`
//! (shape fan_out × fan_in) and its bias `{2l}.bias`. Metadata records the architecture
//! (`kfac_pinn.widths`, `kfac_pinn.activation`) and free-form run facts. On load, a common
//! prefix (`net.`, `model.`, `layers.`…) is accepted and the architecture is inferred from
//! the tensor shapes when the metadata lacks it, so files written by PyTorch
//! (`safetensors.torch.save_file(model.state_dict(), …)`) load too.
//! An inverse problem's coefficients (design §7) are not tensors (PyTorch's
//! `load_state_dict` would refuse an unknown key): their values go to the metadata
//! (`kfac_pinn.coefficients`, comma-separated, printed so that they parse back to the
//! same f64) with their names (`kfac_pinn.coefficient_names`, given by the caller).
//! Checked by `tests/model_io.rs` (bit-exact round trip, PyTorch-style names, bad files)
//! and `tests/inverse.rs` (coefficients).

use super::Mlp;
use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// A network read from a file.
#[derive(Clone, Debug)]
pub struct ModelFile {
    /// The network alone (no coefficients).
    pub mlp: Mlp,
    /// The network's parameters.
    pub params: Vec<f64>,
    pub metadata: HashMap<String, String>,
    /// Recovered coefficients of an inverse problem, by name (empty for most files).
    pub coefficients: Vec<(String, f64)>,
}

/// Metadata key of the coefficients' values.
pub const COEF_VALUES_KEY: &str = "kfac_pinn.coefficients";
/// Metadata key of the coefficients' names (comma-separated).
pub const COEF_NAMES_KEY: &str = "kfac_pinn.coefficient_names";

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Format {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}

/// Serialise to safetensors bytes, in f64 or f32 (`f32 = true`). With coefficients
/// (`mlp.num_coefs() > 0`, their values the tail of `params`) their values go to the
/// metadata in full f64 precision; `extra` may name them ([`COEF_NAMES_KEY`]).
pub fn to_bytes(mlp: &Mlp, params: &[f64], f32: bool, extra: &[(&str, String)]) -> Result<Vec<u8>> {
    mlp.check_params(params.len())?;
    let coefs = &params[mlp.num_net_params()..];
    let mut bufs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (l, lay) in mlp.layers().into_iter().enumerate() {
        let enc = |xs: &[f64]| -> Vec<u8> {
            if f32 {
                xs.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect()
            } else {
                xs.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
        };
        bufs.push((
            format!("{}.weight", 2 * l),
            vec![lay.fan_out, lay.fan_in],
            enc(&params[lay.w_off..lay.b_off]),
        ));
        bufs.push((
            format!("{}.bias", 2 * l),
            vec![lay.fan_out],
            enc(&params[lay.b_off..lay.b_off + lay.fan_out]),
        ));
    }
    let dtype = if f32 { Dtype::F32 } else { Dtype::F64 };
    let views: Vec<(String, TensorView<'_>)> = bufs
        .iter()
        .map(|(n, s, b)| TensorView::new(dtype, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Format {
            path: "model".into(),
            msg: e.to_string(),
        })?;
    let mut meta: HashMap<String, String> = HashMap::new();
    meta.insert("format".into(), "pt".into());
    meta.insert(
        "kfac_pinn.widths".into(),
        mlp.widths()
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(","),
    );
    meta.insert("kfac_pinn.activation".into(), "tanh".into());
    for (k, v) in extra {
        meta.insert((*k).to_string(), v.clone());
    }
    if !coefs.is_empty() {
        // `{:e}` prints the shortest digits that parse back to the same f64
        let vals = coefs.iter().map(|v| format!("{v:e}")).collect::<Vec<_>>();
        meta.insert(COEF_VALUES_KEY.into(), vals.join(","));
    }
    safetensors::serialize(views, Some(meta)).map_err(|e| Error::Format {
        path: "model".into(),
        msg: e.to_string(),
    })
}

/// Write a model file atomically (refusing to overwrite unless `force`).
pub fn save(
    path: &Path,
    mlp: &Mlp,
    params: &[f64],
    f32: bool,
    extra: &[(&str, String)],
    force: bool,
) -> Result<()> {
    crate::io::check_overwrite(path, force)?;
    crate::io::write_atomic(path, &to_bytes(mlp, params, f32, extra)?)
}

/// Parse safetensors bytes (`path` names the source in errors).
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<ModelFile> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| bad(path, format!("not a valid safetensors file: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(path, e.to_string()))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    if let Some(act) = metadata.get("kfac_pinn.activation") {
        if act != "tanh" {
            return Err(bad(
                path,
                format!("activation `{act}` is not supported (only tanh)"),
            ));
        }
    }
    // group tensors by layer index: "<prefix><idx>.weight|bias"
    let mut layers: Vec<(usize, Option<TensorView<'_>>, Option<TensorView<'_>>)> = Vec::new();
    let mut prefix: Option<String> = None;
    for (name, view) in st.tensors() {
        let (stem, kind) = name.rsplit_once('.').ok_or_else(|| {
            bad(
                path,
                format!("tensor `{name}` is not `<index>.weight` or `<index>.bias`"),
            )
        })?;
        let (pre, idx) = match stem.rsplit_once('.') {
            Some((p, i)) => (format!("{p}."), i),
            None => (String::new(), stem),
        };
        let idx: usize = idx.parse().map_err(|_| {
            bad(
                path,
                format!("tensor `{name}`: `{idx}` is not a layer index"),
            )
        })?;
        match &prefix {
            None => prefix = Some(pre),
            Some(p) if *p != pre => {
                return Err(bad(
                    path,
                    format!("tensor `{name}` has prefix `{pre}`, others `{p}`"),
                ))
            }
            _ => {}
        }
        let slot = match layers.iter_mut().find(|l| l.0 == idx) {
            Some(s) => s,
            None => {
                layers.push((idx, None, None));
                layers.last_mut().unwrap()
            }
        };
        match kind {
            "weight" => slot.1 = Some(view),
            "bias" => slot.2 = Some(view),
            k => {
                return Err(bad(
                    path,
                    format!("tensor `{name}`: unexpected kind `{k}` (weight or bias)"),
                ))
            }
        }
    }
    if layers.is_empty() {
        return Err(bad(path, "the file holds no tensors"));
    }
    layers.sort_by_key(|l| l.0);
    let mut widths = Vec::new();
    let mut params = Vec::new();
    for (idx, w, b) in &layers {
        let w = w
            .as_ref()
            .ok_or_else(|| bad(path, format!("layer {idx} has a bias but no weight")))?;
        let b = b
            .as_ref()
            .ok_or_else(|| bad(path, format!("layer {idx} has a weight but no bias")))?;
        let (fo, fi) = match w.shape() {
            [o, i] => (*o, *i),
            s => {
                return Err(bad(
                    path,
                    format!("layer {idx} weight has shape {s:?}, expected [out, in]"),
                ))
            }
        };
        if b.shape() != [fo] {
            return Err(bad(
                path,
                format!(
                    "layer {idx} bias has shape {:?}, expected [{fo}]",
                    b.shape()
                ),
            ));
        }
        match widths.last() {
            None => widths.extend([fi, fo]),
            Some(&prev) if prev == fi => widths.push(fo),
            Some(&prev) => {
                return Err(bad(
                    path,
                    format!("layer {idx} takes {fi} inputs but the previous layer gives {prev}"),
                ))
            }
        }
        params.extend(decode(path, w)?);
        params.extend(decode(path, b)?);
    }
    let mlp = Mlp::new(&widths)?;
    if let Some(ws) = metadata.get("kfac_pinn.widths") {
        let declared = Mlp::parse(ws).map_err(|e| bad(path, format!("metadata widths: {e}")))?;
        if declared != mlp {
            return Err(bad(
                path,
                format!("metadata says {declared}, tensors give {mlp}"),
            ));
        }
    }
    if let Some(i) = params.iter().position(|v| !v.is_finite()) {
        return Err(bad(path, format!("parameter {i} is {}", params[i])));
    }
    let coefficients = read_coefficients(path, &metadata)?;
    Ok(ModelFile {
        mlp,
        params,
        metadata,
        coefficients,
    })
}

/// The coefficients recorded in the metadata (none if it records none).
fn read_coefficients(path: &Path, meta: &HashMap<String, String>) -> Result<Vec<(String, f64)>> {
    let Some(vals) = meta.get(COEF_VALUES_KEY) else {
        return Ok(vec![]);
    };
    let vals = vals
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    bad(
                        path,
                        format!("coefficient value `{v}` is not a finite number"),
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let names: Vec<String> = match meta.get(COEF_NAMES_KEY) {
        Some(n) => n.split(',').map(|s| s.trim().to_string()).collect(),
        None => (0..vals.len()).map(|i| format!("c{i}")).collect(),
    };
    if names.len() != vals.len() {
        return Err(bad(
            path,
            format!(
                "{} coefficient names for {} values",
                names.len(),
                vals.len()
            ),
        ));
    }
    Ok(names.into_iter().zip(vals).collect())
}

fn decode(path: &Path, v: &TensorView<'_>) -> Result<Vec<f64>> {
    let d = v.data();
    Ok(match v.dtype() {
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        t => return Err(bad(path, format!("dtype {t:?} not supported (F64 or F32)"))),
    })
}

pub fn load(path: &Path) -> Result<ModelFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(path, &bytes)
}
