//! The parsing surface of Triscope, compiled from the library's own source files (by path)
//! without burn or egui, for the fuzz targets in `fuzz_targets/`. `targets.rs` holds the
//! target bodies; `tests/fuzz_corpus.rs` in the main package runs the same bodies on the
//! committed corpus in `cargo test --release`.
#![allow(dead_code, unused_imports)]

#[path = "../../triscope-lib/src/error.rs"]
pub mod error;
#[path = "../../triscope-lib/src/io/checkpoint.rs"]
#[doc(hidden)]
pub mod io_checkpoint;
#[path = "../../triscope-lib/src/io/dicom/mod.rs"]
#[doc(hidden)]
pub mod io_dicom;
#[path = "../../triscope-lib/src/io/imaging.rs"]
#[doc(hidden)]
pub mod io_imaging;
#[path = "../../triscope-lib/src/io/jpeg.rs"]
#[doc(hidden)]
pub mod io_jpeg;
#[path = "../../triscope-lib/src/io/jpeg2000.rs"]
#[doc(hidden)]
pub mod io_jpeg2000;
#[path = "../../triscope-lib/src/io/jpeg_lossless.rs"]
#[doc(hidden)]
pub mod io_jpeg_lossless;
#[path = "../../triscope-lib/src/io/limits.rs"]
#[doc(hidden)]
pub mod io_limits;
#[path = "../../triscope-lib/src/io/npy.rs"]
#[doc(hidden)]
pub mod io_npy;
#[path = "../../triscope-lib/src/model/config.rs"]
#[doc(hidden)]
pub mod model_config;
#[path = "../../triscope-lib/src/train/config/mod.rs"]
#[doc(hidden)]
pub mod train_config;
#[path = "../../triscope-lib/src/util/choice.rs"]
#[doc(hidden)]
pub mod util_choice;

/// The library's tree, as far as the parsers need it (the files above, under the names the
/// library gives them).
pub mod io {
    pub use crate::io_checkpoint as checkpoint;
    pub use crate::io_dicom as dicom;
    pub use crate::io_imaging as imaging;
    pub use crate::io_jpeg as jpeg;
    pub use crate::io_jpeg_lossless as jpeg_lossless;
    pub use crate::io_jpeg2000 as jpeg2000;
    pub use crate::io_limits as limits;
    pub use crate::io_npy as npy;
}

pub mod util {
    pub use crate::util_choice as choice;
}

pub mod model {
    pub use crate::model_config as config;
    pub use config::ModelConfig;
}

pub mod train {
    pub use crate::train_config as config;
    pub use config::TrainConfig;
}

pub use error::{Result, TriscopeError};

/// What `targets.rs` reaches the parsers through (the main package's test maps it to
/// `triscope`).
mod surface {
    pub use crate::io::{checkpoint, dicom, imaging, npy};
    pub use crate::train;
}

pub mod targets;
