//! What the benchmarks share: an in-process load generator ([`load`]) and the
//! native baselines ([`native`]), the service's ingress work without the sandbox.

pub mod load;
pub mod native;

pub use load::{Prepared, Report, run};
