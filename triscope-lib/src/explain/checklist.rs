//! The seven-point checklist (Argenziano et al., Arch. Dermatol. 1998) as derm7pt scores it
//! (Kawahara et al., IEEE JBHI 2019): the criteria a dermatologist checks before calling a
//! melanoma, each read from derm7pt's `labels.csv` as present or absent.
//!
//! derm7pt records each criterion with several values (a pigment network is absent, typical or
//! atypical). A checklist criterion is *present* only in its atypical / irregular form, the
//! form that scores points; every other recorded value, the regular form included, is
//! *absent*. The groups are derm7pt's own (its `Derm7PtDatasetGroupInfrequent`): dotted and
//! linear irregular vessels are the atypical vascular pattern; arborizing, comma, hairpin,
//! wreath and "within regression" vessels are not.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TriscopeError};
use crate::io::data::{LABELS_FILE, Table, derm7pt_image_path, read_csv};

/// Where the command line and the app look for derm7pt unless told: the shared data folder
/// beside the project.
pub const DEFAULT_DERM7PT: &str = "../shared/data/derm7pt";

/// One checklist criterion and how derm7pt's values map to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Criterion {
    /// Short machine name, e.g. `atypical_pigment_network`.
    pub name: &'static str,
    /// What a dermatologist calls it.
    pub title: &'static str,
    /// derm7pt's column.
    pub column: &'static str,
    /// Values that mean the criterion is present.
    pub present: &'static [&'static str],
    /// Values that mean it is absent (the criterion's regular form included).
    pub absent: &'static [&'static str],
    /// Checklist points when present: 2 for the major criteria, 1 for the minor ones.
    pub points: u8,
}

impl Criterion {
    /// `Some(true)` present, `Some(false)` absent, `None` a value derm7pt does not use.
    pub fn read(&self, value: &str) -> Option<bool> {
        let v = value.trim();
        if self.present.contains(&v) {
            Some(true)
        } else if self.absent.contains(&v) {
            Some(false)
        } else {
            None
        }
    }
}

/// The seven criteria: the three major (2 points) first, then the four minor (1 point).
pub const SEVEN_POINT_CHECKLIST: [Criterion; 7] = [
    Criterion {
        name: "atypical_pigment_network",
        title: "atypical pigment network",
        column: "pigment_network",
        present: &["atypical"],
        absent: &["absent", "typical"],
        points: 2,
    },
    Criterion {
        name: "blue_whitish_veil",
        title: "blue-whitish veil",
        column: "blue_whitish_veil",
        present: &["present"],
        absent: &["absent"],
        points: 2,
    },
    Criterion {
        name: "atypical_vascular_pattern",
        title: "atypical vascular pattern",
        column: "vascular_structures",
        present: &["dotted", "linear irregular"],
        absent: &[
            "absent",
            "arborizing",
            "comma",
            "hairpin",
            "within regression",
            "wreath",
        ],
        points: 2,
    },
    Criterion {
        name: "irregular_streaks",
        title: "irregular streaks",
        column: "streaks",
        present: &["irregular"],
        absent: &["absent", "regular"],
        points: 1,
    },
    Criterion {
        name: "irregular_pigmentation",
        title: "irregular pigmentation",
        column: "pigmentation",
        present: &["diffuse irregular", "localized irregular"],
        absent: &["absent", "diffuse regular", "localized regular"],
        points: 1,
    },
    Criterion {
        name: "irregular_dots_globules",
        title: "irregular dots/globules",
        column: "dots_and_globules",
        present: &["irregular"],
        absent: &["absent", "regular"],
        points: 1,
    },
    Criterion {
        name: "regression_structures",
        title: "regression structures",
        column: "regression_structures",
        present: &["blue areas", "white areas", "combinations"],
        absent: &["absent"],
        points: 1,
    },
];

