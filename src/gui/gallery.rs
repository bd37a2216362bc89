//! The image list: bundled samples (with their ground truth) and an opened folder.

use std::path::{Path, PathBuf};

use eframe::egui;
use triscope::inference::Modality;
use triscope::io::ground_truth::GroundTruthIndex;

use super::state::UiAction;

/// Extensions the decoder reads (DICOM included).
pub use triscope::io::imaging::IMAGE_EXTENSIONS;

#[derive(Debug, Clone, PartialEq)]
pub struct GalleryEntry {
    pub path: PathBuf,
    /// File name without folders.
    pub name: String,
    /// Ground truth from a labels.csv beside the images, if any.
    pub truth: Option<String>,
    /// A bundled sample's dataset (its folder: `ham10000`, `nih-cxr14`), whose models it
    /// opens with.
    pub dataset: Option<String>,
}

impl GalleryEntry {
    /// A bundled sample's modality, from its dataset folder.
    pub fn modality(&self) -> Option<Modality> {
        Modality::of_dataset(self.dataset.as_deref()?)
    }
}

pub struct GalleryPanel {
    pub samples: Vec<GalleryEntry>,
    pub folder: Option<(PathBuf, Vec<GalleryEntry>)>,
    pub selected: Option<PathBuf>,
    pub actions: Vec<UiAction>,
}

impl GalleryPanel {
    pub fn new(samples_dir: &Path) -> Self {
        Self {
            samples: list_samples(samples_dir),
            folder: None,
            selected: None,
            actions: Vec::new(),
        }
    }

    /// The first sample of `modality`, else the first sample.
    pub fn first_sample_of(&self, modality: Option<Modality>) -> Option<PathBuf> {
        self.samples
            .iter()
            .find(|e| modality.is_some() && e.modality() == modality)
            .or(self.samples.first())
            .map(|e| e.path.clone())
    }

    /// The bundled sample at `path`, if it is one.
    pub fn sample(&self, path: &Path) -> Option<&GalleryEntry> {
        self.samples.iter().find(|e| e.path == path)
    }

    pub fn ui(&mut self, ui: &mut egui::Ui) {
        egui::ScrollArea::vertical()
            .auto_shrink([false, false])
            .show(ui, |ui| {
                if let Some((dir, entries)) = &self.folder {
                    ui.strong(format!("Folder: {}", file_name(dir)));
                    if entries.is_empty() {
                        ui.weak("no images in this folder");
                    }
                    Self::list(ui, entries, &mut self.selected, &mut self.actions);
                    ui.separator();
                }
                ui.strong("Samples");
                Self::list(ui, &self.samples, &mut self.selected, &mut self.actions);
                ui.add_space(6.0);
                ui.weak("Drop an image or a folder on the window to open it.");
            });
    }

    fn list(
        ui: &mut egui::Ui,
        entries: &[GalleryEntry],
        selected: &mut Option<PathBuf>,
        actions: &mut Vec<UiAction>,
    ) {
        for e in entries {
            let is_selected = selected.as_deref() == Some(e.path.as_path());
            let text = match &e.truth {
                Some(t) => format!("{}  ·  {t}", e.name),
                None => e.name.clone(),
            };
            let r = ui
                .selectable_label(is_selected, text)
                .on_hover_text(e.path.display().to_string());
            if r.clicked() && !is_selected {
                *selected = Some(e.path.clone());
                actions.push(UiAction::OpenImage(e.path.clone()));
            }
        }
    }
}

/// The last component of a path, for labels.
pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| p.display().to_string())
}

