//! `labels.csv` and other CSV tables: parsing (quoted fields), the label layouts Triscope
//! reads, and the split and patient-group columns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Result, TriscopeError};

/// A dataset folder's label table.
pub const LABELS_FILE: &str = "labels.csv";

/// The `labels.csv` layouts, told apart by their columns: one reader for the datasets
/// ([`Dataset::open`]) and the ground truth shown beside a single image
/// ([`crate::io::ground_truth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LabelsLayout {
    /// `image_id` (the file stem) and `dx`.
    Ham10000,
    /// `image` (a path under `images/`) and `dx`, beside the seven-point criteria.
    Derm7pt,
    /// `Image Index` and `Finding Labels` (`|`-separated findings).
    NihCxr14,
    /// `image` and `label` (`|`-separated when multi-label).
    LabelsCsv,
}

impl LabelsLayout {
    pub(crate) fn detect(table: &Table) -> Result<Self> {
        let has = |c: &str| table.column(c).is_some();
        Ok(if has("dx") && !has("image_id") && has("image") {
            Self::Derm7pt
        } else if has("dx") && has("image_id") {
            Self::Ham10000
        } else if has("Finding Labels") && has("Image Index") {
            Self::NihCxr14
        } else if has("image") && has("label") {
            Self::LabelsCsv
        } else {
            return Err(TriscopeError::InvalidArgument(format!(
                "{} has none of the label layouts Triscope reads: 'image_id' and 'dx' \
                 (HAM10000), 'image' and 'dx' (derm7pt), 'Image Index' and 'Finding Labels' \
                 (ChestX-ray14), 'image' and 'label'",
                table.path.display()
            )));
        })
    }

    /// The columns naming each image and its label.
    pub(crate) fn columns(self) -> (&'static str, &'static str) {
        match self {
            Self::Ham10000 => ("image_id", "dx"),
            Self::Derm7pt => ("image", "dx"),
            Self::NihCxr14 => ("Image Index", "Finding Labels"),
            Self::LabelsCsv => ("image", "label"),
        }
    }

    /// A label cell may list several labels separated by `|`.
    pub(crate) fn multi_label(self) -> bool {
        matches!(self, Self::NihCxr14 | Self::LabelsCsv)
    }

    /// The folder below the table's that the image column's paths start in.
    pub(crate) fn image_prefix(self) -> Option<&'static str> {
        matches!(self, Self::Derm7pt).then_some("images")
    }
}

/// A parsed CSV with a header row (quotes supported for fields with commas).
pub(crate) struct Table {
    pub(crate) path: PathBuf,
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
    /// The file line of each row (1-based), for errors.
    pub(crate) lines: Vec<usize>,
}

impl Table {
    pub(crate) fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// The index of column `name`, which every row must have (rows may end early, as
    /// ChestX-ray14's trailing empty column does, but not before a column that is used).
    pub(crate) fn require(&self, name: &str) -> Result<usize> {
        let c = self.column(name).ok_or_else(|| {
            TriscopeError::InvalidArgument(format!(
                "{} has no '{name}' column",
                self.path.display()
            ))
        })?;
        if let Some((row, line)) = self
            .rows
            .iter()
            .zip(&self.lines)
            .find(|(r, _)| r.len() <= c)
        {
            return Err(TriscopeError::InvalidArgument(format!(
                "{} line {line}: no '{name}' field (the row has {} fields, the header {})",
                self.path.display(),
                row.len(),
                self.header.len()
            )));
        }
        Ok(c)
    }

    /// Image file names from a column: plain names inside the dataset's image folder.
    pub(super) fn file_name<'a>(
        &self,
        row: &'a [String],
        line: usize,
        col: usize,
    ) -> Result<&'a str> {
        let name = row[col].as_str();
        let plain = !name.is_empty()
            && name != "."
            && name != ".."
            && !name.contains(['/', '\\'])
            && !Path::new(name).is_absolute();
        if plain {
            Ok(name)
        } else {
            Err(TriscopeError::InvalidArgument(format!(
                "{} line {line}: image name '{name}' is not a plain file name (no folders, no \
                 '..')",
                self.path.display()
            )))
        }
    }
}

pub(crate) fn read_csv(path: &Path) -> Result<Table> {
    let text = std::fs::read_to_string(path).map_err(|source| TriscopeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header =
        split_csv_line(lines.next().ok_or_else(|| {
            TriscopeError::InvalidArgument(format!("{} is empty", path.display()))
        })?);
    let mut rows = Vec::new();
    let mut numbers = Vec::new();
    for (i, line) in lines.enumerate() {
        let row = split_csv_line(line);
        if row.len() < header.len().min(2) {
            return Err(TriscopeError::InvalidArgument(format!(
                "{} line {}: {} fields, the header has {}",
                path.display(),
                i + 2,
                row.len(),
                header.len()
            )));
        }
        rows.push(row);
        numbers.push(i + 2);
    }
    Ok(Table {
        path: path.to_path_buf(),
        header,
        rows,
        lines: numbers,
    })
}

pub(super) fn split_csv_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    out.push(field);
    out
}

/// Which rows of `table` belong to `split` (`all`: every row). Without a split column only
/// `all` exists; a split the table does not have is an error listing those it has.
pub(super) fn split_rows(
    table: &Table,
    split_col: Option<usize>,
    split: &str,
) -> Result<Vec<bool>> {
    let Some(col) = split_col else {
        if split == "all" {
            return Ok(vec![true; table.rows.len()]);
        }
        return Err(TriscopeError::InvalidArgument(format!(
            "{} has no split column; use --split all",
            table.path.display()
        )));
    };
    let splits: std::collections::BTreeSet<&str> =
        table.rows.iter().map(|r| r[col].as_str()).collect();
    if split != "all" && !splits.contains(split) {
        return Err(TriscopeError::InvalidArgument(format!(
            "{} has no split '{split}' (it has: {}, or all)",
            table.path.display(),
            splits.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(table
        .rows
        .iter()
        .map(|r| split == "all" || r[col] == split)
        .collect())
}

/// [`split_rows`] for a table whose `split` column is optional, after checking that no
/// `group` (a patient id column, when there is one) spans two splits.
pub(super) fn split_rows_by_group(table: &Table, split: &str, group: &str) -> Result<Vec<bool>> {
    let split_col = table
        .column("split")
        .map(|_| table.require("split"))
        .transpose()?;
    if let (Some(_), Some(col)) = (table.column(group), split_col) {
        check_groups_within_splits(table, table.require(group)?, col)?;
    }
    split_rows(table, split_col, split)
}

/// A patient (or lesion) whose images are in two splits would leak between training and
/// evaluation: refused, naming it.
fn check_groups_within_splits(table: &Table, group_col: usize, split_col: usize) -> Result<()> {
    let mut first: BTreeMap<&str, &str> = BTreeMap::new();
    for row in &table.rows {
        let (group, split) = (row[group_col].as_str(), row[split_col].as_str());
        match first.get(group) {
            Some(&s) if s != split => {
                return Err(TriscopeError::InvalidArgument(format!(
                    "{}: {} '{group}' has images in the '{s}' and '{split}' splits; a split must \
                     keep each one whole",
                    table.path.display(),
                    table.header[group_col]
                )));
            }
            Some(_) => {}
            None => {
                first.insert(group, split);
            }
        }
    }
    Ok(())
}
