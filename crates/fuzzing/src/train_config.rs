//! The training config: arbitrary text through `TrainConfig::resolve` as a
//! TOML file and, line by line, as `--set key=value` overrides; a config that
//! resolves writes TOML that resolves to the same config.

use ferroflow_train::TrainConfig;

/// The body of the `train_config` target.
pub fn train_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match TrainConfig::resolve(text, &[]) {
        Ok(config) => round_trip(&config),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let overrides: Vec<String> = text.lines().take(16).map(str::to_string).collect();
    match TrainConfig::resolve("", &overrides) {
        Ok(config) => round_trip(&config),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn round_trip(config: &TrainConfig) {
    let toml = config.to_toml();
    let again =
        TrainConfig::resolve(&toml, &[]).unwrap_or_else(|e| panic!("its own TOML does not resolve: {e}\n{toml}"));
    // Compared as TOML: a NaN setting is never equal to itself.
    assert_eq!(again.to_toml(), toml, "the TOML round trip changed the config");
}
