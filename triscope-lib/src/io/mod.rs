//! What Triscope reads and writes: images (PNG, JPEG, TIFF, BMP, and DICOM with its JPEG,
//! JPEG-LS, JPEG-Lossless and JPEG 2000 codecs) under shared size caps, datasets and their
//! annotations (labels, masks, boxes), checkpoints and weights files, NumPy arrays and figures.

pub mod checkpoint;
pub mod data;
pub mod dicom;
pub mod ground_truth;
pub mod imaging;
pub mod jpeg;
pub mod jpeg2000;
pub mod jpeg_lossless;
pub mod limits;
pub mod npy;
pub mod plot;
pub mod regions;
pub mod weights;
