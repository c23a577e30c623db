//! Launch geometry and kernel arguments, shared by the CUDA backend and the CPU emulation
//! (`backend::emu`), so the emulated tests exercise the very grid/block computations the
//! GPU gets. No CUDA calls here.
//!
//! Checked by the unit tests below (coverage and caps of every geometry) and, through the
//! emulation, by tests/kernels.rs.

use crate::error::Result;
use crate::scalar::{DType, Real};

/// Threads per block of the 1-D kernels (a multiple of 32; the block reductions in
/// kernels/common.cuh assume it).
pub const BLOCK: u32 = 256;
/// Resident blocks per multiprocessor the grid caps aim at; the kernels' grid-stride
/// loops cover whatever the cap leaves.
pub const BLOCKS_PER_SM: u32 = 8;
/// Column tile and row threads of the column-sum kernel (COL_TILE, COL_ROWS in reduce.cu).
pub const COL_TILE: u32 = 32;
pub const COL_ROWS: u32 = 8;
/// Fewest rows a column-sum partition gets (below that, more partitions cost more than
/// they parallelise).
pub const COL_MIN_ROWS: usize = 64;
/// CUDA's limit on gridDim.y.
pub const MAX_GRID_Y: usize = 65_535;

/// What the geometry depends on: the number of multiprocessors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    pub sm_count: u32,
}

impl DeviceLimits {
    /// Most blocks a 1-D launch gets.
    pub fn max_blocks(&self) -> u32 {
        (self.sm_count.max(1) * BLOCKS_PER_SM).max(1)
    }
}

/// Grid and block dimensions of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub grid: [u32; 3],
    pub block: [u32; 3],
}

impl Geometry {
    /// Total threads launched.
    pub fn threads(&self) -> u64 {
        self.grid
            .iter()
            .chain(&self.block)
            .map(|&d| d as u64)
            .product()
    }

    /// A grid-stride 1-D launch over `n` items, `None` when there is nothing to do (CUDA
    /// rejects empty grids).
    pub fn linear(n: usize, lim: DeviceLimits) -> Option<Geometry> {
        if n == 0 {
            return None;
        }
        let blocks = n.div_ceil(BLOCK as usize).min(lim.max_blocks() as usize) as u32;
        Some(Geometry {
            grid: [blocks, 1, 1],
            block: [BLOCK, 1, 1],
        })
    }

    /// One block of [`BLOCK`] threads (the second pass of a reduction).
    pub fn single_block() -> Geometry {
        Geometry {
            grid: [1, 1, 1],
            block: [BLOCK, 1, 1],
        }
    }

    /// One warp per row, grid-stride over rows by warps.
    pub fn warp_per_row(rows: usize, lim: DeviceLimits) -> Option<Geometry> {
        if rows == 0 {
            return None;
        }
        let per_block = (BLOCK / 32) as usize;
        let blocks = rows.div_ceil(per_block).min(lim.max_blocks() as usize) as u32;
        Some(Geometry {
            grid: [blocks, 1, 1],
            block: [BLOCK, 1, 1],
        })
    }

    /// Column sums of a `rows × cols` matrix: blocks of `COL_TILE × COL_ROWS` threads over
    /// column tiles (x) and row partitions (y). Returns the geometry, the number of row
    /// partitions and the rows per partition; `None` when `cols == 0`.
    pub fn col_sum(
        rows: usize,
        cols: usize,
        lim: DeviceLimits,
    ) -> Option<(Geometry, usize, usize)> {
        if cols == 0 {
            return None;
        }
        let tiles = cols.div_ceil(COL_TILE as usize);
        let want = (lim.max_blocks() as usize / tiles).max(1);
        let parts = want.min(rows.div_ceil(COL_MIN_ROWS).max(1)).min(MAX_GRID_Y);
        let chunk = rows.div_ceil(parts).max(1);
        let parts = rows.div_ceil(chunk).max(1);
        Some((
            Geometry {
                grid: [tiles as u32, parts as u32, 1],
                block: [COL_TILE, COL_ROWS, 1],
            },
            parts,
            chunk,
        ))
    }
}

