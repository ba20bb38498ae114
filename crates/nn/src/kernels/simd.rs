//! Runtime instruction-set dispatch for the kernels' element-wise loops.
//!
//! Why: the workspace builds for the x86-64 baseline (SSE2), so the loops of the
//! batch-norm kernels compile to scalar or 2-lane code, while the machines this runs on
//! mostly have AVX2 or AVX-512 (perf: batch norm's f64 reductions were scalar
//! `cvtss2sd`/`addsd`, about a tenth of a fused conv block's time). A kernel loop is
//! written as the body of [`simd_kernel!`]'s `pulp::WithSimd` impl, which pulp's
//! `Arch::dispatch` calls from a function compiled for the best instruction set the CPU
//! reports (AVX-512, AVX2 + FMA, or the baseline); `with_simd` is `#[inline(always)]`, so
//! the loop is compiled for that instruction set and LLVM vectorises it. (A closure or fn
//! pointer handed to `dispatch` is not enough: its body stays a baseline function that
//! LLVM need not inline.)
//!
//! Bits do not depend on the instruction set: the loops keep explicit, fixed accumulation
//! lanes (no reassociation), and Rust never contracts a multiply and an add into an FMA
//! unless asked to (`mul_add`), so every variant performs the same IEEE operations.

/// Defines `fn $name(args) -> R` that runs `$body` (with the arguments bound as
/// parameters) through pulp's dispatch, plus the struct carrying the arguments. What the
/// body calls should be `#[inline(always)]` or small generics.
macro_rules! simd_kernel {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident<$lt:lifetime>($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name<$lt>($($arg: $ty),*) -> $ret {
            #[allow(non_camel_case_types)]
            struct Kernel<$lt> {
                $($arg: $ty,)*
                _lt: ::std::marker::PhantomData<&$lt ()>,
            }
            impl<$lt> ::pulp::WithSimd for Kernel<$lt> {
                type Output = $ret;
                #[inline(always)]
                fn with_simd<S: ::pulp::Simd>(self, _simd: S) -> $ret {
                    let Kernel { $($arg,)* _lt: _ } = self;
                    $body
                }
            }
            ::pulp::Arch::new().dispatch(Kernel { $($arg,)* _lt: ::std::marker::PhantomData })
        }
    };
}

pub(crate) use simd_kernel;
