//! Ground-truth regions for explanation localisation, brought to the model's input geometry
//! exactly as the image is (same resize and centre crop):
//!
//! - HAM10000: the binary lesion masks in `masks/<image_id>.png` (white = lesion);
//! - shenzhen-montgomery-cxr (an `image,label` folder whose labels record `lung_fraction`):
//!   the lung masks in `masks/<image>.png` (white = lung), as the region "lungs";
//! - NIH ChestX-ray14: the expert boxes of `BBox_List_2017.csv`, given in the original
//!   1024x1024 coordinates and scaled to each image's actual size (divided by 4 for the
//!   256-pixel copies), one region per finding (the union of its boxes).
//!
//! Also the lesion-size concepts for TCAV, from the HAM10000 mask statistics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage, Luma};
use serde::Serialize;

use crate::error::{Result, TriscopeError};
use crate::explain::quality::{RegionEnergy, region_energy};
use crate::io::data::{Dataset, DatasetKind, MaskKind, mask_kind, read_csv};
use crate::io::imaging::{ResizeMode, decode, prepare};
use crate::util::rng::SplitMix64;

/// Side of the original ChestX-ray14 images the box coordinates refer to.
pub const NIH_ORIGINAL_SIDE: f64 = 1024.0;

/// A region at model resolution.
#[derive(Debug, Clone)]
pub struct Region {
    /// What the region shows: "lesion" for a HAM10000 mask, the finding for NIH boxes.
    pub finding: String,
    /// `[resolution * resolution]`, row-major.
    pub mask: Vec<bool>,
}

impl Region {
    pub fn area_fraction(&self) -> f64 {
        self.mask.iter().filter(|m| **m).count() as f64 / self.mask.len().max(1) as f64
    }
}

/// A box in original-image pixels: x, y, width, height.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BoundingBox {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

/// Where a dataset's ground-truth regions come from.
#[derive(Debug, Clone)]
pub enum RegionSource {
    /// `masks/<stem>.png` beside `images/`.
    Masks(PathBuf, MaskKind),
    /// Boxes per image file name, per finding.
    Boxes(BTreeMap<String, Vec<(String, BoundingBox)>>),
}

/// The mask folder beside an image file and what its masks outline: `masks/` in the image's
/// folder or the one above (a dataset's `images/` beside `masks/`) holding `masks/STEM.png`.
pub fn masks_beside(image: &Path) -> Option<(PathBuf, MaskKind)> {
    image_folders(image)
        .map(|d| d.join(crate::io::data::MASKS_DIR))
        .find(|m| crate::io::data::mask_file(m, image).is_file())
        .map(|m| {
            let root = m.parent().map(Path::to_path_buf).unwrap_or_default();
            let kind = mask_kind(&root);
            (m, kind)
        })
}

/// Where a file's annotations may sit: its folder and the one above it (a dataset's
/// `images/` beside its `labels.csv`, `masks/` and box list).
pub fn image_folders(image: &Path) -> impl Iterator<Item = &Path> {
    let dir = image.parent();
    dir.into_iter().chain(dir.and_then(Path::parent))
}

/// The mask region of an image file found beside it ([`masks_beside`]), at `resolution`
/// with `mode` as the image is prepared; `None` when it has none.
pub fn region_beside(image: &Path, resolution: usize, mode: ResizeMode) -> Result<Option<Region>> {
    match masks_beside(image) {
        Some((dir, kind)) => mask_region(dir, kind, image, resolution, mode),
        None => Ok(None),
    }
}

/// The region of `image`'s mask in the mask folder `dir`.
fn mask_region(
    dir: PathBuf,
    kind: MaskKind,
    image: &Path,
    resolution: usize,
    mode: ResizeMode,
) -> Result<Option<Region>> {
    Ok(RegionSource::Masks(dir, kind)
        .regions(image, resolution, mode)?
        .into_iter()
        .next())
}

