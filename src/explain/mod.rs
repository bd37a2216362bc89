//! Explanations: Grad-CAM and the colour maps and overlays that show it.

pub mod colormap;
pub mod gradcam;

pub use colormap::{Colormap, heatmap_rgb8, overlay_rgb8};
pub use gradcam::{GradCamBatch, GradCamMap, TargetClass, grad_cam};
