//! Datasets: HAM10000 (labels.csv with a split column), derm7pt (its `dx` column in
//! HAM10000's codes, images in sub-folders; rows without a code are left out and counted), the
//! NIH ChestX-ray14 subset (multi-label `Finding Labels`, an optional split column), an
//! `image,label` labels.csv with
//! optional `split` and `patient_id` columns (kermany-cxr), MedMNIST `.npz` files and generic
//! class-per-folder trees.
//!
//! Opening a dataset checks everything that can be checked before compute: the labels file,
//! every listed image's existence, the split, the class names.

mod table;

pub use table::LABELS_FILE;
pub(crate) use table::{LabelsLayout, Table, read_csv};
use table::{split_csv_line, split_rows, split_rows_by_group};

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Result, TriscopeError};
use crate::io::imaging::{
    DecodeOptions, PixelImage, ResizeMode, decode_with, load_pixels, prepare,
};
use crate::model::config::{CHESTXRAY14_FINDINGS, HAM10000_CLASSES};

/// The layouts Triscope reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    Ham10000,
    /// derm7pt: `image` (a path under `images/`), `dx` and the seven-point criteria.
    Derm7pt,
    NihCxr14,
    /// `labels.csv` with `image` and `label` columns (e.g. kermany-cxr).
    LabelsCsv,
    MedMnist,
    ImageFolder,
}

/// A sample's ground truth.
#[derive(Debug, Clone, PartialEq)]
pub enum Label {
    /// Index into the dataset's class names.
    Class(usize),
    /// 0/1 per finding (multi-label).
    Findings(Vec<f32>),
}

#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Npz(usize),
}

/// One image with its label.
#[derive(Debug, Clone)]
pub struct Sample {
    /// File name or `split[index]`.
    pub id: String,
    source: Source,
    pub label: Label,
}

impl Sample {
    /// The image file, for samples that are files (not rows of a `.npz`).
    pub fn path(&self) -> Option<&Path> {
        match &self.source {
            Source::File(p) => Some(p),
            Source::Npz(_) => None,
        }
    }
}

/// Images of an in-memory MedMNIST split: `[n, h, w]` or `[n, h, w, 3]` u8.
#[derive(Debug, Clone)]
struct NpzImages {
    pixels: Vec<u8>,
    height: usize,
    width: usize,
    channels: usize,
}

/// A split of a dataset, ready to iterate.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub kind: DatasetKind,
    pub root: PathBuf,
    pub split: String,
    pub class_names: Vec<String>,
    pub multi_label: bool,
    pub samples: Vec<Sample>,
    /// What opening left out of the split and why (e.g. derm7pt rows without a HAM10000
    /// code), for the reports.
    pub notes: Vec<String>,
    npz: Option<NpzImages>,
}