/// How much of `map` (an image's explanation, `[width * width]` at the model's input)
/// falls inside the mask beside the image ([`masks_beside`]): the region's name ("lungs",
/// "lesion") and its [`RegionEnergy`]; `None` when the image has no mask. A mask that cannot be
/// used (unreadable, empty) is an error naming its file.
pub fn energy_beside(
    image: &Path,
    map: &[f32],
    width: usize,
    mode: ResizeMode,
) -> Result<Option<(String, RegionEnergy)>> {
    let Some((dir, kind)) = masks_beside(image) else {
        return Ok(None);
    };
    let file = crate::io::data::mask_file(&dir, image);
    let Some(region) = mask_region(dir, kind, image, width, mode)? else {
        return Ok(None);
    };
    let energy = region_energy(map, &region.mask, width)
        .map_err(|e| TriscopeError::InvalidArgument(format!("{}: {e}", file.display())))?;
    Ok(Some((region.finding, energy)))
}

impl RegionSource {
    /// The regions of `dataset`, or `None` when it has none (MedMNIST, plain folders, or a
    /// HAM10000 / NIH folder without masks / box list).
    pub fn for_dataset(dataset: &Dataset) -> Result<Option<Self>> {
        match dataset.kind {
            DatasetKind::Ham10000 | DatasetKind::LabelsCsv => {
                let dir = dataset.root.join(crate::io::data::MASKS_DIR);
                let kind = mask_kind(&dataset.root);
                Ok(dir.is_dir().then_some(Self::Masks(dir, kind)))
            }
            DatasetKind::NihCxr14 => {
                let file = dataset.root.join("BBox_List_2017.csv");
                if file.is_file() {
                    Ok(Some(Self::Boxes(read_nih_boxes(&file)?)))
                } else {
                    Ok(None)
                }
            }
            // Class folders: `masks/` beside them, or beside the split folders.
            DatasetKind::ImageFolder => Ok([
                Some(dataset.root.as_path()),
                (dataset.split != "all")
                    .then(|| dataset.root.parent())
                    .flatten(),
            ]
            .into_iter()
            .flatten()
            .map(|d| d.join(crate::io::data::MASKS_DIR))
            .find(|d| d.is_dir())
            .map(|dir| Self::Masks(dir, MaskKind::Lesion))),
            _ => Ok(None),
        }
    }

    /// The regions of one image (`image` is its file), at `resolution` with `mode`; empty when
    /// it has none.
    pub fn regions(
        &self,
        image: &Path,
        resolution: usize,
        mode: ResizeMode,
    ) -> Result<Vec<Region>> {
        let name = image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match self {
            Self::Masks(dir, kind) => {
                let path = crate::io::data::mask_file(dir, image);
                if !path.is_file() {
                    return Ok(Vec::new());
                }
                let mask = decode(&path)?;
                Ok(vec![Region {
                    finding: kind.finding().into(),
                    mask: to_model_mask(mask, &path, resolution, mode)?,
                }])
            }
            Self::Boxes(map) => {
                let Some(boxes) = map.get(&name) else {
                    return Ok(Vec::new());
                };
                let (w, h) =
                    image::image_dimensions(image).map_err(|e| TriscopeError::BadImage {
                        path: image.to_path_buf(),
                        reason: e.to_string(),
                    })?;
                let mut findings: BTreeMap<&str, Vec<BoundingBox>> = BTreeMap::new();
                for (f, b) in boxes {
                    findings.entry(f.as_str()).or_default().push(*b);
                }
                findings
                    .into_iter()
                    .map(|(finding, boxes)| {
                        let canvas = box_canvas(&boxes, w, h);
                        Ok(Region {
                            finding: finding.to_string(),
                            mask: to_model_mask(
                                DynamicImage::ImageLuma8(canvas),
                                image,
                                resolution,
                                mode,
                            )?,
                        })
                    })
                    .collect()
            }
        }
    }
}

