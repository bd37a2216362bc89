//! The ground truth of one image file, found from where the file sits, as plain data for the
//! app to draw beside an explanation: the image's label(s) from a `labels.csv`, the outline of
//! its HAM10000 lesion mask and the NIH expert boxes of its findings, at model-input
//! resolution (the same resize and centre crop as the model input).
//!
//! Where it looks, for an image `DIR/NAME`, in `DIR` and then in `DIR/..` (so both a dataset,
//! `ROOT/images/NAME` beside `ROOT/labels.csv`, `ROOT/masks/`, `ROOT/BBox_List_2017.csv`, and a
//! folder holding the files beside its images, like the bundled samples, are found); a
//! `labels.csv` also one folder higher (derm7pt's `ROOT/images/SUB/NAME`):
//!
//! - `labels.csv` listing the image, in any layout [`crate::io::data`] reads: HAM10000
//!   (`image_id`, `dx`), derm7pt (`image` under `images/`, `dx`), ChestX-ray14 (`Image Index`,
//!   `Finding Labels`), or `image,label` (the image as `NAME`, `images/NAME` or
//!   `SUBFOLDER/NAME`; several labels `|`-separated);
//! - `masks/STEM.png`: a binary mask (white = inside) of a HAM10000 lesion, or of the lungs where
//!   the dataset's `labels.csv` records `lung_fraction` (shenzhen-montgomery-cxr), drawn as
//!   its outline;
//! - `BBox_List_2017.csv`: boxes in the original 1024-pixel coordinates.
//!
//! Parsed tables are kept per file (re-read only when the file changes), so a folder of
//! 10,000 images reads its `labels.csv` once.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::io::data::{LABELS_FILE, LabelsLayout, read_csv};
use crate::io::imaging::{ResizeMode, crop_geometry, decode, prepare};
use crate::io::regions::{BoundingBox, NIH_ORIGINAL_SIDE, image_folders, read_nih_boxes};

/// The name of the NIH box list.
pub const BOX_LIST: &str = "BBox_List_2017.csv";
pub use crate::io::data::MASKS_DIR;

/// What is known about one image, at model-input resolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GroundTruth {
    /// Its label(s) in `labels_file` (HAM10000 dx, ChestX-ray14 findings, `image,label`
    /// labels); empty when no labels.csv lists it.
    pub labels: Vec<String>,
    pub labels_file: Option<PathBuf>,
    /// Side of the model input the region coordinates refer to (pixels).
    pub resolution: usize,
    pub regions: Vec<GroundTruthRegion>,
    /// Files that were there but could not be read (the rest is still returned).
    pub warnings: Vec<String>,
}

impl GroundTruth {
    /// The region of `finding` (case-insensitive), e.g. a class name of the model.
    pub fn region_for(&self, finding: &str) -> Option<&GroundTruthRegion> {
        self.regions
            .iter()
            .find(|r| r.finding.eq_ignore_ascii_case(finding.trim()))
    }

    /// The mask's outline (a lesion, the lungs), if the image has a mask.
    pub fn mask_region(&self) -> Option<&GroundTruthRegion> {
        self.regions
            .iter()
            .find(|r| matches!(r.shape, RegionShape::Outline { .. }))
    }
}

/// One annotated region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruthRegion {
    /// "lesion" for a mask, the finding for boxes ("Pneumonia", ...).
    pub finding: String,
    /// Who annotated it, for labels: "HAM10000", "NIH".
    pub dataset: String,
    /// The mask or box list it was read from.
    pub source: PathBuf,
    pub shape: RegionShape,
}

/// A region's geometry in model-input pixel coordinates (x right, y down; pixel `i` spans
/// `i..i + 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RegionShape {
    /// The boundary of a mask (where the resized mask crosses 0.5, the threshold of
    /// [`crate::io::regions`]) as closed polylines; holes are loops of their own.
    Outline {
        loops: Vec<Vec<[f32; 2]>>,
        /// The mask itself at model-input resolution (`[resolution * resolution]`, row-major,
        /// thresholded at 0.5 as the outline is), for measuring a map against it.
        mask: Vec<bool>,
    },
    /// Rectangles `[x0, y0, x1, y1]`; a box can reach past the crop (coordinates below 0 or
    /// above the resolution).
    Boxes { boxes: Vec<[f32; 4]> },
}

