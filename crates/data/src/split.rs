//! The train/validation split: the folder's own `train/` + `val/` when it
//! has them, else stratified per class and seeded, then each split shuffled
//! (TF-slim's converters shuffle before sharding).

use std::collections::BTreeMap;

use ferroflow_rng::Rng;

use crate::discover::Split;

/// Splits `items`. `split_of` gives an item's pre-assigned split (for a
/// pre-split folder; `None` otherwise) and `group_of` its stratum (the class;
/// one group for regression). A fraction `val_fraction` of each group, rounded,
/// goes to validation. Returns `(train, validation)`, each shuffled.
pub fn split_items<T>(
    items: Vec<T>,
    split_of: impl Fn(&T) -> Option<Split>,
    group_of: impl Fn(&T) -> usize,
    val_fraction: f64,
    seed: u64,
) -> (Vec<T>, Vec<T>) {
    let mut train = Vec::new();
    let mut val = Vec::new();
    if items.iter().any(|i| split_of(i).is_some()) {
        for item in items {
            match split_of(&item) {
                Some(Split::Validation) => val.push(item),
                _ => train.push(item),
            }
        }
    } else {
        let mut groups: BTreeMap<usize, Vec<T>> = BTreeMap::new();
        for item in items {
            groups.entry(group_of(&item)).or_default().push(item);
        }
        for (key, mut group) in groups {
            Rng::derive(seed, &[1, key as u64]).shuffle(&mut group);
            let n_val = (group.len() as f64 * val_fraction).round() as usize;
            let rest = group.split_off(n_val);
            val.extend(group);
            train.extend(rest);
        }
    }
    Rng::derive(seed, &[2, Split::Train as u64]).shuffle(&mut train);
    Rng::derive(seed, &[2, Split::Validation as u64]).shuffle(&mut val);
    (train, val)
}