/// Draw boxes (original 1024-pixel coordinates) on a `w x h` canvas: 255 inside.
pub fn box_canvas(boxes: &[BoundingBox], w: u32, h: u32) -> GrayImage {
    let (sx, sy) = (w as f64 / NIH_ORIGINAL_SIDE, h as f64 / NIH_ORIGINAL_SIDE);
    let mut canvas = GrayImage::new(w, h);
    for b in boxes {
        let x0 = (b.x * sx).floor().max(0.0) as u32;
        let y0 = (b.y * sy).floor().max(0.0) as u32;
        let x1 = (((b.x + b.width) * sx).ceil() as u32).min(w);
        let y1 = (((b.y + b.height) * sy).ceil() as u32).min(h);
        for y in y0..y1 {
            for x in x0..x1 {
                canvas.put_pixel(x, y, Luma([255]));
            }
        }
    }
    canvas
}

/// Same geometry as the image, then a 0.5 threshold on the antialiased mask.
fn to_model_mask(
    mask: DynamicImage,
    path: &Path,
    resolution: usize,
    mode: ResizeMode,
) -> Result<Vec<bool>> {
    let p = prepare(mask, 1, resolution, mode).map_err(|reason| TriscopeError::BadImage {
        path: path.to_path_buf(),
        reason,
    })?;
    Ok(p.data.iter().map(|&v| v >= 0.5).collect())
}

/// `BBox_List_2017.csv`: `Image Index, Finding Label, x, y, w, h` per row.
pub fn read_nih_boxes(path: &Path) -> Result<BTreeMap<String, Vec<(String, BoundingBox)>>> {
    let table = read_csv(path)?;
    let bad = |line: usize, what: &str| {
        TriscopeError::InvalidArgument(format!("{} line {line}: {what}", path.display()))
    };
    let image = table
        .column("Image Index")
        .ok_or_else(|| bad(1, "no 'Image Index' column"))?;
    let finding = table
        .column("Finding Label")
        .ok_or_else(|| bad(1, "no 'Finding Label' column"))?;
    // The four numbers follow the "Bbox [x,y,w,h]" column (the header splits it in four).
    let first = table
        .header
        .iter()
        .position(|h| h.starts_with("Bbox"))
        .ok_or_else(|| bad(1, "no 'Bbox [x,y,w,h]' column"))?;
    let mut out: BTreeMap<String, Vec<(String, BoundingBox)>> = BTreeMap::new();
    for (i, row) in table.rows.iter().enumerate() {
        let line = i + 2;
        let field = |c: usize| -> Result<&str> {
            row.get(c)
                .map(|s| s.as_str())
                .ok_or_else(|| bad(line, "too few fields"))
        };
        let num = |c: usize| -> Result<f64> {
            let s = field(c)?;
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(line, &format!("'{s}' is not a number")))
        };
        let b = BoundingBox {
            x: num(first)?,
            y: num(first + 1)?,
            width: num(first + 2)?,
            height: num(first + 3)?,
        };
        if b.width <= 0.0 || b.height <= 0.0 {
            return Err(bad(line, "a box with no area"));
        }
        out.entry(field(image)?.to_string())
            .or_default()
            .push((canonical_finding(field(finding)?), b));
    }
    Ok(out)
}

/// The box list says "Infiltrate" where the labels say "Infiltration".
pub fn canonical_finding(name: &str) -> String {
    match name.trim() {
        "Infiltrate" => "Infiltration".into(),
        other => other.to_string(),
    }
}

/// Image sets for lesion-size TCAV concepts, drawn from a HAM10000 split by mask area.
#[derive(Debug, Clone, Serialize)]
pub struct LesionSizeConcepts {
    /// Lesion covers at least `large_fraction` of the image.
    pub large: Vec<PathBuf>,
    /// Lesion covers at most `small_fraction`.
    pub small: Vec<PathBuf>,
    /// Random images of the split not in either concept, `runs + 1` sets.
    pub random_sets: Vec<Vec<PathBuf>>,
    pub large_fraction: f64,
    pub small_fraction: f64,
    /// Images whose masks were read.
    pub scanned: usize,
}