/// A parsed table, with the file's modification time and length when it was read.
struct Cached<T> {
    stamp: Option<(SystemTime, u64)>,
    value: std::result::Result<Arc<T>, String>,
}

/// Image key (as written in labels.csv) → labels.
type LabelTable = HashMap<String, Vec<String>>;
/// Image file name → (finding, box) rows.
type BoxTable = BTreeMap<String, Vec<(String, BoundingBox)>>;

/// Finds ground truth for image files and keeps the tables it parsed.
#[derive(Default)]
pub struct GroundTruthIndex {
    labels: HashMap<PathBuf, Cached<LabelTable>>,
    boxes: HashMap<PathBuf, Cached<BoxTable>>,
    /// Tables parsed so far (tests check the cache with it).
    pub files_read: usize,
}

impl GroundTruthIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// The label(s) of `image` and the labels.csv that lists it, if one does. A labels.csv
    /// that cannot be parsed is skipped (its problem is in [`Self::find`]'s warnings).
    pub fn labels(&mut self, image: &Path) -> Option<(PathBuf, Vec<String>)> {
        self.find_labels(image, &mut Vec::new())
    }

    /// Everything known about `image` (a `width` x `height` file brought to `resolution` with
    /// `mode`); `None` when nothing is.
    pub fn find(
        &mut self,
        image: &Path,
        (width, height): (u32, u32),
        resolution: usize,
        mode: ResizeMode,
    ) -> Option<GroundTruth> {
        let mut warnings = Vec::new();
        let labels = self.find_labels(image, &mut warnings);
        let mut regions = Vec::new();
        if let Some((dir, kind)) = crate::io::regions::masks_beside(image) {
            let mask = crate::io::data::mask_file(&dir, image);
            match mask_outline_file(&mask, resolution, mode) {
                Ok((loops, inside)) => regions.push(GroundTruthRegion {
                    finding: kind.finding().into(),
                    dataset: kind.annotator().into(),
                    source: mask,
                    shape: RegionShape::Outline {
                        loops,
                        mask: inside,
                    },
                }),
                Err(e) => warnings.push(e.to_string()),
            }
        }
        let name = image
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for list in image_folders(image).map(|d| d.join(BOX_LIST)) {
            if !list.is_file() {
                continue;
            }
            let table = match self.box_table(&list) {
                Ok(t) => t,
                Err(e) => {
                    warnings.push(e);
                    continue;
                }
            };
            let Some(rows) = table.get(&name) else {
                continue;
            };
            let geometry = crop_geometry(width as usize, height as usize, resolution, mode);
            let scale = (
                f64::from(width) / NIH_ORIGINAL_SIDE,
                f64::from(height) / NIH_ORIGINAL_SIDE,
            );
            let mut findings: BTreeMap<&str, Vec<[f32; 4]>> = BTreeMap::new();
            for (finding, b) in rows {
                let (x0, y0) = geometry.to_input((b.x * scale.0, b.y * scale.1), (width, height));
                let (x1, y1) = geometry.to_input(
                    ((b.x + b.width) * scale.0, (b.y + b.height) * scale.1),
                    (width, height),
                );
                findings
                    .entry(finding.as_str())
                    .or_default()
                    .push([x0 as f32, y0 as f32, x1 as f32, y1 as f32]);
            }
            regions.extend(
                findings
                    .into_iter()
                    .map(|(finding, boxes)| GroundTruthRegion {
                        finding: finding.to_string(),
                        dataset: "NIH".into(),
                        source: list.clone(),
                        shape: RegionShape::Boxes { boxes },
                    }),
            );
            break;
        }
        if labels.is_none() && regions.is_empty() && warnings.is_empty() {
            return None;
        }
        let (labels_file, labels) = labels.map_or((None, Vec::new()), |(f, l)| (Some(f), l));
        Some(GroundTruth {
            labels,
            labels_file,
            resolution,
            regions,
            warnings,
        })
    }

    fn find_labels(
        &mut self,
        image: &Path,
        warnings: &mut Vec<String>,
    ) -> Option<(PathBuf, Vec<String>)> {
        // derm7pt's table sits two folders above its images (`images/A1l/Aal002.jpg`).
        for root in image.ancestors().skip(1).take(3) {
            let file = root.join(LABELS_FILE);
            if !file.is_file() {
                continue;
            }
            let table = match self.label_table(&file) {
                Ok(t) => t,
                Err(e) => {
                    warnings.push(e);
                    continue;
                }
            };
            if let Some(labels) = image_keys(image, root)
                .iter()
                .find_map(|k| table.get(k.as_str()))
            {
                return Some((file, labels.clone()));
            }
        }
        None
    }

    fn label_table(&mut self, file: &Path) -> std::result::Result<Arc<LabelTable>, String> {
        let stamp = stamp(file);
        if let Some(c) = self.labels.get(file).filter(|c| c.stamp == stamp) {
            return c.value.clone();
        }
        self.files_read += 1;
        let value = read_label_table(file)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        self.labels.insert(
            file.to_path_buf(),
            Cached {
                stamp,
                value: value.clone(),
            },
        );
        value
    }

    fn box_table(&mut self, file: &Path) -> std::result::Result<Arc<BoxTable>, String> {
        let stamp = stamp(file);
        if let Some(c) = self.boxes.get(file).filter(|c| c.stamp == stamp) {
            return c.value.clone();
        }
        self.files_read += 1;
        let value = read_nih_boxes(file)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        self.boxes.insert(
            file.to_path_buf(),
            Cached {
                stamp,
                value: value.clone(),
            },
        );
        value
    }
}

