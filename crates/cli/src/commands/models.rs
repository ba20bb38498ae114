//! `ferroflow models [NAME|FILE.toml]`: the zoo, or one model's layers.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use ferroflow_nn::{ModelSpec, VarStore, ZOO, zoo_model};

/// Arguments of `ferroflow models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// A zoo model name or a TOML model declaration: print its layers,
    /// output shapes and parameter counts.
    pub model: Option<String>,
    /// Output classes for classifiers.
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
}

/// Resolves a zoo name or a TOML file to a declaration.
pub fn resolve(model: &str, classes: usize) -> Result<ModelSpec> {
    if let Some(spec) = zoo_model(model, classes) {
        return Ok(spec);
    }
    let path = Path::new(model);
    if path.extension().is_some_and(|e| e == "toml") || path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("{model}: cannot read the model file"))?;
        return ModelSpec::from_toml(&text).with_context(|| format!("{model}: invalid model declaration"));
    }
    let names: Vec<&str> = ZOO.iter().map(|m| m.name).collect();
    anyhow::bail!("unknown model {model:?}: expected a zoo model ({}) or a .toml declaration", names.join(", "))
}

/// Runs the command.
pub fn run(args: &ModelsArgs) -> Result<()> {
    match &args.model {
        None => {
            println!("{:<16} {:>12} {:>12}  description", "model", "input (HWC)", "parameters");
            for m in ZOO {
                let spec = (m.spec)(args.classes);
                let store = VarStore::new(Device::Cpu, 0);
                spec.build(&store, 0)?;
                let [h, w, c] = spec.input;
                println!(
                    "{:<16} {:>12} {:>12}  {}",
                    m.name,
                    format!("{h}x{w}x{c}"),
                    store.trainable_parameter_count(),
                    m.description
                );
            }
        }
        Some(model) => {
            let spec = resolve(model, args.classes)?;
            let store = VarStore::new(Device::Cpu, 0);
            let built = spec.build(&store, 0)?;
            let [h, w, c] = spec.input;
            println!("model {:?}, input {h}x{w}x{c} (HWC)", spec.name);
            println!("{:<28} {:>18} {:>12}", "layer", "output (CHW)", "parameters");
            for l in built.summary() {
                println!("{:<28} {:>18} {:>12}", l.name, format!("{:?}", l.output_shape), l.parameters);
            }
            println!("trainable parameters: {}", store.trainable_parameter_count());
            let other: usize =
                store.global_variables().iter().filter(|v| !v.trainable).map(|v| v.var.elem_count()).sum();
            println!("non-trainable (moving statistics): {other}");
        }
    }
    Ok(())
}
