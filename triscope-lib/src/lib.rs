//! Triscope: robust and explainable medical image classification. The library never imports a
//! UI toolkit: results leave it as plain data for the app, the command line and reports.
//!
//! Its modules, from the bottom layer up:
//!
//! - [`error`], [`util`]: the error type; file-system safety, the background-job policy,
//!   vector math, seeded random streams, statistics, the names of every choice.
//! - [`io`]: every file read or written: images and DICOM with their codecs, datasets and
//!   their annotations (labels, masks, boxes), checkpoints and weights files, figures.
//! - [`model`]: the ResNet-50 (torchvision layout) on burn, its fused CPU fast path, the
//!   compute devices and the way back from tensors to the host.
//! - [`inference`]: a loaded model answering in plain data; test-time augmentation, the
//!   out-of-distribution score, calibration.
//! - [`explain`], [`attack`]: Grad-CAM and the other attributions with their quality
//!   measures and concepts; FGSM, PGD, APGD, FAB and Square, and the one attack pipeline
//!   ([`attack::report`]) the app and the command line share.
//! - [`eval`], [`train`], [`audit`]: evaluation with its fooled-evaluation checks; clean,
//!   PGD-AT and TRADES training with resumable runs; the explanation audit.
//! - [`workbench`]: the app's model thread, its jobs and events.

pub mod attack;
pub mod audit;
pub mod error;
pub mod eval;
pub mod explain;
pub mod inference;
pub mod io;
pub mod model;
pub mod train;
pub mod util;
pub mod workbench;

pub use error::{Result, TriscopeError};
