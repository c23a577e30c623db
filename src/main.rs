//! The `kfac-pinn` binary: installs the counting allocator (for memory figures) and runs
//! the CLI. Errors print as one line with their causes and exit with status 1.

use clap::Parser;

#[global_allocator]
static ALLOC: kfac_pinn::mem::CountingAlloc = kfac_pinn::mem::CountingAlloc;

fn main() {
    let cli = kfac_pinn::cli::Cli::parse();
    if let Err(e) = kfac_pinn::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
