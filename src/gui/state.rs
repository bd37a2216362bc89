//! What the app remembers between runs (eframe storage, one serde struct) and the plain
//! messages panels hand to the app.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use triscope::attack::AttackMethod;
use triscope::audit::{AuditOptions, AuditRequest, TcavOptions};
use triscope::eval::{EvalAttack, EvalOptions};
use triscope::explain::Colormap;
use triscope::explain::attribution::Method;
use triscope::model::LayerId;
use triscope::train::TrainConfig;
use triscope::train::config::LossType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ThemeChoice {
    #[default]
    Dark,
    Light,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Tab {
    #[default]
    Explanation,
    Layers,
    Attack,
    Sweep,
    Compare,
    Concepts,
    Training,
    Audit,
}

impl Tab {
    pub const ALL: [Tab; 8] = [
        Self::Explanation,
        Self::Layers,
        Self::Attack,
        Self::Sweep,
        Self::Compare,
        Self::Concepts,
        Self::Training,
        Self::Audit,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Self::Explanation => "Explanation",
            Self::Layers => "Layers",
            Self::Attack => "Attack",
            Self::Sweep => "ε sweep",
            Self::Compare => "Compare",
            Self::Concepts => "Concepts",
            Self::Training => "Training",
            Self::Audit => "Audit",
        }
    }
}

/// Explanation panel settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExplainSettings {
    pub method: Method,
    pub alpha: f32,
    pub colormap: Colormap,
    pub layer: LayerId,
    pub show_heatmap: bool,
    /// Draw the image's lesion outline or expert boxes over the view, when it has them.
    pub show_ground_truth: bool,
}

impl Default for ExplainSettings {
    fn default() -> Self {
        Self {
            method: Method::GradCam,
            alpha: 0.4,
            colormap: Colormap::Jet,
            layer: LayerId::Layer4,
            show_heatmap: true,
            show_ground_truth: true,
        }
    }
}

/// Attack panel settings; eps and step size in 1/255 units as the sliders show them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttackSettings {
    pub method: AttackMethod,
    #[serde(alias = "eps_255")]
    pub eps_linf_x255: f32,
    pub step_255: f32,
    pub steps: usize,
    /// Square's query budget (its steps).
    pub queries: usize,
    pub targeted: bool,
    pub target_class: usize,
}

impl Default for AttackSettings {
    fn default() -> Self {
        Self {
            method: AttackMethod::Pgd,
            eps_linf_x255: 2.0,
            step_255: 0.5,
            steps: 10,
            queries: 1000,
            targeted: false,
            target_class: 0,
        }
    }
}

/// ε sweep panel settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SweepSettings {
    pub method: AttackMethod,
    pub steps: usize,
    /// Square's query budget at each ε.
    pub queries: usize,
    /// The budgets as typed (`0,0.5,1,2,4,8/255`).
    pub eps_list: String,
    /// Sweep the compare tab's model B beside the workbench's.
    pub with_b: bool,
}

impl Default for SweepSettings {
    fn default() -> Self {
        Self {
            method: AttackMethod::Pgd,
            steps: 10,
            queries: 1000,
            eps_list: "0,0.5,1,2,4,8/255".into(),
            with_b: true,
        }
    }
}

/// Everything persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SavedState {
    pub theme: ThemeChoice,
    /// UI scale (1.0 = egui's default; 1.3+ reads well on a projector).
    pub zoom: f32,
    pub tab: Tab,
    pub last_folder: Option<PathBuf>,
    pub last_image: Option<PathBuf>,
    /// A model file chosen in the app (`None`: the embedded default).
    pub model_path: Option<PathBuf>,
    pub explain: ExplainSettings,
    pub attack: AttackSettings,
    pub sweep: SweepSettings,
    /// Feature maps shown per layer.
    pub top_k: usize,
    pub training: TrainForm,
    pub audit: AuditForm,
}

impl Default for SavedState {
    fn default() -> Self {
        Self {
            theme: ThemeChoice::Dark,
            zoom: 1.15,
            tab: Tab::Explanation,
            last_folder: None,
            last_image: None,
            model_path: None,
            explain: ExplainSettings::default(),
            attack: AttackSettings::default(),
            sweep: SweepSettings::default(),
            top_k: 8,
            training: TrainForm::default(),
            audit: AuditForm::default(),
        }
    }
}

