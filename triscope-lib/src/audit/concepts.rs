//! The audit's TCAV part: concept and random image sets (folders, or HAM10000's lesion-size
//! concepts from its masks), then CAVs and scores per layer.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::TcavOptions;
use crate::error::{Result, TriscopeError, check_cancel};
use crate::explain::concept_bank::{TCAV_ALPHA, TCAV_IMAGES_PER_CLASS, class_order};
use crate::explain::tcav::{
    TcavResult, adjust_for_multiple_tests, layer_activations, layer_gradients, tcav_test,
};
use crate::inference::Classifier;
use crate::io::data::{Dataset, DatasetKind, Label, list_images};
use crate::io::imaging::PixelImage;
use crate::io::regions::{LesionSizeSpec, lesion_size_concepts};

/// A TCAV concept: its name and the folder of its example images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConceptFolder {
    pub name: String,
    pub folder: PathBuf,
}

/// Images per CAV batch through the model.
const TCAV_BATCH: usize = 16;

/// Concepts, `runs + 1` random sets, and where they came from (for the report).
pub(super) struct TcavSets {
    concepts: Vec<(String, Vec<PathBuf>)>,
    random_sets: Vec<Vec<PathBuf>>,
    pub origin: String,
    /// Seed of the CAVs' logistic regressions.
    seed: u64,
}

/// The images of each concept folder, listed (each must hold at least 2); checked before any
/// compute.
pub(super) fn list_concepts(options: &TcavOptions) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut out = Vec::new();
    for c in &options.concepts {
        let files = list_images(&c.folder)?;
        if files.len() < 2 {
            return Err(TriscopeError::InvalidArgument(format!(
                "TCAV concept {}: {} holds {} images, need at least 2",
                c.name,
                c.folder.display(),
                files.len()
            )));
        }
        out.push((c.name.clone(), files));
    }
    Ok(out)
}

/// The concept sets and `runs + 1` random sets, or `None` when there is nothing to test.
pub(super) fn concept_sets(
    options: &TcavOptions,
    concepts: Vec<(String, Vec<PathBuf>)>,
    dataset: &Dataset,
    seed: u64,
) -> Result<Option<TcavSets>> {
    let runs = options.runs;
    if let Some(random) = &options.random {
        let files = list_images(random)?;
        let per = files.len() / (runs + 1);
        if per < 2 {
            return Err(TriscopeError::InvalidArgument(format!(
                "TCAV random images {}: {} images cannot make {} sets of at least 2",
                random.display(),
                files.len(),
                runs + 1
            )));
        }
        let sets = files
            .chunks(per)
            .take(runs + 1)
            .map(|c| c.to_vec())
            .collect();
        return Ok(Some(TcavSets {
            concepts,
            random_sets: sets,
            origin: format!(
                "TCAV concepts from folders; random images from {}.",
                random.display()
            ),
            seed,
        }));
    }
    if dataset.kind != DatasetKind::Ham10000 {
        return Ok(None);
    }
    let c = lesion_size_concepts(
        &dataset.root,
        &LesionSizeSpec {
            split: "train".into(),
            per_concept: options.images,
            random_sets: runs + 1,
            scan: 4000,
            large_fraction: 0.5,
            small_fraction: 0.1,
            seed,
        },
    )?;
    let origin = format!(
        "TCAV concepts from HAM10000 train-split masks ({} scanned): large_lesion = lesion \
         covers at least {:.0}% of the image, small_lesion = at most {:.0}%; random sets drawn \
         from the other train images ({} per set, {} runs).",
        c.scanned,
        c.large_fraction * 100.0,
        c.small_fraction * 100.0,
        options.images,
        runs
    );
    Ok(Some(TcavSets {
        concepts: vec![
            ("large_lesion".into(), c.large),
            ("small_lesion".into(), c.small),
        ],
        random_sets: c.random_sets,
        origin,
        seed,
    }))
}

/// TCAV of every concept at every layer, Holm-adjusted; `progress(layers done)`.
pub(super) fn run_tcav(
    classifier: &Classifier,
    dataset: &Dataset,
    labels: Option<&[Label]>,
    sets: &TcavSets,
    options: &TcavOptions,
    progress: &mut dyn FnMut(usize),
    cancel: &AtomicBool,
) -> Result<Vec<TcavResult>> {
    let (concepts, random_sets) = (&sets.concepts, &sets.random_sets);
    let cfg = classifier.config();
    let device = classifier.device().device.clone();
    let load_all = |paths: &[PathBuf]| -> Result<Vec<PixelImage>> {
        paths
            .iter()
            .map(|p: &PathBuf| Ok(classifier.load_image(Path::new(p))?.pixels))
            .collect()
    };
    let concept_images: Vec<(String, Vec<PixelImage>)> = concepts
        .iter()
        .map(|(n, p)| Ok((n.clone(), load_all(p)?)))
        .collect::<Result<_>>()?;
    let random_images: Vec<Vec<PixelImage>> = random_sets
        .iter()
        .map(|s| load_all(s))
        .collect::<Result<_>>()?;
    let per_class = class_images(classifier, dataset, labels, cancel)?;
    let mut results = Vec::new();
    for (done, &layer) in options.layers.iter().enumerate() {
        check_cancel(cancel)?;
        let randoms: Vec<Vec<Vec<f32>>> = random_images
            .iter()
            .map(|s| layer_activations(classifier.model(), &device, s, layer, TCAV_BATCH))
            .collect::<Result<_>>()?;
        let grads: Vec<(String, Vec<Vec<f32>>)> = per_class
            .iter()
            .map(|(k, imgs)| {
                Ok((
                    cfg.class_names[*k].clone(),
                    layer_gradients(classifier.model(), &device, imgs, layer, *k, TCAV_BATCH)?,
                ))
            })
            .collect::<Result<_>>()?;
        for (name, imgs) in &concept_images {
            let acts = layer_activations(classifier.model(), &device, imgs, layer, TCAV_BATCH)?;
            results.extend(tcav_test(
                name, layer, &acts, &randoms, &grads, TCAV_ALPHA, sets.seed,
            )?);
        }
        progress(done + 1);
    }
    adjust_for_multiple_tests(&mut results, TCAV_ALPHA);
    Ok(results)
}

/// The images whose logit gradients TCAV scores: up to [`TCAV_IMAGES_PER_CLASS`] per class of
/// the audited split, by its labels (single-label) or else by the model's prediction; classes
/// without images left out, `mel` first.
pub(super) fn class_images(
    classifier: &Classifier,
    dataset: &Dataset,
    labels: Option<&[Label]>,
    cancel: &AtomicBool,
) -> Result<Vec<(usize, Vec<PixelImage>)>> {
    let cfg = classifier.config();
    let mut per_class: Vec<Vec<PixelImage>> = vec![Vec::new(); cfg.num_classes];
    for i in 0..dataset.len() {
        check_cancel(cancel)?;
        if per_class.iter().all(|c| c.len() >= TCAV_IMAGES_PER_CLASS) {
            break;
        }
        let img = dataset.load(i, cfg.in_channels, cfg.resolution, classifier.resize_mode)?;
        let class = match labels.map(|l| &l[i]) {
            Some(Label::Class(c)) => *c,
            _ => classifier.predict(&[&img])?[0].class_index,
        };
        if per_class[class].len() < TCAV_IMAGES_PER_CLASS {
            per_class[class].push(img);
        }
    }
    Ok(class_order(&cfg.class_names)
        .into_iter()
        .map(|k| (k, std::mem::take(&mut per_class[k])))
        .filter(|(_, imgs)| !imgs.is_empty())
        .collect())
}
