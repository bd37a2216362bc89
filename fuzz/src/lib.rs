//! The parsing surface of Triscope, compiled from the library's own source files (by path)
//! without burn or egui, for the fuzz targets in `fuzz_targets/`. `targets.rs` holds the
//! target bodies; `tests/fuzz_corpus.rs` in the main package runs the same bodies on the
//! committed corpus in `cargo test --release`.
#![allow(dead_code, unused_imports)]

#[path = "../../src/checkpoint.rs"]
pub mod checkpoint;
#[path = "../../src/dicom.rs"]
pub mod dicom;
#[path = "../../src/error.rs"]
pub mod error;
#[path = "../../src/imaging.rs"]
pub mod imaging;
#[path = "../../src/jpeg.rs"]
pub mod jpeg;
#[path = "../../src/jpeg2000.rs"]
pub mod jpeg2000;
#[path = "../../src/jpeg_lossless.rs"]
pub mod jpeg_lossless;
#[path = "../../src/limits.rs"]
pub mod limits;
#[path = "../../src/npy.rs"]
pub mod npy;

#[path = "../../src/model/config.rs"]
pub mod model_config;
#[path = "../../src/train/config.rs"]
pub mod train_config;

/// `crate::model` and `crate::train` as the library names them.
pub mod model {
    pub use crate::model_config as config;
    pub use crate::model_config::ModelConfig;
}

pub mod train {
    pub use crate::train_config as config;
    pub use crate::train_config::TrainConfig;
}

pub use error::{Result, TriscopeError};

/// What `targets.rs` reaches the parsers through (the main package's test maps it to
/// `triscope`).
mod surface {
    pub use crate::{checkpoint, dicom, imaging, npy, train};
}

pub mod targets;