/// How lesion-size concepts are drawn.
#[derive(Debug, Clone)]
pub struct LesionSizeSpec {
    pub split: String,
    pub per_concept: usize,
    pub random_sets: usize,
    /// Masks read at most (seeded order).
    pub scan: usize,
    pub large_fraction: f64,
    pub small_fraction: f64,
    pub seed: u64,
}

/// Scan up to `spec.scan` images of the HAM10000 split at `root` (seeded order) and take
/// `per_concept` images per concept and per random set.
pub fn lesion_size_concepts(root: &Path, spec: &LesionSizeSpec) -> Result<LesionSizeConcepts> {
    let (split, per_concept, random_sets, scan, seed) = (
        spec.split.as_str(),
        spec.per_concept,
        spec.random_sets,
        spec.scan,
        spec.seed,
    );
    let (large_fraction, small_fraction) = (spec.large_fraction, spec.small_fraction);
    let dataset = Dataset::open(root, Some(split))?;
    if dataset.kind != DatasetKind::Ham10000 {
        return Err(TriscopeError::InvalidArgument(format!(
            "{} is not a HAM10000 folder: lesion-size concepts need its masks",
            root.display()
        )));
    }
    let mut paths: Vec<PathBuf> = dataset
        .samples
        .iter()
        .filter_map(|s| s.path().map(Path::to_path_buf))
        .collect();
    let mut rng = SplitMix64::new(seed);
    for i in (1..paths.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        paths.swap(i, j);
    }
    let masks = root.join(crate::io::data::MASKS_DIR);
    let (mut large, mut small, mut rest) = (Vec::new(), Vec::new(), Vec::new());
    let mut scanned = 0;
    for p in paths.iter().take(scan) {
        let mask_path = crate::io::data::mask_file(&masks, p);
        let mask = decode(&mask_path)?.to_luma8();
        scanned += 1;
        let on = mask.pixels().filter(|p| p.0[0] >= 128).count();
        let fraction = on as f64 / (mask.width() as f64 * mask.height() as f64).max(1.0);
        if fraction >= large_fraction && large.len() < per_concept {
            large.push(p.clone());
        } else if fraction <= small_fraction && small.len() < per_concept {
            small.push(p.clone());
        } else {
            rest.push(p.clone());
        }
    }
    let need = per_concept * random_sets;
    if large.len() < per_concept.min(2) || small.len() < per_concept.min(2) || rest.len() < need {
        return Err(TriscopeError::InvalidArgument(format!(
            "{} {split}: scanning {scanned} masks found {} large, {} small lesions and {} others; \
             need {per_concept} per concept and {need} others (scan more or ask for fewer)",
            root.display(),
            large.len(),
            small.len(),
            rest.len()
        )));
    }
    let random_sets = rest
        .chunks(per_concept)
        .take(random_sets)
        .map(|c| c.to_vec())
        .collect();
    Ok(LesionSizeConcepts {
        large,
        small,
        random_sets,
        large_fraction,
        small_fraction,
        scanned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_scale_to_the_image() {
        let b = BoundingBox {
            x: 512.0,
            y: 256.0,
            width: 256.0,
            height: 128.0,
        };
        let c = box_canvas(&[b], 256, 256);
        let on: Vec<(u32, u32)> = c
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0[0] == 255)
            .map(|(x, y, _)| (x, y))
            .collect();
        assert_eq!(on.len(), 64 * 32);
        assert_eq!(on.first(), Some(&(128, 64)));
        assert_eq!(on.last(), Some(&(191, 95)));
    }

    #[test]
    fn finding_names_match_the_labels() {
        assert_eq!(canonical_finding("Infiltrate"), "Infiltration");
        assert_eq!(canonical_finding(" Mass"), "Mass");
    }
}
