//! Classification metrics: accuracy, top-k and the confusion matrix,
//! accumulated over batches.

use serde::Serialize;

/// Running metrics over an evaluation pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Examples seen.
    pub count: usize,
    /// Sum of per-example losses.
    pub loss_sum: f64,
    /// Examples whose top prediction is the label.
    pub correct: usize,
    /// Examples whose label is among the top 5 predictions.
    pub correct_top5: usize,
    /// `confusion[label][prediction]`.
    pub confusion: Vec<Vec<usize>>,
}

impl Metrics {
    /// Empty metrics over `classes` classes.
    pub fn new(classes: usize) -> Self {
        Metrics { count: 0, loss_sum: 0.0, correct: 0, correct_top5: 0, confusion: vec![vec![0; classes]; classes] }
    }

    /// Adds a batch: `logits` row-major `[n, classes]`, `labels` `[n]`, and
    /// the per-example losses `[n]`.
    ///
    /// ```
    /// let mut m = ferroflow_train::Metrics::new(3);
    /// m.add(&[0.1, 0.7, 0.2, 0.5, 0.3, 0.2], &[1, 2], &[0.3, 1.6]);
    /// assert_eq!((m.correct, m.correct_top5), (1, 2));
    /// assert_eq!(m.accuracy(), 0.5);
    /// assert_eq!(m.confusion[2][0], 1);
    /// ```
    pub fn add(&mut self, logits: &[f32], labels: &[i64], losses: &[f32]) {
        let classes = self.confusion.len();
        for (i, &label) in labels.iter().enumerate() {
            let row = &logits[i * classes..(i + 1) * classes];
            let label = label as usize;
            // Ties go to the lower index, as tf.argmax / tf.nn.in_top_k.
            let pred = row.iter().enumerate().fold(0, |best, (j, &v)| if v > row[best] { j } else { best });
            if label < classes {
                self.confusion[label][pred] += 1;
                let above = row.iter().filter(|&&v| v > row[label]).count();
                self.correct_top5 += usize::from(above < 5);
            }
            self.correct += usize::from(pred == label);
        }
        self.count += labels.len();
        self.loss_sum += losses.iter().map(|&l| f64::from(l)).sum::<f64>();
    }

    /// Fraction correct.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.count.max(1) as f64
    }

    /// Fraction with the label in the top 5.
    pub fn top5(&self) -> f64 {
        self.correct_top5 as f64 / self.count.max(1) as f64
    }

    /// Mean loss.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.count.max(1) as f64
    }

    /// The confusion matrix as text, rows = labels, columns = predictions.
    pub fn confusion_text(&self, classes: &[String]) -> String {
        let width = classes.iter().map(|c| c.len()).max().unwrap_or(1).max(5);
        let mut out = format!("{:>width$} |", "label");
        for c in classes {
            out.push_str(&format!(" {c:>width$}"));
        }
        out.push('\n');
        for (c, row) in classes.iter().zip(&self.confusion) {
            out.push_str(&format!("{c:>width$} |"));
            for n in row {
                out.push_str(&format!(" {n:>width$}"));
            }
            out.push('\n');
        }
        out
    }
}