fn stamp(file: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(file).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// How a labels.csv in `root` may name `image`: its path below `root` (`images/NAME`,
/// `ham10000/NAME`), its file name, its stem (HAM10000's `image_id`).
fn image_keys(image: &Path, root: &Path) -> Vec<String> {
    let mut keys = Vec::new();
    if let Ok(rel) = image.strip_prefix(root) {
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        keys.push(parts.join("/"));
    }
    for part in [image.file_name(), image.file_stem()].into_iter().flatten() {
        keys.push(part.to_string_lossy().into_owned());
    }
    keys
}

/// A labels.csv as image key → labels, for the layouts [`crate::io::data`] reads
/// ([`LabelsLayout`]); keys are paths below the table's folder, file names or stems.
fn read_label_table(file: &Path) -> Result<LabelTable> {
    let table = read_csv(file)?;
    let layout = LabelsLayout::detect(&table)?;
    let (key_column, label_column) = layout.columns();
    let (key, label) = (table.require(key_column)?, table.require(label_column)?);
    let multi = layout.multi_label();
    let mut out = LabelTable::new();
    for row in &table.rows {
        let (Some(k), Some(l)) = (row.get(key), row.get(label)) else {
            continue;
        };
        let labels = if multi {
            l.split('|')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        } else if l.trim().is_empty() {
            // No label (derm7pt's melanosis and miscellaneous have no HAM10000 class).
            continue;
        } else {
            vec![l.trim().to_string()]
        };
        let k = k.trim();
        let k = match layout.image_prefix() {
            Some(dir) => format!("{dir}/{k}"),
            None => k.to_string(),
        };
        out.insert(k, labels);
    }
    Ok(out)
}

/// A closed polyline in model-input pixels.
pub type Loop = Vec<[f32; 2]>;

/// The outline of the mask file at `path` after the model input's resize and crop, and the
/// mask itself at that resolution (thresholded at 0.5).
pub fn mask_outline_file(
    path: &Path,
    resolution: usize,
    mode: ResizeMode,
) -> Result<(Vec<Loop>, Vec<bool>)> {
    let mask = decode(path)?;
    let p =
        prepare(mask, 1, resolution, mode).map_err(|reason| crate::TriscopeError::BadImage {
            path: path.to_path_buf(),
            reason,
        })?;
    Ok((
        mask_outline(&p.data, resolution),
        p.data.iter().map(|&v| v >= 0.5).collect(),
    ))
}

/// Marching squares on a `side` x `side` mask (values in [0, 1], row-major, pixel centres at
/// `i + 0.5`): closed loops where the values cross 0.5, linearly interpolated between pixel
/// centres. The mask is padded with 0, so a region touching the border closes along it.
pub fn mask_outline(values: &[f32], side: usize) -> Vec<Vec<[f32; 2]>> {
    let n = side + 2; // padded grid, index i is at coordinate i - 0.5
    let at = |i: usize, j: usize| -> f32 {
        if i == 0 || j == 0 || i > side || j > side {
            0.0
        } else {
            values.get((j - 1) * side + (i - 1)).copied().unwrap_or(0.0)
        }
    };
    let inside = |v: f32| v >= 0.5;
    // Edges by id: horizontal (i, j)-(i+1, j) = 2 * (j * n + i), vertical (i, j)-(i, j+1) =
    // 2 * (j * n + i) + 1. A crossing point lies on one edge; two cells share it.
    let point = |id: usize| -> [f32; 2] {
        let (cell, vertical) = (id / 2, id % 2 == 1);
        let (i, j) = (cell % n, cell / n);
        let (a, b) = if vertical {
            (at(i, j), at(i, j + 1))
        } else {
            (at(i, j), at(i + 1, j))
        };
        let t = ((0.5 - a) / (b - a)).clamp(0.0, 1.0);
        let (x, y) = (i as f32 - 0.5, j as f32 - 0.5);
        if vertical { [x, y + t] } else { [x + t, y] }
    };
    let mut segments: Vec<[usize; 2]> = Vec::new();
    for j in 0..n - 1 {
        for i in 0..n - 1 {
            let (tl, tr, br, bl) = (at(i, j), at(i + 1, j), at(i + 1, j + 1), at(i, j + 1));
            let top = 2 * (j * n + i);
            let bottom = 2 * ((j + 1) * n + i);
            let left = 2 * (j * n + i) + 1;
            let right = 2 * (j * n + i + 1) + 1;
            let mut crossed = Vec::with_capacity(4);
            for (edge, a, b) in [
                (top, tl, tr),
                (right, tr, br),
                (bottom, bl, br),
                (left, tl, bl),
            ] {
                if inside(a) != inside(b) {
                    crossed.push(edge);
                }
            }
            match crossed.len() {
                2 => segments.push([crossed[0], crossed[1]]),
                4 => {
                    // Saddle: the mean of the corners decides whether the inside corners
                    // connect through the cell.
                    let centre = inside((tl + tr + br + bl) / 4.0);
                    if centre == inside(tl) {
                        segments.push([top, right]);
                        segments.push([bottom, left]);
                    } else {
                        segments.push([left, top]);
                        segments.push([right, bottom]);
                    }
                }
                _ => {}
            }
        }
    }
    // Chain the segments through their shared edges into loops.
    let mut by_edge: HashMap<usize, Vec<usize>> = HashMap::new();
    for (s, ends) in segments.iter().enumerate() {
        for e in ends {
            by_edge.entry(*e).or_default().push(s);
        }
    }
    let mut used = vec![false; segments.len()];
    let mut loops = Vec::new();
    for start in 0..segments.len() {
        if used[start] {
            continue;
        }
        used[start] = true;
        let first = segments[start][0];
        let mut edge = segments[start][1];
        let mut chain = vec![point(first), point(edge)];
        while edge != first {
            let next = by_edge
                .get(&edge)
                .and_then(|ss| ss.iter().copied().find(|s| !used[*s]));
            let Some(s) = next else {
                break; // cannot happen on a padded grid; keep the open chain
            };
            used[s] = true;
            edge = if segments[s][0] == edge {
                segments[s][1]
            } else {
                segments[s][0]
            };
            if edge != first {
                chain.push(point(edge));
            }
        }
        loops.push(chain);
    }
    loops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/samples")
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("triscope-gt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    /// Even-odd rule over all loops.
    fn inside_loops(loops: &[Vec<[f32; 2]>], x: f32, y: f32) -> bool {
        let mut inside = false;
        for l in loops {
            for k in 0..l.len() {
                let (a, b) = (l[k], l[(k + 1) % l.len()]);
                if (a[1] > y) != (b[1] > y) && x < a[0] + (y - a[1]) / (b[1] - a[1]) * (b[0] - a[0])
                {
                    inside = !inside;
                }
            }
        }
        inside
    }

    fn bounds(l: &[[f32; 2]]) -> [f32; 4] {
        l.iter().fold(
            [f32::MAX, f32::MAX, f32::MIN, f32::MIN],
            |[a, b, c, d], p| [a.min(p[0]), b.min(p[1]), c.max(p[0]), d.max(p[1])],
        )
    }

    #[test]
    fn a_block_is_outlined_along_its_pixel_edges() {
        // 5x5, pixels x in 1..3, y in 2..4 set.
        let mut m = vec![0.0f32; 25];
        for y in 2..4 {
            for x in 1..3 {
                m[y * 5 + x] = 1.0;
            }
        }
        let loops = mask_outline(&m, 5);
        assert_eq!(loops.len(), 1);
        assert_eq!(bounds(&loops[0]), [1.0, 2.0, 3.0, 4.0]);
        for y in 0..5 {
            for x in 0..5 {
                let want = m[y * 5 + x] >= 0.5;
                assert_eq!(inside_loops(&loops, x as f32 + 0.5, y as f32 + 0.5), want);
            }
        }
    }

    #[test]
    fn regions_at_the_border_close_along_it_and_holes_are_loops() {
        // All set but the centre pixel of a 3x3 mask: the outer loop is the image border.
        let mut m = vec![1.0f32; 9];
        m[4] = 0.0;
        let loops = mask_outline(&m, 3);
        assert_eq!(loops.len(), 2);
        let mut b: Vec<[f32; 4]> = loops.iter().map(|l| bounds(l)).collect();
        b.sort_by(|x, y| x[0].total_cmp(&y[0]));
        assert_eq!(b[0], [0.0, 0.0, 3.0, 3.0]);
        assert_eq!(b[1], [1.0, 1.0, 2.0, 2.0]);
        assert!(!inside_loops(&loops, 1.5, 1.5));
        assert!(inside_loops(&loops, 0.5, 0.5));
        // Two diagonal pixels meet at a saddle; the corners' mean (0.45) is outside: apart.
        let apart = mask_outline(&[0.9, 0.0, 0.0, 0.9], 2);
        assert_eq!(apart.len(), 2);
        assert!(mask_outline(&[0.0; 4], 2).is_empty());
    }

    #[test]
    fn fixture_masks_outline_exactly_the_thresholded_region() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ham_masks");
        for stem in ["ISIC_0024324", "ISIC_0024470"] {
            let path = fixtures.join(format!("{stem}.png"));
            let mask = decode(&path).expect("mask");
            let p = prepare(mask, 1, 96, ResizeMode::ShorterSideCrop).expect("prepare");
            let loops = mask_outline(&p.data, 96);
            assert!(!loops.is_empty());
            let mut wrong = 0;
            for y in 0..96 {
                for x in 0..96 {
                    let want = p.data[y * 96 + x] >= 0.5;
                    if inside_loops(&loops, x as f32 + 0.5, y as f32 + 0.5) != want {
                        wrong += 1;
                    }
                }
            }
            assert_eq!(
                wrong, 0,
                "{stem}: pixel centres on the wrong side of the outline"
            );
            for l in &loops {
                let b = bounds(l);
                assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 96.0 && b[3] <= 96.0);
            }
        }
    }

    #[test]
    fn bundled_samples_find_their_label_mask_and_box() {
        let mut index = GroundTruthIndex::new();
        let ham = samples().join("ham10000/ISIC_0024324.jpg");
        let gt = index
            .find(&ham, (200, 150), 96, ResizeMode::ShorterSideCrop)
            .expect("ground truth");
        assert_eq!(gt.labels, ["bkl"]);
        assert_eq!(gt.labels_file, Some(samples().join("labels.csv")));
        assert!(gt.warnings.is_empty(), "{:?}", gt.warnings);
        let lesion = gt.mask_region().expect("a lesion outline");
        assert_eq!(
            lesion.source,
            samples().join("ham10000/masks/ISIC_0024324.png")
        );
        assert_eq!(gt.region_for("Lesion"), Some(lesion));

        let cxr = samples().join("nih-cxr14/00000193_019.png");
        let gt = index
            .find(&cxr, (256, 256), 64, ResizeMode::ShorterSideCrop)
            .expect("ground truth");
        assert_eq!(gt.labels, ["Pneumonia"]);
        let r = gt.region_for("pneumonia").expect("the Pneumonia box");
        assert_eq!(r.dataset, "NIH");
        // BBox_List_2017.csv: 703.72, 617.00, 218.45 x 249.17 at 1024 px; the model sees 64.
        let RegionShape::Boxes { boxes } = &r.shape else {
            panic!("boxes expected")
        };
        let want = [
            703.715_6,
            616.997_9,
            703.715_6 + 218.453_3,
            616.997_9 + 249.173_3,
        ]
        .map(|v: f32| v / 16.0);
        assert_eq!(boxes.len(), 1);
        for (got, want) in boxes[0].iter().zip(want) {
            assert!((got - want).abs() < 1e-3, "{:?} vs {want:?}", boxes[0]);
        }
        // The box list's "Infiltrate" is the labels' "Infiltration".
        let gt = index
            .find(
                &samples().join("nih-cxr14/00000032_037.png"),
                (256, 256),
                64,
                ResizeMode::ShorterSideCrop,
            )
            .expect("ground truth");
        assert_eq!(gt.labels, ["Cardiomegaly", "Edema", "Infiltration"]);
        assert!(gt.region_for("Infiltration").is_some());
        assert!(gt.region_for("Cardiomegaly").is_none());
        // One read of labels.csv and one of the box list for all three images.
        assert_eq!(index.files_read, 2);
    }

    #[test]
    fn dataset_folders_are_found_from_their_images_folder() {
        // HAM10000 layout: ROOT/labels.csv, ROOT/images/, ROOT/masks/.
        let ham = temp("ham");
        let root = &ham;
        std::fs::create_dir_all(root.join("images")).expect("dir");
        std::fs::create_dir_all(root.join("masks")).expect("dir");
        std::fs::write(
            root.join("labels.csv"),
            "image_id,lesion_id,dx,split\nISIC_1,HAM_1,mel,test\nISIC_2,HAM_2,nv,train\n",
        )
        .expect("csv");
        let mut mask = image::GrayImage::new(40, 20);
        for y in 5..15 {
            for x in 20..30 {
                mask.put_pixel(x, y, image::Luma([255]));
            }
        }
        mask.save(root.join("masks/ISIC_1.png")).expect("mask");
        let img = root.join("images/ISIC_1.jpg");
        let mut index = GroundTruthIndex::new();
        assert_eq!(
            index.labels(&img),
            Some((root.join("labels.csv"), vec!["mel".into()]))
        );
        assert_eq!(
            index.labels(&root.join("images/ISIC_2.jpg")).map(|l| l.1),
            Some(vec!["nv".to_string()])
        );
        assert_eq!(index.labels(&root.join("images/ISIC_3.jpg")), None);
        // 40x20 → resize to 40x20 at R = 20 (already), crop x 10..30: the block is at x 10..20.
        let gt = index
            .find(&img, (40, 20), 20, ResizeMode::ShorterSideCrop)
            .expect("ground truth");
        let RegionShape::Outline { loops, .. } = &gt.mask_region().expect("lesion").shape else {
            panic!("an outline expected")
        };
        assert_eq!(loops.len(), 1);
        assert_eq!(bounds(&loops[0]), [10.0, 5.0, 20.0, 15.0]);
        assert_eq!(index.files_read, 1, "labels.csv is read once");

        // ChestX-ray14 layout with a box list; a box partly outside the crop keeps its extent.
        let nih = temp("nih");
        let root = &nih;
        std::fs::create_dir_all(root.join("images")).expect("dir");
        std::fs::write(
            root.join("labels.csv"),
            "Image Index,Finding Labels,Patient ID,split\na.png,Mass|Nodule,1,test\n\
             b.png,No Finding,2,test\n",
        )
        .expect("csv");
        std::fs::write(
            root.join(BOX_LIST),
            "Image Index,Finding Label,Bbox [x,y,w,h],,,\na.png,Mass,0,512,256,256\n\
             a.png,Mass,768,0,256,128\n",
        )
        .expect("csv");
        // A 512 x 256 file: resized to 128 x 64 at R = 64, crop x 32..96.
        let gt = index
            .find(
                &root.join("images/a.png"),
                (512, 256),
                64,
                ResizeMode::ShorterSideCrop,
            )
            .expect("ground truth");
        assert_eq!(gt.labels, ["Mass", "Nodule"]);
        let RegionShape::Boxes { boxes } = &gt.region_for("mass").expect("mass").shape else {
            panic!("boxes expected")
        };
        assert_eq!(boxes, &[[-32.0, 32.0, 0.0, 48.0], [64.0, 0.0, 96.0, 8.0]]);
        assert!(gt.region_for("Nodule").is_none());
        let b = index
            .find(
                &root.join("images/b.png"),
                (256, 256),
                64,
                ResizeMode::Stretch,
            )
            .expect("labels only");
        assert_eq!(b.labels, ["No Finding"]);
        assert!(b.regions.is_empty());

        // image,label layout (kermany-cxr), images named images/NAME; an unlisted folder has
        // nothing; a broken labels.csv is a warning naming the file.
        let root = temp("kermany");
        std::fs::create_dir_all(root.join("images")).expect("dir");
        std::fs::write(
            root.join("labels.csv"),
            "image,label,subtype,patient_id,split\nimages/p-1.jpeg,pneumonia,virus,p,test\n",
        )
        .expect("csv");
        assert_eq!(
            index.labels(&root.join("images/p-1.jpeg")).map(|l| l.1),
            Some(vec!["pneumonia".to_string()])
        );
        let plain = temp("plain");
        let image = plain.join("sub/x.png");
        assert!(index.find(&image, (8, 8), 8, ResizeMode::Stretch).is_none());
        let broken = temp("broken");
        std::fs::write(broken.join("labels.csv"), "name,kind\nx.png,a\n").expect("csv");
        let gt = index
            .find(&broken.join("x.png"), (8, 8), 8, ResizeMode::Stretch)
            .expect("a warning");
        assert!(gt.warnings[0].contains("labels.csv"), "{:?}", gt.warnings);
        for d in [ham, nih, root, plain, broken] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[test]
    fn derm7pt_images_find_their_diagnosis_two_folders_up() {
        // derm7pt: labels.csv names `A1l/Aal002.jpg` under images/ (the same reader as
        // `Dataset::open`); an image without a HAM10000 class has no label, not an empty one.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/derm7pt_tiny");
        let mut index = GroundTruthIndex::new();
        let (file, labels) = index
            .labels(&root.join("images/Ael/Ael496.jpg"))
            .expect("a label");
        assert_eq!(file, root.join("labels.csv"));
        assert_eq!(labels, ["mel"]);
        assert!(index.labels(&root.join("images/FDL/FDL068.JPG")).is_none());
    }
}
