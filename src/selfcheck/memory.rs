//! Memory checks: the backend's account of the memory its buffers hold (where it keeps
//! one: [`Backend::memory_use`]), and an allocation that cannot succeed — it must come
//! back as [`Error::Device`] naming the memory, not as a panic or an abort, and the
//! backend must keep working afterwards. On a GPU the request is twice the device's
//! memory; on the host it is 1 PiB, more than a 47-bit address space can map, so the
//! system allocator refuses it without touching memory.

use super::Check;
use crate::backend::Backend;
use crate::error::{Error, Result};

/// A buffer of 1 Mi f64 raises the account by exactly its bytes, the peak follows, and
/// dropping it gives them back.
fn accounting<B: Backend>(be: &B, ck: &mut Check) -> Result<()> {
    let name = "accounting of an 8 MiB buffer";
    let Some((cur0, _)) = be.memory_use() else {
        ck.not_applicable(
            name,
            "this backend keeps no device-memory account (host memory is the process heap)",
        );
        return Ok(());
    };
    let bytes = 8usize << 20;
    let b = be.alloc::<f64>(1 << 20)?;
    let (cur1, peak1) = be.memory_use().unwrap_or_default();
    drop(b);
    let (cur2, _) = be.memory_use().unwrap_or_default();
    ck.expect(
        name,
        cur1 == cur0 + bytes && peak1 >= cur1 && cur2 == cur0,
        format!("held {cur0} B, then {cur1} B (peak {peak1} B) with it, then {cur2} B after the drop; expected +{bytes} B and back"),
    );
    Ok(())
}

/// An allocation of `elems` f64 must fail with a device error containing `needle`, and
/// the backend must still compute afterwards.
fn exhaustion<B: Backend>(be: &B, ck: &mut Check, elems: usize, needle: &str) -> Result<()> {
    let name = format!(
        "allocating {} fails cleanly",
        human(elems.saturating_mul(8))
    );
    match be.alloc::<f64>(elems) {
        Ok(_) => ck.expect(name, false, "the allocation succeeded"),
        Err(Error::Device(m)) => ck.expect(
            name,
            m.contains(needle),
            format!("device error: {m} (expected it to say `{needle}`)"),
        ),
        Err(e) => ck.expect(name, false, format!("not a device error: {e}")),
    }
    let x = be.upload(&[1.0f64, 2.0, 3.0])?;
    let d = be.dot(&x, &x)?;
    ck.expect(
        "the backend computes after the failed allocation",
        d == 14.0,
        format!("(1, 2, 3)·(1, 2, 3) = {d}, expected 14"),
    );
    Ok(())
}

fn human(bytes: usize) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.3} {}", UNITS[u])
}

/// The host backends (the CPU and the emulation, whose buffers are host vectors).
pub fn host<B: Backend>(be: &B, ck: &mut Check) -> Result<()> {
    accounting(be, ck)?;
    exhaustion(be, ck, 1 << 47, "out of host memory")
}

/// The CUDA backend: its account, twice the device's memory refused, and NVML listing the
/// GPU the backend opened.
pub fn cuda(be: &crate::backend::cuda::Cuda, ck: &mut Check) -> Result<()> {
    accounting(be, ck)?;
    let (free, total) = be.mem_info()?;
    ck.expect(
        "driver reports the device memory",
        total > 0 && free <= total,
        format!("free {} of {}", human(free), human(total)),
    );
    exhaustion(be, ck, 2 * total / 8, "out of GPU memory")?;
    match crate::backend::cuda::nvml::device_info() {
        Ok(info) => ck.expect(
            "NVML lists the GPUs",
            !info.gpus.is_empty(),
            format!("{} GPU(s)", info.gpus.len()),
        ),
        Err(e) => ck.expect("NVML lists the GPUs", false, e.to_string()),
    }
    Ok(())
}