/// One kernel argument. Pointers are device addresses on the GPU and host addresses in
/// the emulation; integers are the kernels' `i64` (`long long`) and `int`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KArg {
    Ptr(u64),
    I64(i64),
    I32(i32),
    F32(f32),
    F64(f64),
}

impl KArg {
    /// A size or offset.
    pub fn len(n: usize) -> KArg {
        KArg::I64(n as i64)
    }
    /// A flag (`int` 0/1).
    pub fn flag(b: bool) -> KArg {
        KArg::I32(i32::from(b))
    }
    /// A scalar of the kernel's element type.
    pub fn val<T: Real>(v: T) -> KArg {
        match T::DTYPE {
            DType::F32 => KArg::F32(v.to_f64() as f32),
            DType::F64 => KArg::F64(v.to_f64()),
        }
    }
}

/// Full entry-point name of kernel `base` for element type `T`, e.g. `axpby_f32`.
pub fn kernel_name<T: Real>(base: &str) -> String {
    format!("{base}_{}", T::DTYPE.name())
}

/// What the kernel plans in [`super::ops`] need from a device: launches, a scratch area
/// and small copies. Implemented by the CUDA backend and by the CPU emulation.
pub trait Launcher {
    fn limits(&self) -> DeviceLimits;
    /// Launch entry point `kernel` (e.g. `"axpby_f64"`) with `geom` and `args`.
    ///
    /// # Safety
    /// Every pointer argument must address memory valid for all the accesses the kernel
    /// makes with these sizes (host memory in the emulation, so a wrong extent is
    /// undefined behaviour there, not a device fault).
    unsafe fn launch(&self, kernel: &str, geom: Geometry, args: &[KArg]) -> Result<()>;
    /// Run `f` with the address of a scratch area of at least `bytes` bytes, held
    /// exclusively for the duration of `f` (work queued by `f` is stream-ordered before
    /// any later use of the area).
    fn with_scratch(&self, bytes: usize, f: &mut dyn FnMut(u64) -> Result<()>) -> Result<()>;
    /// Copy `dst.len()` bytes from address `src` to the host, after all queued work.
    ///
    /// # Safety
    /// `src` must address `dst.len()` readable bytes.
    unsafe fn read(&self, src: u64, dst: &mut [u8]) -> Result<()>;
    /// Copy `src` to address `dst` (stream-ordered).
    ///
    /// # Safety
    /// `dst` must address `src.len()` writable bytes.
    unsafe fn write(&self, src: &[u8], dst: u64) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: DeviceLimits = DeviceLimits { sm_count: 2 };

    #[test]
    fn linear_covers_with_grid_stride_and_caps() {
        assert_eq!(Geometry::linear(0, LIM), None);
        let g = Geometry::linear(1, LIM).unwrap();
        assert_eq!(g.grid, [1, 1, 1]);
        let g = Geometry::linear(257, LIM).unwrap();
        assert_eq!(g.grid[0], 2);
        let g = Geometry::linear(1 << 30, LIM).unwrap();
        assert_eq!(g.grid[0], LIM.max_blocks());
        assert_eq!(g.block, [BLOCK, 1, 1]);
    }

    #[test]
    fn col_sum_partitions_cover_all_rows() {
        for (rows, cols) in [(0, 5), (1, 1), (63, 1), (1000, 3), (100_000, 1), (5, 700)] {
            let (g, parts, chunk) = Geometry::col_sum(rows, cols, LIM).unwrap();
            assert!(parts * chunk >= rows, "{rows}x{cols}");
            assert!(
                parts == 1 || (parts - 1) * chunk < rows,
                "{rows}x{cols}: empty partition"
            );
            assert_eq!(g.grid[1] as usize, parts);
            assert!(g.grid[0] as usize * COL_TILE as usize >= cols);
        }
        assert_eq!(Geometry::col_sum(10, 0, LIM), None);
    }

    #[test]
    fn warp_rows() {
        assert_eq!(Geometry::warp_per_row(0, LIM), None);
        assert_eq!(Geometry::warp_per_row(9, LIM).unwrap().grid[0], 2);
    }
}
