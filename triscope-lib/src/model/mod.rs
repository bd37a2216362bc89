//! The ResNet-50 classifier: configuration, layer names, parameter sources and the network;
//! the compute devices it runs on and its tensors' way back to the host.

pub mod config;
pub mod device;
pub mod fast;
pub mod host;
pub mod layers;
pub mod resnet;
pub mod source;

pub use config::ModelConfig;
pub use layers::LayerId;
pub use resnet::{ForwardTaps, ResNet50, shades_of_gray};
