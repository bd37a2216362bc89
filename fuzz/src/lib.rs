//! The parsing surface of Triscope, compiled from the library's own source files (by path)
//! without burn or egui, for the fuzz targets in `fuzz_targets/`. `targets.rs` holds the
//! target bodies; `tests/fuzz_corpus.rs` in the main package runs the same bodies on the
//! committed corpus in `cargo test --release`.
#![allow(dead_code, unused_imports)]

#[path = "../../triscope-lib/src/checkpoint.rs"]
pub mod checkpoint;
#[path = "../../triscope-lib/src/choice.rs"]
pub mod choice;
#[path = "../../triscope-lib/src/dicom/mod.rs"]
pub mod dicom;
#[path = "../../triscope-lib/src/error.rs"]
pub mod error;
#[path = "../../triscope-lib/src/imaging.rs"]
pub mod imaging;
#[path = "../../triscope-lib/src/jpeg.rs"]
pub mod jpeg;
#[path = "../../triscope-lib/src/jpeg2000.rs"]
pub mod jpeg2000;
#[path = "../../triscope-lib/src/jpeg_lossless.rs"]
pub mod jpeg_lossless;
#[path = "../../triscope-lib/src/limits.rs"]
pub mod limits;
#[path = "../../triscope-lib/src/npy.rs"]
pub mod npy;

#[path = "../../triscope-lib/src/model/config.rs"]
pub mod model_config;
#[path = "../../triscope-lib/src/train/config.rs"]
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
