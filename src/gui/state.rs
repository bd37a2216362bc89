//! What the app remembers between runs (eframe storage, one serde struct) and the plain
//! messages panels hand to the app.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use triscope::attack::AttackMethod;
use triscope::explain::Colormap;
use triscope::model::LayerId;

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
}

impl Tab {
    pub const ALL: [Tab; 3] = [Self::Explanation, Self::Layers, Self::Attack];
    pub fn label(self) -> &'static str {
        match self {
            Self::Explanation => "Explanation",
            Self::Layers => "Layers",
            Self::Attack => "Attack",
        }
    }
}

/// Explanation panel settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExplainSettings {
    pub alpha: f32,
    pub colormap: Colormap,
    pub layer: LayerId,
    pub show_heatmap: bool,
}

impl Default for ExplainSettings {
    fn default() -> Self {
        Self {
            alpha: 0.4,
            colormap: Colormap::Jet,
            layer: LayerId::Layer4,
            show_heatmap: true,
        }
    }
}

/// Attack panel settings; eps and step size in 1/255 units as the sliders show them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttackSettings {
    pub method: AttackMethod,
    pub eps_255: f32,
    pub step_255: f32,
    pub steps: usize,
    pub targeted: bool,
    pub target_class: usize,
}

impl Default for AttackSettings {
    fn default() -> Self {
        Self {
            method: AttackMethod::Pgd,
            eps_255: 2.0,
            step_255: 0.5,
            steps: 10,
            targeted: false,
            target_class: 0,
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
    /// Feature maps shown per layer.
    pub top_k: usize,
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
            top_k: 8,
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
    /// Attack settings changed: rerun the attack.
    RunAttack,
    TopKChanged,
}
