//! Triscope: robust and explainable medical image classification.
//!
//! The library holds the model ([`model`]), its weights ([`weights`]), the input pipeline
//! ([`imaging`]), explanations ([`explain`]) and the compute devices ([`device`]). It never
//! imports a UI toolkit: results leave it as plain data ([`inference`]).

pub mod attack;
pub mod attack_report;
pub mod audit;
pub mod calibrate;
pub mod checkpoint;
pub mod choice;
pub mod data;
pub mod device;
pub mod dicom;
pub mod error;
pub mod eval;
pub mod explain;
pub mod folder;
pub mod fsio;
pub mod ground_truth;
pub mod host;
pub mod imaging;
pub mod inference;
pub mod jobs;
pub mod jpeg;
pub mod jpeg2000;
pub mod jpeg_lossless;
pub mod limits;
pub mod model;
pub mod npy;
pub mod numeric;
pub mod ood;
pub mod plot;
pub mod regions;
pub mod rng;
pub mod stats;
pub mod train;
pub mod tta;
pub mod weights;
pub mod workbench;

pub use error::{Result, TriscopeError};
