//! The Physics-based Deep Learning book's HIG examples (toy regression, coupled
//! oscillators). Filled in by the HIG issue; until then no names are registered here.

use super::{Problem, ProblemOptions};
use crate::error::Result;
use std::sync::Arc;

/// Names of the book's problems.
pub const NAMES: &[&str] = &[];

/// The problem `name`, or None if it is not one of the book's.
pub fn build(_name: &str, _opts: &ProblemOptions) -> Option<Result<Arc<dyn Problem>>> {
    None
}