/// What a panel asks the app to do.
#[derive(Debug, Clone, PartialEq)]
pub enum UiAction {
    OpenImage(PathBuf),
    /// Explain this class (`None`: the predicted one).
    ExplainClass(Option<usize>),
    SelectLayer(LayerId),
    /// Explain with another attribution method.
    SelectMethod(Method),
    /// Attack settings changed: rerun the attack.
    RunAttack,
    /// Sweep the open image at these budgets (pixel units, ascending).
    RunSweep(Vec<f32>),
    CancelSweep,
    /// Open this budget of the sweep in the Attack tab.
    ShowSweepPoint(usize),
    /// Compare the workbench's model with this checkpoint on the open image.
    CompareWith(PathBuf),
    /// Attack the compared models with the Attack tab's request.
    AttackBoth,
    TopKChanged,
    /// Load this checkpoint as the workbench's model.
    LoadModel(PathBuf),
    /// Re-analyse the DICOM image with this window (`None`: the file's own).
    DicomWindow(Option<triscope::io::dicom::Window>),
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct MemoryStorage(HashMap<String, String>);

    impl eframe::Storage for MemoryStorage {
        fn get_string(&self, key: &str) -> Option<String> {
            self.0.get(key).cloned()
        }
        fn set_string(&mut self, key: &str, value: String) {
            self.0.insert(key.to_string(), value);
        }
        fn remove_string(&mut self, key: &str) {
            self.0.remove(key);
        }
        fn flush(&mut self) {}
    }

    #[test]
    fn saved_state_round_trips_through_eframe_storage() {
        let mut s = SavedState {
            theme: ThemeChoice::Light,
            zoom: 1.5,
            tab: Tab::Attack,
            last_folder: Some(PathBuf::from("/data/ham")),
            last_image: Some(PathBuf::from("/data/ham/a.jpg")),
            model_path: Some(PathBuf::from("/models/m.safetensors")),
            top_k: 12,
            ..SavedState::default()
        };
        s.explain.alpha = 0.7;
        s.explain.colormap = Colormap::Viridis;
        s.explain.layer = LayerId::Layer2;
        s.explain.show_ground_truth = false;
        s.attack.eps_linf_x255 = 4.0;
        s.attack.method = AttackMethod::ApgdCe;
        s.attack.targeted = true;
        s.attack.target_class = 3;
        let mut storage = MemoryStorage::default();
        eframe::set_value(&mut storage, eframe::APP_KEY, &s);
        let back: SavedState =
            eframe::get_value(&storage, eframe::APP_KEY).expect("stored state reads back");
        assert_eq!(back, s);
        // State written by an older version (fields missing) still loads, with defaults.
        eframe::Storage::set_string(&mut storage, eframe::APP_KEY, "(theme: Light)".into());
        let partial: SavedState = eframe::get_value(&storage, eframe::APP_KEY).expect("partial");
        assert_eq!(partial.theme, ThemeChoice::Light);
        assert_eq!(partial.attack, AttackSettings::default());
        assert!(
            partial.explain.show_ground_truth,
            "ground truth is shown by default"
        );
        // The budget's name before it became `eps_linf_x255` still reads.
        eframe::Storage::set_string(
            &mut storage,
            eframe::APP_KEY,
            "(attack: (eps_255: 5.0))".into(),
        );
        let older: SavedState = eframe::get_value(&storage, eframe::APP_KEY).expect("older");
        assert_eq!(older.attack.eps_linf_x255, 5.0);
    }
}

/// The form: a config file plus the fields a user most often changes (sent as overrides).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainForm {
    pub config_path: String,
    pub loss_type: LossType,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    #[serde(alias = "eps_255")]
    pub eps_linf_x255: f32,
    pub attack_steps: usize,
    pub base_width: usize,
    pub resolution: usize,
    pub data_root: String,
    /// Use at most this many training images (0 = all).
    pub train_limit: usize,
    pub val_limit: usize,
    /// Parent folder of run folders.
    pub runs_dir: String,
    /// A run folder to continue (its `last` checkpoint).
    pub resume_dir: String,
}

impl Default for TrainForm {
    fn default() -> Self {
        Self {
            config_path: "configs/quick_demo.yaml".into(),
            loss_type: LossType::Trades,
            epochs: 2,
            batch_size: 32,
            lr: 0.05,
            eps_linf_x255: 2.0,
            attack_steps: 2,
            base_width: 8,
            resolution: 64,
            data_root: "../shared/data/ham10000".into(),
            train_limit: 512,
            val_limit: 128,
            runs_dir: "runs".into(),
            resume_dir: String::new(),
        }
    }
}

