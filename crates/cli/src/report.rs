//! Text of evaluation results shared by `train` and `eval`.

use ferroflow_train::regression::RegressionReport;

/// A regression report as a table, one row per target, then the means.
pub fn regression_table(r: &RegressionReport) -> String {
    let mut out = format!("{:>12}  {:>12}  {:>12}  {:>12}  {:>8}\n", "target", "mse", "mae", "rmse", "r2");
    for t in &r.targets {
        out.push_str(&format!("{:>12}  {:>12.6}  {:>12.6}  {:>12.6}  {:>8.4}\n", t.name, t.mse, t.mae, t.rmse, t.r2));
    }
    out.push_str(&format!("{:>12}  {:>12.6}  {:>12.6}  {:>12.6}  {:>8.4}", "mean", r.mse, r.mae, r.rmse, r.r2));
    out
}
