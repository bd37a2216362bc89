//! What a run checks before its first step: the splits, their classes against the model's,
//! the class weights and the lesion masks some options need.

use std::path::PathBuf;

use crate::error::{Result, TriscopeError};
use crate::io::data::Dataset;
use crate::io::regions::RegionSource;
use crate::model::ModelConfig;
use crate::train::config::TrainConfig;

pub(super) fn open_split(config: &TrainConfig, split: &str, limit: usize) -> Result<Dataset> {
    let mut ds = Dataset::open(&config.data.root, Some(split))?;
    if limit > 0 {
        ds.limit(limit);
    }
    if ds.is_empty() {
        return Err(TriscopeError::InvalidArgument(format!(
            "split '{split}' of {} has no samples",
            config.data.root.display()
        )));
    }
    ds.check_images()?;
    Ok(ds)
}

/// The lesion masks the background swap and the map's penalty need (None when both are off),
/// checked before the first step: the dataset has them and every training image has its own,
/// so that no image silently trains without them.
pub(super) fn lesion_masks(config: &TrainConfig, train: &Dataset) -> Result<Option<RegionSource>> {
    let t = &config.training;
    let option = if t.cam_mask_weight > 0.0 {
        "training.cam_mask_weight"
    } else if t.augmentation.background_swap > 0.0 && t.augment {
        "training.augmentation.background_swap"
    } else {
        return Ok(None);
    };
    let Some(RegionSource::Masks(dir, kind)) = RegionSource::for_dataset(train)? else {
        return Err(TriscopeError::BadConfig(format!(
            "{option} works on each image's lesion mask; {} has no lesion masks (HAM10000's {}/): set it to 0",
            train.root.display(),
            crate::io::data::MASKS_DIR
        )));
    };
    let missing: Vec<PathBuf> = train
        .samples
        .iter()
        .filter_map(|s| s.path())
        .map(|p| crate::io::data::mask_file(&dir, p))
        .filter(|m| !m.is_file())
        .collect();
    if let Some(first) = missing.first() {
        return Err(TriscopeError::BadConfig(format!(
            "{option} needs every training image's lesion mask; {} of {} are missing, the first {}",
            missing.len(),
            train.len(),
            first.display()
        )));
    }
    Ok(Some(RegionSource::Masks(dir, kind)))
}

/// Dataset class -> model output, for both splits; every dataset class must be declared.
pub(super) fn check_classes(
    train: &Dataset,
    val: &Dataset,
    model: &ModelConfig,
) -> Result<Vec<usize>> {
    if train.multi_label {
        if train.class_names.len() != model.num_classes {
            return Err(TriscopeError::BadConfig(format!(
                "{} has {} findings, the config {} classes",
                train.root.display(),
                train.class_names.len(),
                model.num_classes
            )));
        }
        return Ok((0..model.num_classes).collect());
    }
    let map = train.map_classes_to(&model.class_names)?;
    let val_map = val.map_classes_to(&model.class_names)?;
    if val.class_names != train.class_names {
        // Folder datasets list the classes found per split; names must still agree.
        return Err(TriscopeError::InvalidArgument(format!(
            "the train split has classes [{}] and the val split [{}]",
            train.class_names.join(", "),
            val.class_names.join(", ")
        )));
    }
    debug_assert_eq!(map, val_map);
    Ok(map)
}

/// `1 / count^power` per model class, normalised to mean 1 over the classes present.
pub(super) fn inverse_frequency(
    train: &Dataset,
    class_map: &[usize],
    model: &ModelConfig,
    power: f64,
) -> Vec<f32> {
    let mut counts = vec![0usize; model.num_classes];
    for (dataset_class, n) in train.class_counts().into_iter().enumerate() {
        let k = if train.multi_label {
            dataset_class
        } else {
            class_map[dataset_class]
        };
        counts[k] += n;
    }
    let inv: Vec<f64> = counts
        .iter()
        .map(|&n| if n == 0 { 0.0 } else { (n as f64).powf(-power) })
        .collect();
    let present = counts.iter().filter(|&&n| n > 0).count().max(1) as f64;
    let mean = inv.iter().sum::<f64>() / present;
    inv.iter().map(|v| (v / mean) as f32).collect()
}
