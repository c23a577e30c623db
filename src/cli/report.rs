//! The end-of-run report of `train`: one line (or `--json`), the per-field errors of
//! systems, the comparison with published reference values and the recovered
//! coefficients of inverse problems. Checked by tests/cli.rs
//! and tests/systems.rs (the JSON fields).

use crate::train::{StopReason, Summary};

pub(super) fn report(s: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(s)?);
    } else {
        let net = s
            .widths
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("→");
        let l2 = if s.stop == StopReason::Diverged {
            "L2 n/a (diverged)".to_string()
        } else if s.l2_abs.is_nan() {
            "L2 n/a (no exact solution)".to_string()
        } else {
            format!("L2 {:.3e} (rel {:.3e})", s.l2_abs, s.l2_rel)
        };
        println!(
            "{} | {} | {} ({} params, {}) | {} steps in {:.1} s ({:.2} ms/step) | loss {:.3e} | {l2} | stop: {:?}",
            s.problem, s.optimizer, net, s.params, s.dtype, s.steps, s.seconds, s.mean_step_ms, s.loss, s.stop
        );
        if !s.l2_fields.is_empty() {
            let per: Vec<String> = s
                .l2_fields
                .iter()
                .map(|(k, e)| format!("{k} {:.3e}", e.rel))
                .collect();
            println!("relative L2 per field: {}", per.join(", "));
        }
        if let Some(r) = &s.reference {
            println!(
                "largest deviation from the reference values ({} points; {}): {:.3e}",
                r.points, r.source, r.max_abs_error
            );
        }
        if !s.coefficients.is_empty() {
            let per: Vec<String> = s
                .coefficients
                .iter()
                .map(|(k, c)| match (c.truth, c.rel_error) {
                    (Some(t), Some(e)) => {
                        format!("{k} {:.6e} (true {t:e}, relative error {e:.3e})", c.value)
                    }
                    _ => format!("{k} {:.6e}", c.value),
                })
                .collect();
            println!("recovered coefficients: {}", per.join(", "));
        }
        if !s.warnings.is_empty() {
            println!("{} warning(s): {}", s.warnings.len(), s.warnings.join("; "));
        }
    }
    Ok(())
}
