//! Explanations: Grad-CAM and the other attribution methods, the colour maps and overlays that show it, and quality metrics.

pub mod attribution;
pub mod colormap;
pub mod faithfulness;
pub mod gradcam;
pub mod quality;
pub mod sanity;
pub mod tcav;

pub use attribution::{
    AttributionMap, AttributionOptions, IgQuadrature, Method, attribute, attribute_with,
};
pub use colormap::{Colormap, heatmap_rgb8, overlay_rgb8};
pub use gradcam::{GradCamBatch, GradCamMap, TargetClass, grad_cam};