/// One derm7pt image and its checklist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChecklistRow {
    /// Path under `images/`, e.g. `A1l/Aal002.jpg`.
    pub id: String,
    pub path: PathBuf,
    pub split: String,
    /// HAM10000 code of the diagnosis; `None` where derm7pt has none.
    pub dx: Option<String>,
    /// Presence of each criterion, in [`SEVEN_POINT_CHECKLIST`]'s order.
    pub present: [bool; 7],
}

/// derm7pt's images with their checklists.
#[derive(Debug, Clone)]
pub struct ChecklistTable {
    pub root: PathBuf,
    pub labels: PathBuf,
    pub rows: Vec<ChecklistRow>,
}

impl ChecklistTable {
    /// Read `root/labels.csv`. A missing column, an image path outside `images/`, a missing
    /// image or a value derm7pt does not use is an error naming the file, the line and the
    /// value (and the values the column may hold).
    pub fn open(root: &Path) -> Result<Self> {
        let labels = root.join(LABELS_FILE);
        if !labels.is_file() {
            return Err(TriscopeError::InvalidArgument(format!(
                "{} has no labels.csv: the seven-point-checklist concepts need derm7pt's folder \
                 (labels.csv with the criteria columns, images/)",
                root.display()
            )));
        }
        let table = read_csv(&labels)?;
        let image = table.require("image")?;
        let split = table.require("split")?;
        let dx = table.column("dx");
        let columns: Vec<usize> = SEVEN_POINT_CHECKLIST
            .iter()
            .map(|c| criterion_column(&table, c))
            .collect::<Result<_>>()?;
        let mut rows = Vec::with_capacity(table.rows.len());
        let mut missing = Vec::new();
        for (row, &line) in table.rows.iter().zip(&table.lines) {
            let id = derm7pt_image_path(&table, row, line, image)?;
            let mut present = [false; 7];
            for ((p, c), &col) in present.iter_mut().zip(&SEVEN_POINT_CHECKLIST).zip(&columns) {
                *p = c.read(&row[col]).ok_or_else(|| {
                    TriscopeError::InvalidArgument(format!(
                        "{} line {line}: {} is '{}', not one of derm7pt's values ({})",
                        labels.display(),
                        c.column,
                        row[col],
                        c.present
                            .iter()
                            .chain(c.absent)
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
            }
            let path = root.join("images").join(&id);
            if !path.is_file() {
                missing.push(path.display().to_string());
            }
            rows.push(ChecklistRow {
                id,
                path,
                split: row[split].trim().to_string(),
                dx: dx
                    .and_then(|d| row.get(d))
                    .map(|d| d.trim().to_string())
                    .filter(|d| !d.is_empty()),
                present,
            });
        }
        if !missing.is_empty() {
            return Err(TriscopeError::InvalidArgument(format!(
                "{} names {} missing image(s), e.g. {}",
                labels.display(),
                missing.len(),
                missing[..missing.len().min(3)].join(", ")
            )));
        }
        Ok(Self {
            root: root.to_path_buf(),
            labels,
            rows,
        })
    }

    /// Rows of one split.
    pub fn split(&self, split: &str) -> Vec<&ChecklistRow> {
        self.rows.iter().filter(|r| r.split == split).collect()
    }

    /// Per criterion, how many images of `split` have it and how many do not.
    pub fn counts(&self, split: &str) -> [(usize, usize); 7] {
        let mut out = [(0, 0); 7];
        for row in self.rows.iter().filter(|r| r.split == split) {
            for (o, &p) in out.iter_mut().zip(&row.present) {
                if p {
                    o.0 += 1;
                } else {
                    o.1 += 1;
                }
            }
        }
        out
    }
}

fn criterion_column(table: &Table, c: &Criterion) -> Result<usize> {
    table.column(c.column).ok_or_else(|| {
        TriscopeError::InvalidArgument(format!(
            "{} has no '{}' column: the seven-point-checklist concept '{}' is read from it \
             (derm7pt's columns: pigment_network, streaks, pigmentation, regression_structures, \
             dots_and_globules, blue_whitish_veil, vascular_structures)",
            table.path.display(),
            c.column,
            c.name
        ))
    })
}

/// The mapping as a Markdown table (for the docs and `--help`).
pub fn mapping_table() -> String {
    let mut s = String::from(
        "| criterion | points | derm7pt column | present | absent |\n|---|---|---|---|---|\n",
    );
    for c in &SEVEN_POINT_CHECKLIST {
        s.push_str(&format!(
            "| {} | {} | `{}` | {} | {} |\n",
            c.title,
            c.points,
            c.column,
            c.present.join(", "),
            c.absent.join(", ")
        ));
    }
    s
}

/// Write a derm7pt-layout folder of synthetic 64-pixel "lesions" at `root`, `n` images per
/// `(split, n)`: every second image has a blue-whitish veil, drawn as a large blue disc that a
/// model's features separate; the other criteria are drawn at random, independent of the
/// image (nothing to find); no image has an atypical vascular pattern (too rare to learn).
/// Veiled images are `mel`, the others `nv`. For tests, and for trying the Concepts tab
/// without derm7pt.
pub fn write_synthetic_derm7pt(root: &Path, per_split: &[(&str, usize)]) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TriscopeError::Io { path, source }
    };
    let mut rng = crate::util::rng::SplitMix64::new(7);
    let mut csv = String::from(
        "image,diagnosis,dx,pigment_network,streaks,pigmentation,regression_structures,\
         dots_and_globules,blue_whitish_veil,vascular_structures,split\n",
    );
    for &(split, n) in per_split {
        let dir = root.join("images").join(split);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        for i in 0..n {
            let veil = i % 2 == 0;
            let mut img = image::RgbImage::new(64, 64);
            for (x, y, p) in img.enumerate_pixels_mut() {
                let noise = (rng.next_f32() * 30.0) as u8;
                let (dx, dy) = (x as f32 - 32.0, y as f32 - 32.0);
                let inside = dx * dx + dy * dy < 22.0 * 22.0;
                *p = if veil && inside {
                    image::Rgb([60 + noise, 90 + noise, 200 + noise / 2])
                } else if inside {
                    image::Rgb([120 + noise, 80 + noise, 50 + noise])
                } else {
                    image::Rgb([200 + noise / 2, 160 + noise, 140 + noise])
                };
            }
            let name = format!("{split}/{i:03}.png");
            let path = root.join("images").join(&name);
            img.save(&path).map_err(|e| TriscopeError::BadImage {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let mut pick = |yes: &'static str, no: &'static str| {
                if rng.next_u64().is_multiple_of(2) {
                    yes
                } else {
                    no
                }
            };
            let row = format!(
                "{name},synthetic,{},{},{},{},{},{},{},absent,{split}\n",
                if veil { "mel" } else { "nv" },
                pick("atypical", "typical"),
                pick("irregular", "absent"),
                pick("diffuse irregular", "absent"),
                pick("blue areas", "absent"),
                pick("irregular", "regular"),
                if veil { "present" } else { "absent" },
            );
            csv.push_str(&row);
        }
    }
    let labels = root.join("labels.csv");
    std::fs::write(&labels, csv).map_err(io(&labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_derm7pt_uses_maps_to_exactly_one_side() {
        for c in &SEVEN_POINT_CHECKLIST {
            for v in c.present {
                assert_eq!(c.read(v), Some(true), "{} {v}", c.name);
                assert!(!c.absent.contains(v));
            }
            for v in c.absent {
                assert_eq!(c.read(v), Some(false), "{} {v}", c.name);
            }
            assert_eq!(c.read("unknown"), None);
        }
        let points: u8 = SEVEN_POINT_CHECKLIST.iter().map(|c| c.points).sum();
        assert_eq!(points, 10, "3 major x 2 + 4 minor x 1");
        assert!(mapping_table().contains("| atypical vascular pattern | 2 |"));
    }
}