impl TrainForm {
    /// Fill the fields from a config file's values.
    pub fn take_from(&mut self, c: &TrainConfig) {
        self.loss_type = c.robustness.loss_type;
        self.epochs = c.training.epochs;
        self.batch_size = c.training.batch_size;
        self.lr = c.training.lr;
        self.eps_linf_x255 = (c.robustness.attack.eps_linf * 255.0 * 100.0).round() / 100.0;
        self.attack_steps = c.robustness.attack.steps;
        self.base_width = c.architecture.base_width;
        self.resolution = c.input.resolution;
        // The config holds it absolute; the field shows it from the working directory, as
        // the override built from the field is read.
        let cwd = std::env::current_dir().unwrap_or_default();
        let root = c.data.root.strip_prefix(&cwd).unwrap_or(&c.data.root);
        self.data_root = root.display().to_string();
        self.train_limit = c.data.train_limit;
        self.val_limit = c.data.val_limit;
    }

    /// Write the form's fields into `c` (the config file's values, in the struct the YAML
    /// deserialises into); [`TrainConfig::validate`] checks the result.
    pub fn apply_to(&self, c: &mut TrainConfig) {
        let eps = self.eps_linf_x255 / 255.0;
        c.robustness.loss_type = self.loss_type;
        c.training.epochs = self.epochs;
        c.training.batch_size = self.batch_size;
        c.training.lr = self.lr;
        c.robustness.attack.eps_linf = eps;
        c.robustness.attack.steps = self.attack_steps;
        // The usual PGD step: 2.5 * eps / steps (Madry et al.).
        c.robustness.attack.alpha = 2.5 * eps / self.attack_steps.max(1) as f32;
        c.architecture.base_width = self.base_width;
        c.input.resolution = self.resolution;
        // Typed in the app, so relative to the working directory; absolute in the run's
        // config.yaml, as a `--set data.root=...` on the command line becomes.
        let root = PathBuf::from(self.data_root.trim());
        c.data.root = std::path::absolute(&root).unwrap_or(root);
        c.data.train_limit = self.train_limit;
        c.data.val_limit = self.val_limit;
    }
}

/// The Audit tab's form: a dataset, how much of it, and which parts of the audit run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditForm {
    /// A dataset folder or file, as `triscope audit --data` takes it.
    pub data: String,
    /// Split name; empty: test where there is one, else all.
    pub split: String,
    /// Images evaluated (0 = the whole split).
    pub images: usize,
    /// Images the explanation metrics run on.
    pub explain_samples: usize,
    /// L-inf radius of the attacks, /255.
    #[serde(alias = "eps_255")]
    pub eps_linf_x255: f32,
    /// FGSM and PGD-10 columns and the fooled-evaluation checks.
    pub robust: bool,
    /// The model-randomisation sanity check on two images.
    pub sanity: bool,
    pub tcav: bool,
    /// Parent folder of report folders.
    pub reports_dir: String,
}

impl Default for AuditForm {
    fn default() -> Self {
        Self {
            data: "../shared/data/ham10000".into(),
            split: "test".into(),
            images: 200,
            explain_samples: 21,
            eps_linf_x255: 2.0,
            robust: true,
            sanity: true,
            tcav: false,
            reports_dir: "audits".into(),
        }
    }
}

impl AuditForm {
    /// The audit of `model` (`None`: the embedded default) this form asks for, reported into
    /// a new folder `out` under the reports folder.
    pub fn request(&self, model: Option<PathBuf>, out: PathBuf) -> AuditRequest {
        let attacks = if self.robust {
            vec![EvalAttack::Clean, EvalAttack::Fgsm, EvalAttack::Pgd10]
        } else {
            vec![EvalAttack::Clean]
        };
        let split = self.split.trim();
        let defaults = AuditOptions::default();
        AuditRequest {
            model,
            data: PathBuf::from(self.data.trim()),
            split: (!split.is_empty()).then(|| split.to_string()),
            limit: (self.images > 0).then_some(self.images),
            options: AuditOptions {
                eval: EvalOptions {
                    attacks,
                    eps_linf: self.eps_linf_x255 / 255.0,
                    // The accuracy-against-eps sweep and the checks attack too.
                    eps_sweep: if self.robust {
                        defaults.eval.eps_sweep.clone()
                    } else {
                        Vec::new()
                    },
                    checks: self.robust,
                    ..defaults.eval.clone()
                },
                explain_samples: self.explain_samples,
                sanity_images: if self.sanity { 2 } else { 0 },
                tcav: self.tcav.then(TcavOptions::default),
                ..defaults
            },
            out,
        }
    }
}
