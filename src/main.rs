//! The `kfac-pinn` binary: installs the counting allocator (for memory figures) and runs
//! the CLI. Errors print as one line with their causes and exit with status 1; a run
//! stopped by a signal exits with 128 + the signal's number.

use clap::Parser;

#[global_allocator]
static ALLOC: kfac_pinn::mem::CountingAlloc = kfac_pinn::mem::CountingAlloc;

fn main() {
    let cli = kfac_pinn::cli::Cli::parse();
    if let Err(e) = kfac_pinn::cli::run(cli) {
        if let Some(x) = e.downcast_ref::<kfac_pinn::cli::Exit>() {
            eprintln!("{x}");
            std::process::exit(x.code);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
