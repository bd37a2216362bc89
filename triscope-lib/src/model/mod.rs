//! The ResNet-50 classifier: configuration, layer names, parameter sources and the network.

pub mod config;
pub mod fast;
pub mod layers;
pub mod resnet;
pub mod source;

pub use config::ModelConfig;
pub use layers::LayerId;
pub use resnet::{ForwardTaps, ResNet50, shades_of_gray};