impl Dataset {
    /// Open `split` of the dataset at `root` (a folder or a `.npz` file). `split = None`
    /// takes the natural evaluation split: `test` where there is one, else everything.
    pub fn open(root: &Path, split: Option<&str>) -> Result<Self> {
        if !root.exists() {
            return Err(TriscopeError::InvalidArgument(format!(
                "dataset {} does not exist",
                root.display()
            )));
        }
        if root.is_file() {
            if root.extension().is_some_and(|e| e == "npz") {
                return open_medmnist(root, split.unwrap_or("test"));
            }
            return Err(TriscopeError::InvalidArgument(format!(
                "{} is a file but not a MedMNIST .npz; give a dataset folder or a .npz",
                root.display()
            )));
        }
        let labels = root.join(LABELS_FILE);
        if labels.is_file() {
            let table = read_csv(&labels)?;
            // The natural evaluation split: `test` where the table has a split column.
            let default = match table.column("split") {
                Some(_) => "test",
                None => "all",
            };
            return match LabelsLayout::detect(&table)? {
                LabelsLayout::Derm7pt => open_derm7pt(root, &table, split.unwrap_or("test")),
                LabelsLayout::Ham10000 => open_ham(root, &table, split.unwrap_or("test")),
                LabelsLayout::NihCxr14 => open_nih(root, &table, split.unwrap_or(default)),
                LabelsLayout::LabelsCsv => open_labels_csv(root, &table, split.unwrap_or(default)),
            };
        }
        open_folder(root, split)
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Keep the first `n` samples (after a deterministic, class-interleaved order so that a
    /// small limit still sees every class).
    pub fn limit(&mut self, n: usize) {
        if n >= self.samples.len() {
            return;
        }
        let mut by_class: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
        for s in self.samples.drain(..) {
            let key = match &s.label {
                Label::Class(c) => format!("{c:04}"),
                Label::Findings(f) => f.iter().map(|v| if *v > 0.5 { '1' } else { '0' }).collect(),
            };
            by_class.entry(key).or_default().push(s);
        }
        let mut queues: Vec<std::collections::VecDeque<Sample>> =
            by_class.into_values().map(Into::into).collect();
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let mut took = false;
            for q in queues.iter_mut() {
                if out.len() == n {
                    break;
                }
                if let Some(s) = q.pop_front() {
                    out.push(s);
                    took = true;
                }
            }
            if !took {
                break;
            }
        }
        self.samples = out;
    }

    /// Number of samples per class (single-label) or per finding (multi-label).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.class_names.len()];
        for s in &self.samples {
            match &s.label {
                Label::Class(c) => counts[*c] += 1,
                Label::Findings(f) => {
                    for (i, v) in f.iter().enumerate() {
                        if *v > 0.5 {
                            counts[i] += 1;
                        }
                    }
                }
            }
        }
        counts
    }

    /// Decode every image file of the split (in parallel) and refuse it when any cannot be
    /// used, naming them (the first ten) and why: training checks this before its first step,
    /// so a truncated or corrupt file stops a run at its start, not hours in. Rows of a
    /// `.npz` were checked when the file was read.
    pub fn check_images(&self) -> Result<()> {
        use rayon::prelude::*;
        let files: Vec<&Path> = self.samples.iter().filter_map(Sample::path).collect();
        let bad: Vec<String> = files
            .par_iter()
            .filter_map(|p| decode_with(p, &DecodeOptions::default()).err())
            .map(|e| e.to_string())
            .collect();
        if bad.is_empty() {
            return Ok(());
        }
        const SHOWN: usize = 10;
        let more = match bad.len() > SHOWN {
            true => format!("\n  ... and {} more", bad.len() - SHOWN),
            false => String::new(),
        };
        Err(TriscopeError::InvalidArgument(format!(
            "{} of the {} images of {} (split '{}') cannot be used; nothing was trained:\n  {}{more}",
            bad.len(),
            files.len(),
            self.root.display(),
            self.split,
            bad[..bad.len().min(SHOWN)].join("\n  ")
        )))
    }

    /// Load sample `i` for a model with `channels` and `resolution`.
    pub fn load(
        &self,
        i: usize,
        channels: usize,
        resolution: usize,
        mode: ResizeMode,
    ) -> Result<PixelImage> {
        let sample = &self.samples[i];
        match &sample.source {
            Source::File(path) => load_pixels(path, channels, resolution, mode),
            Source::Npz(index) => {
                let npz = self
                    .npz
                    .as_ref()
                    .ok_or_else(|| TriscopeError::Compute("npz images missing".into()))?;
                let n = npz.height * npz.width * npz.channels;
                let raw = npz.pixels[index * n..(index + 1) * n].to_vec();
                let img = match npz.channels {
                    1 => image::GrayImage::from_raw(npz.width as u32, npz.height as u32, raw)
                        .map(image::DynamicImage::ImageLuma8),
                    _ => image::RgbImage::from_raw(npz.width as u32, npz.height as u32, raw)
                        .map(image::DynamicImage::ImageRgb8),
                }
                .ok_or_else(|| {
                    TriscopeError::Compute(format!("{}: bad image buffer", sample.id))
                })?;
                prepare(img, channels, resolution, mode).map_err(|reason| TriscopeError::BadImage {
                    path: self.root.join(&sample.id),
                    reason,
                })
            }
        }
    }

