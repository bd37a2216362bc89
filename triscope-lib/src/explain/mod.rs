//! Explanations: Grad-CAM and the other attribution methods, the colour maps and overlays that
//! show it, quality metrics, and concepts (TCAV; the seven-point checklist's probes and CAVs).

pub mod attribution;
pub mod checklist;
pub mod colormap;
pub mod concept_bank;
pub mod concept_cache;
pub mod faithfulness;
pub mod folder;
pub mod gradcam;
pub mod quality;
pub mod sanity;
pub mod tcav;

pub use attribution::{
    AttributionMap, AttributionOptions, IgQuadrature, Method, attribute, attribute_with,
};
pub use colormap::{Colormap, heatmap_rgb8, overlay_rgb8};
pub use gradcam::{GradCamBatch, GradCamMap, TargetClass, grad_cam};
