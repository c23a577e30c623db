//! Model files: safetensors save → load is bit-exact (f64), PyTorch-style names and
//! prefixes load, and malformed files are clear errors.

use kfac_pinn::model::io::{from_bytes, load, save, to_bytes};
use kfac_pinn::model::Mlp;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

#[test]
fn round_trip_is_bit_exact() {
    let mlp = Mlp::new(&[3, 7, 5, 2]).unwrap();
    let p: Vec<f64> = mlp.init(4);
    let dir = std::env::temp_dir().join(format!("kfac-pinn-model-{}", std::process::id()));
    let path = dir.join("m.safetensors");
    save(
        &path,
        &mlp,
        &p,
        false,
        &[("problem", "poisson2d".into())],
        false,
    )
    .unwrap();
    let m = load(&path).unwrap();
    assert_eq!(m.mlp, mlp);
    assert_eq!(
        m.params.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        p.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(m.metadata["problem"], "poisson2d");
    // no overwrite without force
    let e = save(&path, &mlp, &p, false, &[], false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--force"), "{e}");
    save(&path, &mlp, &p, true, &[], true).unwrap();
    let m = load(&path).unwrap();
    let back: Vec<f64> = p.iter().map(|&v| v as f32 as f64).collect();
    assert_eq!(m.params, back);
    std::fs::remove_dir_all(dir).ok();
}

/// A file shaped like `safetensors.torch.save_file(nn.Sequential(...).state_dict())`
/// under a `net.` prefix, f32, without our metadata.
#[test]
fn pytorch_style_file_loads() {
    let w0: Vec<f32> = (0..8).map(|i| i as f32 * 0.25).collect(); // 4 x 2
    let b0: Vec<f32> = vec![0.5, -0.5, 1.0, 0.0];
    let w2: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0]; // 1 x 4
    let b2: Vec<f32> = vec![-1.0];
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (bw0, bb0, bw2, bb2) = (bytes(&w0), bytes(&b0), bytes(&w2), bytes(&b2));
    let views = vec![
        (
            "net.0.weight".to_string(),
            TensorView::new(Dtype::F32, vec![4, 2], &bw0).unwrap(),
        ),
        (
            "net.0.bias".to_string(),
            TensorView::new(Dtype::F32, vec![4], &bb0).unwrap(),
        ),
        (
            "net.2.weight".to_string(),
            TensorView::new(Dtype::F32, vec![1, 4], &bw2).unwrap(),
        ),
        (
            "net.2.bias".to_string(),
            TensorView::new(Dtype::F32, vec![1], &bb2).unwrap(),
        ),
    ];
    let file = safetensors::serialize(views, None::<HashMap<String, String>>).unwrap();
    let m = from_bytes(Path::new("torch.safetensors"), &file).unwrap();
    assert_eq!(m.mlp.widths(), &[2, 4, 1]);
    let x = [0.3, -0.7];
    let mut want = 0.0;
    for o in 0..4 {
        let z = b0[o] as f64 + w0[o * 2] as f64 * x[0] + w0[o * 2 + 1] as f64 * x[1];
        want += w2[o] as f64 * z.tanh();
    }
    want += b2[0] as f64;
    let got = m.mlp.eval_host(&m.params, &x)[0];
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
}

#[test]
fn bad_files_are_clear_errors() {
    let p = Path::new("bad.safetensors");
    let e = from_bytes(p, b"garbage").unwrap_err().to_string();
    assert!(
        e.contains("bad.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
    let mlp = Mlp::new(&[2, 3, 1]).unwrap();
    let mut b = to_bytes(&mlp, &mlp.init::<f64>(0), false, &[]).unwrap();
    b.truncate(b.len() - 5);
    assert!(from_bytes(p, &b).is_err());
    // inconsistent layer chain
    let w = vec![0u8; 8 * 6];
    let bias = vec![0u8; 8 * 3];
    let w2 = vec![0u8; 8 * 5];
    let b2 = vec![0u8; 8];
    let views = vec![
        (
            "0.weight".to_string(),
            TensorView::new(Dtype::F64, vec![3, 2], &w).unwrap(),
        ),
        (
            "0.bias".to_string(),
            TensorView::new(Dtype::F64, vec![3], &bias).unwrap(),
        ),
        (
            "2.weight".to_string(),
            TensorView::new(Dtype::F64, vec![1, 5], &w2).unwrap(),
        ),
        (
            "2.bias".to_string(),
            TensorView::new(Dtype::F64, vec![1], &b2).unwrap(),
        ),
    ];
    let file = safetensors::serialize(views, None::<HashMap<String, String>>).unwrap();
    let e = from_bytes(p, &file).unwrap_err().to_string();
    assert!(e.contains("takes 5 inputs") && e.contains("gives 3"), "{e}");
}