    /// For single-label data: the model's class index of each dataset class, matched by name
    /// (case-insensitive). A dataset class the model does not have is an error naming it.
    pub fn map_classes_to(&self, model_classes: &[String]) -> Result<Vec<usize>> {
        self.class_names
            .iter()
            .map(|name| {
                model_classes
                    .iter()
                    .position(|m| m.eq_ignore_ascii_case(name))
                    .ok_or_else(|| {
                        TriscopeError::InvalidArgument(format!(
                            "class '{name}' of {} is not one of the model's classes ({})",
                            self.root.display(),
                            model_classes.join(", ")
                        ))
                    })
            })
            .collect()
    }
}

fn check_files_exist(root: &Path, samples: &[Sample]) -> Result<()> {
    let missing: Vec<String> = samples
        .iter()
        .filter_map(|s| match &s.source {
            Source::File(p) if !p.is_file() => Some(p.display().to_string()),
            _ => None,
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(TriscopeError::InvalidArgument(format!(
        "the labels of {} name {} missing image(s), e.g. {}",
        root.display(),
        missing.len(),
        missing
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

fn open_ham(root: &Path, table: &Table, split: &str) -> Result<Dataset> {
    let dx = table.require("dx")?;
    let id = table.require("image_id")?;
    let split_col = table.require("split")?;
    let class_names: Vec<String> = HAM10000_CLASSES.iter().map(|s| s.to_string()).collect();
    let keep = split_rows(table, Some(split_col), split)?;
    let mut samples = Vec::new();
    for ((row, &line), keep) in table.rows.iter().zip(&table.lines).zip(keep) {
        if !keep {
            continue;
        }
        let name = table.file_name(row, line, id)?;
        let class = class_names
            .iter()
            .position(|c| c == &row[dx])
            .ok_or_else(|| {
                TriscopeError::InvalidArgument(format!(
                    "{}: image {} has diagnosis '{}', not one of {}",
                    table.path.display(),
                    row[id],
                    row[dx],
                    class_names.join(", ")
                ))
            })?;
        samples.push(Sample {
            id: format!("{name}.jpg"),
            source: Source::File(root.join("images").join(format!("{name}.jpg"))),
            label: Label::Class(class),
        });
    }
    check_files_exist(root, &samples)?;
    Ok(Dataset {
        kind: DatasetKind::Ham10000,
        root: root.to_path_buf(),
        split: split.to_string(),
        class_names,
        multi_label: false,
        samples,
        notes: Vec::new(),
        npz: None,
    })
}

/// derm7pt: `image` is a path under `images/` with at most one folder (`A1l/Aal002.jpg`),
/// `dx` a HAM10000 code or empty (melanosis, miscellaneous): such rows have no class a
/// HAM10000 model knows and are left out, counted in [`Dataset::notes`].
fn open_derm7pt(root: &Path, table: &Table, split: &str) -> Result<Dataset> {
    let image = table.require("image")?;
    let dx = table.require("dx")?;
    let split_col = table.require("split")?;
    let class_names: Vec<String> = HAM10000_CLASSES.iter().map(|s| s.to_string()).collect();
    let keep = split_rows(table, Some(split_col), split)?;
    let mut samples = Vec::new();
    let mut unlabelled = 0usize;
    for ((row, &line), keep) in table.rows.iter().zip(&table.lines).zip(keep) {
        if !keep {
            continue;
        }
        let relative = derm7pt_image_path(table, row, line, image)?;
        let code = row[dx].trim();
        if code.is_empty() {
            unlabelled += 1;
            continue;
        }
        let class = class_names.iter().position(|c| c == code).ok_or_else(|| {
            TriscopeError::InvalidArgument(format!(
                "{} line {line}: dx '{code}' is not one of {} (or empty)",
                table.path.display(),
                class_names.join(", ")
            ))
        })?;
        samples.push(Sample {
            id: relative.clone(),
            source: Source::File(root.join("images").join(&relative)),
            label: Label::Class(class),
        });
    }
    check_files_exist(root, &samples)?;
    let mut notes = Vec::new();
    if unlabelled > 0 {
        notes.push(format!(
            "{unlabelled} image(s) of split '{split}' left out: their dx is empty (derm7pt's \
             melanosis and miscellaneous have no HAM10000 class)"
        ));
    }
    Ok(Dataset {
        kind: DatasetKind::Derm7pt,
        root: root.to_path_buf(),
        split: split.to_string(),
        class_names,
        multi_label: false,
        samples,
        notes,
        npz: None,
    })
}

/// derm7pt's image path: plain names joined by at most one `/` (a folder of `images/`),
/// never `..` or absolute.
pub(crate) fn derm7pt_image_path(
    table: &Table,
    row: &[String],
    line: usize,
    col: usize,
) -> Result<String> {
    let name = row[col].trim();
    let parts: Vec<&str> = name.split('/').collect();
    let plain = parts.len() <= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && *p != "." && *p != ".." && !p.contains('\\'))
        && !Path::new(name).is_absolute();
    if plain {
        Ok(name.to_string())
    } else {
        Err(TriscopeError::InvalidArgument(format!(
            "{} line {line}: image '{name}' is not a file under images/ (at most one folder, no \
             '..')",
            table.path.display()
        )))
    }
}

fn open_nih(root: &Path, table: &Table, split: &str) -> Result<Dataset> {
    let file = table.require("Image Index")?;
    let findings = table.require("Finding Labels")?;
    let keep = split_rows_by_group(table, split, "Patient ID")?;
    let class_names: Vec<String> = CHESTXRAY14_FINDINGS.iter().map(|s| s.to_string()).collect();
    let mut samples = Vec::new();
    for ((row, &line), keep) in table.rows.iter().zip(&table.lines).zip(keep) {
        if !keep {
            continue;
        }
        let name = table.file_name(row, line, file)?;
        let mut vector = vec![0.0f32; class_names.len()];
        for f in row[findings].split('|').map(str::trim) {
            if f == "No Finding" || f.is_empty() {
                continue;
            }
            let i = class_names.iter().position(|c| c == f).ok_or_else(|| {
                TriscopeError::InvalidArgument(format!(
                    "{}: image {} has finding '{f}', not one of the 14 ChestX-ray14 findings",
                    table.path.display(),
                    row[file]
                ))
            })?;
            vector[i] = 1.0;
        }
        samples.push(Sample {
            id: name.to_string(),
            source: Source::File(root.join("images").join(name)),
            label: Label::Findings(vector),
        });
    }
    check_files_exist(root, &samples)?;
    Ok(Dataset {
        kind: DatasetKind::NihCxr14,
        root: root.to_path_buf(),
        split: split.to_string(),
        class_names,
        multi_label: true,
        samples,
        notes: Vec::new(),
        npz: None,
    })
}

/// `labels.csv` with `image` (a file in `images/`, written as `NAME` or `images/NAME`) and
/// `label` columns, and optionally `split` and `patient_id` (checked: no patient in two
/// splits). Class names are the distinct labels of the whole table in sorted order, so every
/// split numbers them alike.
fn open_labels_csv(root: &Path, table: &Table, split: &str) -> Result<Dataset> {
    let image = table.require("image")?;
    let label = table.require("label")?;
    let keep = split_rows_by_group(table, split, "patient_id")?;
    let class_names: Vec<String> = table
        .rows
        .iter()
        .map(|r| r[label].clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if let Some(line) = table
        .rows
        .iter()
        .zip(&table.lines)
        .find_map(|(r, &line)| r[label].trim().is_empty().then_some(line))
    {
        return Err(TriscopeError::InvalidArgument(format!(
            "{} line {line}: the label is empty",
            table.path.display()
        )));
    }
    let mut samples = Vec::new();
    for ((row, &line), keep) in table.rows.iter().zip(&table.lines).zip(keep) {
        if !keep {
            continue;
        }
        // `images/NAME` is the folder every layout keeps its images in; nothing else may be
        // named (no other folders, no '..').
        let name = match row[image].strip_prefix("images/") {
            Some(rest) => {
                let mut row = row.to_vec();
                row[image] = rest.to_string();
                table.file_name(&row, line, image)?.to_string()
            }
            None => table.file_name(row, line, image)?.to_string(),
        };
        let class = class_names
            .iter()
            .position(|c| c == &row[label])
            .unwrap_or(0);
        samples.push(Sample {
            id: name.clone(),
            source: Source::File(root.join("images").join(&name)),
            label: Label::Class(class),
        });
    }
    check_files_exist(root, &samples)?;
    Ok(Dataset {
        kind: DatasetKind::LabelsCsv,
        root: root.to_path_buf(),
        split: split.to_string(),
        class_names,
        multi_label: false,
        samples,
        notes: Vec::new(),
        npz: None,
    })
}

/// Largest `.npy` member of a `.npz` read into memory.
const MAX_NPZ_MEMBER_BYTES: u64 = 4 << 30;

fn open_medmnist(path: &Path, split: &str) -> Result<Dataset> {
    let bad =
        |reason: String| TriscopeError::InvalidArgument(format!("{}: {reason}", path.display()));
    let file = std::fs::File::open(path).map_err(|source| TriscopeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| bad(format!("not a readable .npz ({e})")))?;
    let mut read = |name: &str| -> Result<crate::io::npy::NpyArray> {
        let mut entry = zip
            .by_name(name)
            .map_err(|_| bad(format!("has no {name} (is '{split}' a split of it?)")))?;
        // Cap what a corrupt header may make us allocate, and never inflate past the
        // declared size (a lying header on a deflated member).
        let declared = entry.size();
        if declared > MAX_NPZ_MEMBER_BYTES {
            return Err(bad(format!(
                "{name} declares {declared} bytes, over the {} MiB limit",
                MAX_NPZ_MEMBER_BYTES >> 20
            )));
        }
        let mut bytes = Vec::new();
        (&mut entry)
            .take(declared + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("cannot read {name}: {e}")))?;
        if bytes.len() as u64 > declared {
            return Err(bad(format!(
                "{name} inflates to more than the {declared} bytes its zip header declares"
            )));
        }
        crate::io::npy::decode(&bytes).map_err(|e| bad(format!("{name}: {e}")))
    };
    let images = read(&format!("{split}_images.npy"))?;
    let labels = read(&format!("{split}_labels.npy"))?;
    let (n, height, width, channels) = match images.shape.as_slice() {
        [n, h, w] => (*n, *h, *w, 1),
        [n, h, w, 3] => (*n, *h, *w, 3),
        other => {
            return Err(bad(format!(
                "images have shape {other:?}; expected [n, h, w] or [n, h, w, 3]"
            )));
        }
    };
    let pixels = images.as_u8().map_err(bad)?.to_vec();
    let label_values = labels.to_i64().map_err(bad)?;
    if label_values.len() != n {
        return Err(bad(format!("{} labels for {n} images", label_values.len())));
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let max_label = label_values.iter().copied().max().unwrap_or(0).max(0) as usize;
    let class_names: Vec<String> = if stem.starts_with("dermamnist") {
        HAM10000_CLASSES.iter().map(|s| s.to_string()).collect()
    } else if stem.starts_with("pneumoniamnist") {
        vec!["normal".into(), "pneumonia".into()]
    } else {
        (0..=max_label).map(|i| format!("class_{i}")).collect()
    };
    let samples = label_values
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            if l < 0 || l as usize >= class_names.len() {
                return Err(bad(format!(
                    "label {l} of image {i} is outside 0..{}",
                    class_names.len()
                )));
            }
            Ok(Sample {
                id: format!("{split}[{i}]"),
                source: Source::Npz(i),
                label: Label::Class(l as usize),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Dataset {
        kind: DatasetKind::MedMnist,
        root: path.to_path_buf(),
        split: split.to_string(),
        class_names,
        multi_label: false,
        samples,
        notes: Vec::new(),
        npz: Some(NpzImages {
            pixels,
            height,
            width,
            channels,
        }),
    })
}

fn is_image(p: &Path) -> bool {
    crate::io::imaging::has_image_extension(p)
}

/// The folder of a dataset's masks, beside its images: HAM10000's lesions,
/// shenzhen-montgomery-cxr's lungs.
pub const MASKS_DIR: &str = "masks";

/// What a dataset's masks outline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskKind {
    /// A skin lesion (HAM10000).
    Lesion,
    /// Both lungs of a chest radiograph (shenzhen-montgomery-cxr).
    Lungs,
}

impl MaskKind {
    /// The region's name where it is drawn and measured.
    pub fn finding(self) -> &'static str {
        match self {
            Self::Lesion => "lesion",
            Self::Lungs => "lungs",
        }
    }

    /// Who drew it, for labels.
    pub fn annotator(self) -> &'static str {
        match self {
            Self::Lesion => "HAM10000",
            Self::Lungs => "lung mask",
        }
    }
}

/// What the masks of the dataset at `root` outline: lungs where its `labels.csv` records each
/// image's `lung_fraction` (shenzhen-montgomery-cxr), lesions otherwise.
pub fn mask_kind(root: &Path) -> MaskKind {
    let header = std::fs::File::open(root.join(LABELS_FILE))
        .ok()
        .and_then(|f| {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(f), &mut line).ok()?;
            Some(line)
        })
        .unwrap_or_default();
    if split_csv_line(header.trim_end())
        .iter()
        .any(|c| c == "lung_fraction")
    {
        MaskKind::Lungs
    } else {
        MaskKind::Lesion
    }
}

/// The lesion mask of `image` in the mask folder `masks_dir`: `<masks_dir>/<image stem>.png`.
pub fn mask_file(masks_dir: &Path, image: &Path) -> PathBuf {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    masks_dir.join(format!("{stem}.png"))
}

/// Image files under `dir`, recursively, sorted. A dataset's lesion-mask folder
/// ([`MASKS_DIR`], beside the images it outlines) is ground truth, not images to classify,
/// and is skipped.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let io = |source| TriscopeError::Io {
            path: d.clone(),
            source,
        };
        for entry in std::fs::read_dir(&d).map_err(io)? {
            let p = entry.map_err(io)?.path();
            if p.is_dir() {
                if p.file_name() != Some(std::ffi::OsStr::new(MASKS_DIR)) {
                    pending.push(p);
                }
            } else if is_image(&p) {
                found.push(p);
            }
        }
    }
    found.sort();
    Ok(found)
}

