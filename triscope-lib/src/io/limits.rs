//! The size and memory caps every decoder works under (images, DICOM frames, JPEG frames):
//! one place, so that no path is laxer than another.

/// Largest accepted side, in pixels, before decoding.
pub const MAX_IMAGE_SIDE: u32 = 40_000;
/// Most memory a decoder may claim for one image.
pub const MAX_DECODE_BYTES: u64 = 2 << 30;
/// Above [`PLAUSIBLE_DECODE_BYTES`], the decoded size may be at most this many times the
/// file's size: a few hundred bytes declaring a 30000x30000 image are refused before the
/// decoder allocates for it (deflate peaks near 1032:1, JPEG well below this).
pub const MAX_EXPANSION: u64 = 4096;
/// Decoded sizes up to this are accepted from any file size.
pub const PLAUSIBLE_DECODE_BYTES: u64 = 64 << 20;
