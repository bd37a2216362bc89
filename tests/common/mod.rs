//! Helpers shared by the integration tests: fixture loading and comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests").join("fixtures").join(name)
}

pub fn sample(rel: &str) -> PathBuf {
    root().join("assets").join("samples").join(rel)
}

/// A fixture tensor: shape and values as f32 (int64 tensors converted).
#[derive(Debug, Clone)]
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl Array {
    /// Rows along the first axis.
    pub fn item(&self, i: usize) -> &[f32] {
        let n = self.values.len() / self.shape[0];
        &self.values[i * n..(i + 1) * n]
    }
}

pub fn load_arrays(path: &Path) -> HashMap<String, Array> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).expect("fixture is safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::I8 => data.iter().map(|&b| b as i8 as f32).collect(),
                Dtype::I64 => data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
                other => panic!("unexpected dtype {other:?} for {name}"),
            };
            (
                name,
                Array {
                    shape: view.shape().to_vec(),
                    values,
                },
            )
        })
        .collect()
}

/// Decode `tools/make_fixtures.py`'s int8 adversarial codes: `code = k + 30 * base`, pixel =
/// origin + k * unit with origin x (base 0), 0.0 (base 1) or 1.0 (base 2).
pub fn decode_adv(x: &[f32], code: &[f32], unit: f32) -> Vec<f32> {
    x.iter()
        .zip(code)
        .map(|(&x, &c)| {
            let base = (c / 30.0).round();
            let k = c - 30.0 * base;
            let origin = match base as i32 {
                0 => x,
                1 => 0.0,
                _ => 1.0,
            };
            origin + k * unit
        })
        .collect()
}

/// max |a - b| / max |b|.
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    max_abs_diff(a, b) / scale
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

pub fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
}

/// A temporary folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "triscope-test-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The seven bundled HAM10000 samples (one per class) and their diagnoses.
pub const HAM_SAMPLES: [(&str, &str); 7] = [
    ("ISIC_0024470", "akiec"),
    ("ISIC_0024403", "bcc"),
    ("ISIC_0024324", "bkl"),
    ("ISIC_0024330", "df"),
    ("ISIC_0024410", "mel"),
    ("ISIC_0024317", "nv"),
    ("ISIC_0024370", "vasc"),
];

/// A HAM10000-layout folder at `root` made of the bundled samples: `split(i)` names each
/// row's split; with `masks`, the lesion masks of `tests/fixtures/ham_masks` beside them.
pub fn ham_folder(root: &Path, split: impl Fn(usize) -> &'static str, masks: bool) {
    std::fs::create_dir_all(root.join("images")).unwrap();
    if masks {
        std::fs::create_dir_all(root.join("masks")).unwrap();
    }
    let mut csv = String::from("image_id,lesion_id,dx,dx_type,age,sex,localization,split\n");
    for (i, (id, dx)) in HAM_SAMPLES.iter().enumerate() {
        std::fs::copy(
            sample(&format!("ham10000/{id}.jpg")),
            root.join("images").join(format!("{id}.jpg")),
        )
        .unwrap();
        if masks {
            std::fs::copy(
                fixture(&format!("ham_masks/{id}.png")),
                root.join("masks").join(format!("{id}.png")),
            )
            .unwrap();
        }
        csv.push_str(&format!(
            "{id},HAM_{i},{dx},histo,50.0,male,back,{}\n",
            split(i)
        ));
    }
    std::fs::write(root.join("labels.csv"), csv).unwrap();
}