fn open_folder(root: &Path, split: Option<&str>) -> Result<Dataset> {
    let (base, split_name) = match split {
        Some(s) if s != "all" => {
            let sub = root.join(s);
            if !sub.is_dir() {
                return Err(TriscopeError::InvalidArgument(format!(
                    "{} has no labels.csv and no '{s}' sub-folder",
                    root.display()
                )));
            }
            (sub, s.to_string())
        }
        _ => (root.to_path_buf(), "all".to_string()),
    };
    let list = |dir: &Path| -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| TriscopeError::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        v.sort();
        Ok(v)
    };
    // A `masks/` folder holds ground truth, not a class.
    let class_dirs: Vec<PathBuf> = list(&base)?
        .into_iter()
        .filter(|p| p.is_dir() && p.file_name() != Some(std::ffi::OsStr::new(MASKS_DIR)))
        .collect();
    let mut class_names = Vec::new();
    let mut samples = Vec::new();
    for dir in &class_dirs {
        let images: Vec<PathBuf> = list(dir)?.into_iter().filter(|p| is_image(p)).collect();
        if images.is_empty() {
            continue;
        }
        let class = class_names.len();
        class_names.push(
            dir.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
        );
        for p in images {
            samples.push(Sample {
                id: p.strip_prefix(&base).unwrap_or(&p).display().to_string(),
                source: Source::File(p),
                label: Label::Class(class),
            });
        }
    }
    if samples.is_empty() {
        return Err(TriscopeError::InvalidArgument(format!(
            "{} has no labels: expected labels.csv (HAM10000 or ChestX-ray14 layout), a MedMNIST .npz, \
             or one sub-folder of images per class",
            base.display()
        )));
    }
    Ok(Dataset {
        kind: DatasetKind::ImageFolder,
        root: base,
        split: split_name,
        class_names,
        multi_label: false,
        samples,
        notes: Vec::new(),
        npz: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes() {
        assert_eq!(split_csv_line("a,\"b,c\",d"), vec!["a", "b,c", "d"]);
        assert_eq!(
            split_csv_line("x,\"say \"\"hi\"\"\",,"),
            vec!["x", "say \"hi\"", "", ""]
        );
    }
}
