//! Stop signals of a training run: SIGINT, SIGTERM and SIGHUP set a flag that the trainer
//! checks between steps (it then writes its checkpoint); a second signal exits at once with
//! 128 + its number. Checked by `tests/crash.rs` (SIGTERM → 143, SIGHUP → 129).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// SIGINT, SIGTERM and SIGHUP stop the run after its current step (checkpoint written);
/// a second one exits at once with 128 + signal. A watcher thread says so on stderr (a
/// signal handler itself may not print).
pub(super) struct Signals {
    pub(super) stop: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
    done: Arc<AtomicBool>,
}

const STOP_SIGNALS: [(i32, &str); 3] = [
    (signal_hook::consts::SIGINT, "SIGINT"),
    (signal_hook::consts::SIGTERM, "SIGTERM"),
    (signal_hook::consts::SIGHUP, "SIGHUP"),
];

impl Signals {
    pub(super) fn install() -> anyhow::Result<Signals> {
        use signal_hook::flag;
        let stop = Arc::new(AtomicBool::new(false));
        let which = Arc::new(AtomicUsize::new(0));
        for (sig, _) in STOP_SIGNALS {
            // registered first, so it sees the flag as the previous signal left it
            flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&stop))?;
            flag::register(sig, Arc::clone(&stop))?;
            flag::register_usize(sig, Arc::clone(&which), sig as usize)?;
        }
        let done = Arc::new(AtomicBool::new(false));
        {
            let (which, done) = (Arc::clone(&which), Arc::clone(&done));
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if which.load(Ordering::SeqCst) != 0 {
                        eprintln!("\nstopping after this step (a second signal aborts at once)");
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            });
        }
        Ok(Signals { stop, which, done })
    }

    /// The signal that stopped the run, if any: number and name.
    pub(super) fn received(&self) -> Option<(i32, &'static str)> {
        let s = self.which.load(Ordering::SeqCst) as i32;
        STOP_SIGNALS.iter().find(|(n, _)| *n == s).copied()
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}
