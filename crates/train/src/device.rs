//! `cpu` / `cuda[:N]`: opening the device a command runs on, with one clear
//! error when it cannot be had, and a description for the logs.
//!
//! GPU numbering is the CUDA driver's, so `CUDA_VISIBLE_DEVICES` works as in
//! TensorFlow and PyTorch: `CUDA_VISIBLE_DEVICES=2,3 ferroflow train --device
//! cuda:1` runs on physical GPU 3.

use candle_core::Device;

use crate::error::{Result, TrainError};

/// Opens `cpu`, `cuda` (GPU 0) or `cuda:N`.
///
/// ```
/// use ferroflow_train::device;
/// assert!(device("cpu").unwrap().is_cpu());
/// assert!(device("tpu").unwrap_err().to_string().contains("expected cpu, cuda or cuda:N"));
/// ```
///
/// # Errors
/// A name that is none of those ([`TrainError::Config`]); a CUDA device in a
/// build without the `cuda` feature (naming the build command); a GPU that
/// the driver does not have, or no driver ([`TrainError::Device`], naming
/// the GPUs visible and `CUDA_VISIBLE_DEVICES`).
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        cuda if cuda == "cuda" || cuda.starts_with("cuda:") => {
            let ordinal: usize = cuda.strip_prefix("cuda:").map_or(Ok(0), str::parse).map_err(|_| {
                TrainError::config("train.device", format!("{name:?}: expected cuda or cuda:N with N a GPU index"))
            })?;
            open_cuda(name, ordinal)
        }
        other => Err(TrainError::config("train.device", format!("{other:?}: expected cpu, cuda or cuda:N"))),
    }
}

/// The device in words for logs: `cpu`, or `cuda:0 (NVIDIA H200, 139.8 GiB)`.
pub fn describe_device(device: &Device) -> String {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            let ctx = d.cuda_stream().context().clone();
            let name = ctx.name().unwrap_or_else(|e| format!("name unknown: {e}"));
            let mem =
                ctx.total_mem().map(|b| format!(", {:.1} GiB", b as f64 / (1u64 << 30) as f64)).unwrap_or_default();
            format!("cuda:{} ({name}{mem})", ctx.ordinal())
        }
        Device::Cpu => "cpu".to_string(),
        other => format!("{:?}", other.location()),
    }
}

/// `CUDA_VISIBLE_DEVICES` as the error messages quote it.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
fn visible_devices() -> String {
    std::env::var("CUDA_VISIBLE_DEVICES").map_or_else(|_| "unset".to_string(), |v| format!("{v:?}"))
}

#[cfg(feature = "cuda")]
fn open_cuda(name: &str, ordinal: usize) -> Result<Device> {
    use candle_core::cuda_backend::cudarc::driver::CudaContext;
    let fail = |reason: String| TrainError::Device { name: name.to_string(), reason };
    let count = CudaContext::device_count().map_err(|e| {
        fail(format!(
            "the CUDA driver is not usable ({e}): is an NVIDIA GPU present and its driver installed? \
             (CUDA_VISIBLE_DEVICES={})",
            visible_devices()
        ))
    })?;
    if ordinal >= usize::try_from(count).unwrap_or(0) {
        return Err(fail(format!(
            "there is no GPU {ordinal}: the driver shows {count} (CUDA_VISIBLE_DEVICES={})",
            visible_devices()
        )));
    }
    Device::new_cuda(ordinal).map_err(|e| fail(format!("cannot open it: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(name: &str, _ordinal: usize) -> Result<Device> {
    Err(TrainError::config(
        "train.device",
        format!("{name:?}: this ferroflow was built without CUDA; build the GPU binary with scripts/build-cuda.sh"),
    ))
}
