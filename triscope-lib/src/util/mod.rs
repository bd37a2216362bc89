//! Small shared helpers with no domain of their own: file-system safety, the background-job
//! policy, vector math, seeded random streams, statistics and the names of every choice a
//! flag or menu offers.

pub mod choice;
pub mod fsio;
pub mod jobs;
pub mod numeric;
pub mod rng;
pub mod stats;
