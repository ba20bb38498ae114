//! The input pipeline on real data: resume exactness, determinism across
//! worker counts, epoch semantics, and eval passes.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferroflow_data::{
    Augment, Batch, Crop, Cursor, Dataset, Label, Mode, Pipeline, PipelineConfig, PrepareOptions, Preprocess, Source,
    discover, prepare,
};

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(rel)
}

fn mnist_dataset(dir: &Path) -> Dataset {
    let options = PrepareOptions { shards: Some(3), ..Default::default() };
    prepare(&testdata("data/mnist5k"), dir, &options, &|_, _| {}).unwrap();
    Dataset::open(dir).unwrap()
}

fn augmenting(size: usize, channels: usize) -> Preprocess {
    Preprocess {
        image_size: [size, size],
        channels,
        train: Augment {
            crop: Crop::Random { padding: 2 },
            flip_left_right: true,
            brightness: 20.0,
            contrast: 0.2,
            ..Default::default()
        },
        mean: Some([33.4, 33.4, 33.4]),
        std: Some([78.6, 78.6, 78.6]),
        ..Default::default()
    }
}

fn take(p: Pipeline, n: usize) -> Vec<Batch> {
    p.take(n).map(|b| b.unwrap()).collect()
}

#[test]
fn resume_from_a_cursor_yields_the_same_batches() {
    let dir = tempfile::tempdir().unwrap();
    let ds = mnist_dataset(dir.path());
    let source = Source::Records { files: ds.files("train").unwrap() };
    // 4000 examples, batch 384: the 11th batch crosses into epoch 1.
    let config = PipelineConfig { batch_size: 384, shuffle_buffer: 1000, seed: 7, ..Default::default() };
    let pre = augmenting(28, 1);
    let full =
        take(Pipeline::new(source.clone(), Mode::Train, config.clone(), pre.clone(), Cursor::default()).unwrap(), 14);
    assert_eq!(full[9].cursor, Cursor { epoch: 0, offset: 3840 });
    assert_eq!(full[10].cursor, Cursor { epoch: 1, offset: 224 });
    for stop in [1, 5, 10] {
        let cursor = full[stop - 1].cursor;
        let resumed =
            take(Pipeline::new(source.clone(), Mode::Train, config.clone(), pre.clone(), cursor).unwrap(), 14 - stop);
        for (i, (a, b)) in full[stop..].iter().zip(&resumed).enumerate() {
            assert_eq!(a.labels, b.labels, "stopped after {stop}, batch {}", stop + i);
            assert!(a.images == b.images, "stopped after {stop}, batch {}: pixels differ", stop + i);
            assert_eq!(a.cursor, b.cursor);
        }
    }
}

#[test]
fn epochs_are_permutations_and_differ() {
    let dir = tempfile::tempdir().unwrap();
    let ds = mnist_dataset(dir.path());
    let source = Source::Records { files: ds.files("validation").unwrap() };
    // 1000 examples, batch 100, no augmentation: identify examples by their pixels.
    let config =
        PipelineConfig { batch_size: 100, shuffle_buffer: 300, seed: 1, epochs: Some(2), ..Default::default() };
    let pre = Preprocess { image_size: [28, 28], channels: 1, ..Default::default() };
    let batches = take(Pipeline::new(source, Mode::Train, config, pre, Cursor::default()).unwrap(), 100);
    assert_eq!(batches.len(), 20, "two epochs of 10 batches, then the stream ends");
    let key = |b: &Batch, i: usize| b.images[i * 784..(i + 1) * 784].iter().map(|&v| v as u8).collect::<Vec<u8>>();
    let epoch = |e: usize| -> Vec<Vec<u8>> {
        batches[e * 10..(e + 1) * 10].iter().flat_map(|b| (0..b.size).map(move |i| key(b, i))).collect()
    };
    let (e0, e1) = (epoch(0), epoch(1));
    assert_ne!(e0, e1, "each epoch is reshuffled");
    let (mut s0, mut s1) = (e0.clone(), e1.clone());
    s0.sort();
    s1.sort();
    assert_eq!(s0, s1, "each epoch holds the same examples");
    // Per-class counts match dataset.json.
    let mut counts = [0usize; 10];
    for b in &batches[..10] {
        for &l in &b.labels {
            counts[l as usize] += 1;
        }
    }
    for (c, n) in counts.iter().enumerate() {
        assert_eq!(*n, ds.meta.splits["validation"].per_class[&c.to_string()]);
    }
}

#[test]
fn worker_count_does_not_change_batches() {
    let found = discover(&testdata("data/photos-mini")).unwrap();
    let entries: Vec<(PathBuf, Label)> =
        found.images.iter().map(|e| (e.path.clone(), Label::Class(e.label.unwrap() as i64))).collect();
    let pre = Preprocess {
        image_size: [48, 48],
        channels: 3,
        train: Augment {
            crop: Crop::RandomResized { scale: [0.3, 1.0], ratio: [0.75, 1.333] },
            flip_left_right: true,
            saturation: 0.3,
            hue: 0.05,
            ..Default::default()
        },
        ..Default::default()
    };
    let run = |workers| {
        let config = PipelineConfig { batch_size: 16, shuffle_buffer: 60, num_workers: workers, ..Default::default() };
        // 60 images, batch 16: batch 4 crosses the epoch boundary.
        take(
            Pipeline::new(
                Source::Files { entries: std::sync::Arc::new(entries.clone()) },
                Mode::Train,
                config,
                pre.clone(),
                Cursor::default(),
            )
            .unwrap(),
            5,
        )
    };
    let (one, two) = (run(1), run(2));
    for (a, b) in one.iter().zip(&two) {
        assert!(a.images == b.images && a.labels == b.labels);
    }
    assert_eq!(one[3].cursor, Cursor { epoch: 1, offset: 4 });
    // In-memory source gives the same as reading files.
    let memory: Vec<(Vec<u8>, Label)> = entries.iter().map(|(p, l)| (std::fs::read(p).unwrap(), l.clone())).collect();
    let config = PipelineConfig { batch_size: 16, shuffle_buffer: 60, ..Default::default() };
    let mem = take(
        Pipeline::new(Source::Memory { entries: Arc::new(memory) }, Mode::Train, config, pre, Cursor::default())
            .unwrap(),
        5,
    );
    assert!(mem.iter().zip(&one).all(|(a, b)| a.images == b.images));
}