/// Images of a folder, sorted by name (not recursive), each with its label when a
/// labels.csv lists it ([`GroundTruthIndex::labels`]). A dataset root (`labels.csv` beside
/// `images/`) lists its `images/` folder.
pub fn list_folder(dir: &Path) -> std::io::Result<Vec<GalleryEntry>> {
    let images = dir.join("images");
    let dir = if dir.join("labels.csv").is_file() && images.is_dir() {
        images.as_path()
    } else {
        dir
    };
    // One index for the listing: its labels.csv is parsed once for all the images.
    let mut index = GroundTruthIndex::new();
    let mut out: Vec<GalleryEntry> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && is_image(p))
        .map(|path| GalleryEntry {
            name: file_name(&path),
            truth: index.labels(&path).map(|(_, labels)| labels.join(", ")),
            dataset: None,
            path,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub fn is_image(p: &Path) -> bool {
    triscope::io::imaging::has_image_extension(p)
}

/// The bundled samples listed in `labels.csv` (`image,label`), in file order.
fn list_samples(dir: &Path) -> Vec<GalleryEntry> {
    let Ok(csv) = std::fs::read_to_string(dir.join("labels.csv")) else {
        return Vec::new();
    };
    csv.lines()
        .skip(1)
        .filter_map(|line| {
            let (image, label) = line.split_once(',')?;
            let image = image.trim();
            let path = dir.join(image);
            path.is_file().then(|| GalleryEntry {
                name: file_name(&path),
                truth: Some(label.trim().replace('|', ", ")),
                dataset: image.split_once('/').map(|(folder, _)| folder.to_string()),
                path,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_come_with_their_labels() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples");
        let g = GalleryPanel::new(&dir);
        assert_eq!(g.samples.len(), 10);
        assert_eq!(g.samples[0].truth.as_deref(), Some("akiec"));
        let first_rgb = g
            .first_sample_of(Some(Modality::Dermoscopy))
            .expect("a sample");
        assert!(first_rgb.to_string_lossy().contains("ham10000"));
        let first_grey = g
            .first_sample_of(Some(Modality::Radiograph))
            .expect("a sample");
        assert!(first_grey.to_string_lossy().contains("nih-cxr14"));
        assert_eq!(g.samples[7].dataset.as_deref(), Some("nih-cxr14"));
        assert_eq!(g.samples[7].modality(), Some(Modality::Radiograph));
        let listed = list_folder(&dir.join("nih-cxr14")).expect("listing");
        assert_eq!(listed.len(), 3);
        // The samples' labels.csv one folder up names them as nih-cxr14/NAME.
        assert_eq!(
            listed[0].truth.as_deref(),
            Some("Cardiomegaly, Edema, Infiltration")
        );
    }

    #[test]
    fn a_dataset_folder_lists_its_images_with_their_labels() {
        let root = std::env::temp_dir().join(format!("triscope-gallery-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("images")).expect("dir");
        for name in ["00000001_000.png", "00000002_000.png", "00000003_000.png"] {
            image::GrayImage::new(4, 4)
                .save(root.join("images").join(name))
                .expect("png");
        }
        std::fs::write(
            root.join("labels.csv"),
            "Image Index,Finding Labels,Patient ID,split\n00000001_000.png,Effusion|Mass,1,test\n\
             00000002_000.png,No Finding,2,test\n",
        )
        .expect("csv");
        let want = [
            Some("Effusion, Mass".to_string()),
            Some("No Finding".to_string()),
            None,
        ];
        // The dataset root lists images/, and so does images/ itself.
        for dir in [root.clone(), root.join("images")] {
            let listed = list_folder(&dir).expect("listing");
            let truth: Vec<Option<String>> = listed.iter().map(|e| e.truth.clone()).collect();
            assert_eq!(truth, want, "{}", dir.display());
            assert!(listed[0].path.starts_with(root.join("images")));
        }
        // HAM10000 (image_id, dx) and image,label tables name their images differently.
        std::fs::write(
            root.join("labels.csv"),
            "image_id,lesion_id,dx,split\n00000003_000,HAM_1,mel,test\n",
        )
        .expect("csv");
        let listed = list_folder(&root).expect("listing");
        assert_eq!(listed[2].truth.as_deref(), Some("mel"));
        std::fs::write(
            root.join("labels.csv"),
            "image,label,patient_id,split\nimages/00000001_000.png,pneumonia,p1,test\n",
        )
        .expect("csv");
        let listed = list_folder(&root).expect("listing");
        assert_eq!(listed[0].truth.as_deref(), Some("pneumonia"));
        let _ = std::fs::remove_dir_all(&root);
    }
}
