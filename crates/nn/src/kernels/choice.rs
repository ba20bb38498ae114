//! Which implementation the ops take for CPU tensors: ferroflow's fast kernels
//! (the default), the same with every convolution through im2col + gemm (no
//! direct convolutions), or the generic path built from candle's standard tensor
//! ops, the path every other device (CUDA) runs.
//!
//! The generic path is selectable on the CPU so that it is tested there: the
//! golden conformance suite runs through it at the same tolerances, and a test
//! checks that every zoo model trains through it without one fast kernel
//! running ([`fast_kernel_runs`]). `FERROFLOW_KERNELS=generic` selects it for
//! a whole process; [`with_kernels`] for one thread's calls (tests).

use std::cell::Cell;
use std::sync::OnceLock;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result};

/// The environment variable that picks the kernels for a process.
pub const KERNELS_ENV: &str = "FERROFLOW_KERNELS";

/// The implementations the ops can take on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kernels {
    /// ferroflow's CPU kernels for f32 CPU tensors, each convolution pass taking the
    /// Winograd F(4x4, 3x3) kernel (`kernels/winograd.rs`) or the direct AVX-512 kernel
    /// (`kernels/direct.rs`) where the CPU and the shape allow it, else im2col + gemm;
    /// the generic path elsewhere.
    Fast,
    /// As [`Kernels::Fast`] without Winograd: the direct kernels or im2col + gemm (to
    /// compare the two, and for sums in the direct kernels' rounding).
    Direct,
    /// As [`Kernels::Fast`], but every convolution through im2col + gemm (to compare
    /// the two, and the fallback on CPUs without AVX-512).
    Gemm,
    /// candle's standard tensor ops everywhere (what CUDA runs).
    Generic,
}

impl Kernels {
    /// The choice `FERROFLOW_KERNELS` makes: unset, empty or `fast` is
    /// [`Kernels::Fast`], `direct` is [`Kernels::Direct`], `gemm` is
    /// [`Kernels::Gemm`], `generic` is [`Kernels::Generic`].
    ///
    /// ```
    /// use ferroflow_nn::kernels::Kernels;
    /// assert_eq!(Kernels::parse("generic").unwrap(), Kernels::Generic);
    /// assert!(Kernels::parse("gpu").unwrap_err().to_string().contains("FERROFLOW_KERNELS"));
    /// ```
    ///
    /// # Errors
    /// Any other value, naming it and the accepted ones.
    pub fn parse(value: &str) -> Result<Kernels> {
        match value.trim() {
            "" | "fast" => Ok(Kernels::Fast),
            "direct" => Ok(Kernels::Direct),
            "gemm" => Ok(Kernels::Gemm),
            "generic" => Ok(Kernels::Generic),
            other => Err(NnError::Config {
                context: KERNELS_ENV.into(),
                reason: format!(
                    "{other:?} is not a kernel choice: use \"fast\" (the default), \"direct\", \"gemm\" or \"generic\""
                ),
            }),
        }
    }

    /// The process's choice from `FERROFLOW_KERNELS` (the CLI checks it at
    /// start-up and reports a bad value; here a bad value means the default).
    ///
    /// # Errors
    /// As [`Kernels::parse`].
    pub fn from_env() -> Result<Kernels> {
        Kernels::parse(&std::env::var(KERNELS_ENV).unwrap_or_default())
    }

    /// The choice in force on this thread: [`with_kernels`]'s, else the
    /// process's.
    pub fn current() -> Kernels {
        OVERRIDE.get().unwrap_or_else(|| *PROCESS.get_or_init(|| Kernels::from_env().unwrap_or(Kernels::Fast)))
    }
}

static PROCESS: OnceLock<Kernels> = OnceLock::new();

thread_local! {
    static OVERRIDE: Cell<Option<Kernels>> = const { Cell::new(None) };
    static FAST_RUNS: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` with `kernels` in force on this thread (ops called from `f`,
/// their backward passes included when `f` runs them), then restores the
/// previous choice, even if `f` panics.
pub fn with_kernels<R>(kernels: Kernels, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Kernels>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.set(self.0);
        }
    }
    let _restore = Restore(OVERRIDE.replace(Some(kernels)));
    f()
}

/// Whether ops on `device` take ferroflow's fast kernels: a CPU device with
/// [`Kernels::Fast`] or [`Kernels::Gemm`] in force. (Each kernel also checks its
/// dtypes.)
pub fn fast_kernels_on(device: &Device) -> bool {
    device.is_cpu() && Kernels::current() != Kernels::Generic
}

/// How many times a fast kernel (a ferroflow custom op, forward or
/// backward) has run on this thread: the generic path's test reads it
/// before and after, expecting no change.
pub fn fast_kernel_runs() -> u64 {
    FAST_RUNS.get()
}

/// Counts one run of a fast kernel (each custom op's `cpu_fwd` calls it).
pub fn count_fast_run() {
    FAST_RUNS.set(FAST_RUNS.get() + 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_override_is_per_thread_and_restored() {
        let before = Kernels::current();
        with_kernels(Kernels::Generic, || {
            assert_eq!(Kernels::current(), Kernels::Generic);
            assert!(!fast_kernels_on(&Device::Cpu));
            with_kernels(Kernels::Fast, || assert!(fast_kernels_on(&Device::Cpu)));
            assert_eq!(Kernels::current(), Kernels::Generic);
            // Another thread keeps the process's choice.
            std::thread::scope(|s| s.spawn(|| assert_eq!(Kernels::current(), before)).join().unwrap());
        });
        assert_eq!(Kernels::current(), before);
    }
}