#[test]
fn eval_is_one_ordered_pass_keeping_the_last_partial_batch() {
    let dir = tempfile::tempdir().unwrap();
    let ds = mnist_dataset(dir.path());
    let source = Source::Records { files: ds.files("validation").unwrap() };
    let config = PipelineConfig { batch_size: 300, ..Default::default() };
    let pre = Preprocess { image_size: [28, 28], channels: 1, ..Default::default() };
    let batches =
        take(Pipeline::new(source.clone(), Mode::Eval, config.clone(), pre.clone(), Cursor::default()).unwrap(), 100);
    assert_eq!(batches.iter().map(|b| b.size).collect::<Vec<_>>(), [300, 300, 300, 100]);
    let again = take(Pipeline::new(source, Mode::Eval, config, pre, Cursor::default()).unwrap(), 100);
    assert!(batches.iter().zip(&again).all(|(a, b)| a.images == b.images));
    // Eval images are the decoded pixels, unaugmented.
    assert!(batches[0].images.iter().all(|&v| (0.0..=255.0).contains(&v) && v.fract() == 0.0));
}

/// A shard that goes bad while the pipeline runs (truncated after it was
/// counted): the batches read before the damage all arrive, in order, then one
/// error naming the file, then nothing.
#[test]
fn a_read_error_arrives_after_the_batches_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let ds = mnist_dataset(dir.path());
    let files = ds.files("train").unwrap();
    assert_eq!(files.len(), 3);
    let source = Source::Records { files: files.clone() };
    let config = PipelineConfig { batch_size: 256, prefetch: 2, ..Default::default() };
    let pre = Preprocess { image_size: [28, 28], channels: 1, ..Default::default() };
    let pipeline = Pipeline::new(source, Mode::Eval, config, pre, Cursor::default()).unwrap();
    // The producer stops after about 5 batches (prefetch 2, 2 decoding, 1 read
    // ahead) until this test consumes, well before the last shard (records
    // 2,667 on): cut that shard in half now.
    let last = &files[2];
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(last).unwrap().set_len(len / 2).unwrap();
    let results: Vec<_> = pipeline.collect();
    let ok = results.iter().take_while(|r| r.is_ok()).count();
    assert!(ok >= 10, "only {ok} batches before the error");
    assert_eq!(ok + 1, results.len(), "exactly one error, last");
    let err = results.last().unwrap().as_ref().err().unwrap().to_string();
    assert!(err.contains(&last.file_name().unwrap().to_string_lossy().to_string()), "{err}");
    // Every batch before the error is whole and in order.
    for (i, b) in results[..ok].iter().enumerate() {
        let b = b.as_ref().unwrap();
        assert_eq!(b.size, 256, "batch {i}");
        assert_eq!(b.cursor.offset, 256 * (i as u64 + 1), "batch {i}");
    }
}

#[test]
fn a_target_image_gets_its_inputs_random_draws() {
    // Each photo as its own target: with random crops, flips and colour changes, the
    // target must come out exactly as its input (the same draws, applied to both).
    let found = discover(&testdata("data/photos-mini")).unwrap();
    let entries: Vec<(PathBuf, Label)> =
        found.images.iter().map(|e| (e.path.clone(), Label::TargetImage(e.path.clone()))).collect();
    let pre = Preprocess {
        image_size: [40, 40],
        channels: 3,
        train: Augment {
            crop: Crop::RandomResized { scale: [0.3, 1.0], ratio: [0.75, 1.333] },
            flip_left_right: true,
            brightness: 0.2,
            ..Default::default()
        },
        mean: Some([120.0, 110.0, 100.0]),
        ..Default::default()
    };
    for mode in [Mode::Train, Mode::Eval] {
        let config = PipelineConfig { batch_size: 16, shuffle_buffer: 60, ..Default::default() };
        let source = Source::Files { entries: Arc::new(entries.clone()) };
        for batch in take(Pipeline::new(source, mode, config, pre.clone(), Cursor::default()).unwrap(), 3) {
            assert!(batch.labels.is_empty());
            assert_eq!(batch.targets.len(), batch.images.len());
            assert!(batch.targets == batch.images, "{mode:?}: a target differs from its input");
        }
    }
    // A missing target, or one of another size (crops are drawn in pixels), skips its
    // example with its name; the rest go on.
    let mut broken = entries.clone();
    broken[0].1 = Label::TargetImage(testdata("data/photos-mini/none.png"));
    broken[1].1 = Label::TargetImage(testdata("data/mnist5k/val/3/01502.png"));
    let config = PipelineConfig { batch_size: 60, ..Default::default() };
    let mut p =
        Pipeline::new(Source::Files { entries: Arc::new(broken) }, Mode::Eval, config, pre, Cursor::default()).unwrap();
    let batch = p.next().unwrap().unwrap();
    assert_eq!(batch.size, 58);
    let skipped = p.take_skipped_files();
    assert!(skipped.iter().any(|s| s.contains("none.png: cannot read")), "{skipped:?}");
    assert!(skipped.iter().any(|s| s.contains("01502.png: decoded (28, 28)")), "{skipped:?}");
}
