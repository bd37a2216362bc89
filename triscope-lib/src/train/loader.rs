//! Batches decoded (and augmented) on worker threads ahead of the model.
//!
//! Workers take batch numbers from a shared counter, decode the batch and send it over a
//! bounded channel; the consumer hands batches out in order. A worker never runs more than
//! `prefetch` batches ahead of the consumer.
//!
//! Each image's augmentation draws from a generator keyed by (seed, epoch, sample index), so
//! the result does not depend on which thread decoded it or when. The background swap's draws
//! (whether, and with whose skin) come from their own key, so the other augmentations draw as
//! they did before it existed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::augment::{AugmentParams, augment_with_mask, swap_background};
use crate::error::{Result, TriscopeError};
use crate::io::data::{Dataset, Label};
use crate::io::imaging::{PixelImage, ResizeMode};
use crate::io::regions::RegionSource;
use crate::util::rng::{keyed_rng, stream};

/// One batch on the host: `[n, C, H, W]` pixels in [0, 1] and the labels.
#[derive(Debug, Clone)]
pub struct HostBatch {
    /// Position of the batch in the epoch (0-based).
    pub index: usize,
    pub pixels: Vec<f32>,
    pub labels: Vec<Label>,
    pub shape: [usize; 4],
    /// Each image's lesion mask as it moved with the image (1 = lesion, bilinear in between),
    /// when the spec asks for them: `[n, H, W]`.
    pub lesion: Option<Vec<f32>>,
}

/// What the workers need to know.
#[derive(Debug, Clone)]
pub struct LoaderSpec {
    pub channels: usize,
    pub resolution: usize,
    /// Augmentation and the seed/epoch keying its generator; None = plain images.
    pub augment: Option<(AugmentParams, u64, usize)>,
    /// The lesion masks of `augment`'s `background_swap` and of `with_lesion` (every image's;
    /// checked by the trainer).
    pub lesion_masks: Option<RegionSource>,
    /// Hand out each image's lesion mask with it (`HostBatch::lesion`; needs `lesion_masks`).
    pub with_lesion: bool,
    pub workers: usize,
    pub prefetch: usize,
}

/// The order of `n` samples in `epoch` (Fisher-Yates on the keyed generator).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = keyed_rng(seed, stream::SHUFFLE, epoch as u64, 0);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Ordered batches from worker threads. Dropping it stops the workers.
pub struct Loader {
    rx: Receiver<(usize, Result<HostBatch>)>,
    pending: BTreeMap<usize, Result<HostBatch>>,
    next: usize,
    total: usize,
    consumed: Arc<AtomicUsize>,
    quit: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Loader {
    /// Start workers over `batches` (sample indices of `dataset` per batch, in order).
    pub fn spawn(dataset: Arc<Dataset>, batches: Vec<Vec<usize>>, spec: LoaderSpec) -> Self {
        let total = batches.len();
        let (tx, rx) = sync_channel(spec.prefetch.max(1));
        let counter = Arc::new(AtomicUsize::new(0));
        let consumed = Arc::new(AtomicUsize::new(0));
        let quit = Arc::new(AtomicBool::new(false));
        let batches = Arc::new(batches);
        let tx = Arc::new(Mutex::new(tx));
        let handles = (0..spec.workers.max(1).min(total.max(1)))
            .filter_map(|w| {
                let (dataset, batches, spec) = (dataset.clone(), batches.clone(), spec.clone());
                let (counter, consumed, quit) = (counter.clone(), consumed.clone(), quit.clone());
                let tx: SyncSender<_> = match tx.lock() {
                    Ok(t) => t.clone(),
                    Err(_) => return None,
                };
                std::thread::Builder::new()
                    .name(format!("triscope-loader-{w}"))
                    .spawn(move || {
                        worker(&dataset, &batches, &spec, &counter, &consumed, &quit, &tx)
                    })
                    .ok()
            })
            .collect();
        Self {
            rx,
            pending: BTreeMap::new(),
            next: 0,
            total,
            consumed,
            quit,
            handles,
        }
    }
}

fn worker(
    dataset: &Dataset,
    batches: &[Vec<usize>],
    spec: &LoaderSpec,
    counter: &AtomicUsize,
    consumed: &AtomicUsize,
    quit: &AtomicBool,
    tx: &SyncSender<(usize, Result<HostBatch>)>,
) {
    loop {
        let i = counter.fetch_add(1, Ordering::SeqCst);
        if i >= batches.len() {
            return;
        }
        // Stay within `prefetch` batches of the consumer.
        while i >= consumed.load(Ordering::SeqCst) + spec.prefetch.max(1) {
            if quit.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if quit.load(Ordering::SeqCst) {
            return;
        }
        let batch = load_batch(dataset, i, &batches[i], spec);
        if tx.send((i, batch)).is_err() {
            return;
        }
    }
}

fn load_batch(
    dataset: &Dataset,
    index: usize,
    samples: &[usize],
    spec: &LoaderSpec,
) -> Result<HostBatch> {
    let (c, r) = (spec.channels, spec.resolution);
    let mut pixels = Vec::with_capacity(samples.len() * c * r * r);
    let mut labels = Vec::with_capacity(samples.len());
    let masks = spec.lesion_masks.as_ref();
    let mut lesion =
        (spec.with_lesion && masks.is_some()).then(|| Vec::with_capacity(samples.len() * r * r));
    for &k in samples {
        let mut img = dataset.load(k, c, r, ResizeMode::ShorterSideCrop)?;
        // `[r, r]`, 1 = lesion.
        let mut own_mask = match (masks, &lesion) {
            (Some(masks), Some(_)) => Some(mask_image(&lesion_mask(dataset, masks, k, r)?, r)),
            _ => None,
        };
        if let Some((params, seed, epoch)) = &spec.augment {
            if let Some(masks) = masks {
                let mut rng = keyed_rng(*seed, stream::BACKGROUND, *epoch as u64, k as u64);
                if rng.next_f32() < params.background_swap {
                    // Another image of the set (never this one).
                    let n = dataset.len().max(2) as u64;
                    let donor = (k as u64 + 1 + rng.next_u64() % (n - 1)) as usize % dataset.len();
                    let donor_img = dataset.load(donor, c, r, ResizeMode::ShorterSideCrop)?;
                    let mask = lesion_mask(dataset, masks, k, r)?;
                    let donor_mask = lesion_mask(dataset, masks, donor, r)?;
                    swap_background(&mut img, &mask, &donor_img, &donor_mask);
                }
            }
            let mut rng = keyed_rng(*seed, stream::AUGMENT, *epoch as u64, k as u64);
            (img, own_mask) = augment_with_mask(&img, own_mask.as_ref(), params, &mut rng);
        }
        pixels.extend_from_slice(&img.data);
        labels.push(dataset.samples[k].label.clone());
        if let (Some(out), Some(m)) = (&mut lesion, own_mask) {
            out.extend_from_slice(&m.data);
        }
    }
    Ok(HostBatch {
        index,
        pixels,
        labels,
        shape: [samples.len(), c, r, r],
        lesion,
    })
}

/// A `[side, side]` mask as a 1-channel image of 0s and 1s.
fn mask_image(mask: &[bool], side: usize) -> PixelImage {
    PixelImage {
        channels: 1,
        height: side,
        width: side,
        data: mask.iter().map(|&m| f32::from(u8::from(m))).collect(),
    }
}

/// Sample `k`'s lesion mask at `resolution`, as its image is prepared; an error naming the
/// image when it has none (the trainer checked they all do, so one gone since is a fault).
fn lesion_mask(
    dataset: &Dataset,
    masks: &RegionSource,
    k: usize,
    resolution: usize,
) -> Result<Vec<bool>> {
    let path = dataset.samples[k].path().ok_or_else(|| {
        TriscopeError::InvalidArgument(format!(
            "sample {k} of {} is not a file, so it has no lesion mask",
            dataset.root.display()
        ))
    })?;
    masks
        .regions(path, resolution, ResizeMode::ShorterSideCrop)?
        .into_iter()
        .next()
        .map(|region| region.mask)
        .ok_or_else(|| TriscopeError::BadImage {
            path: path.to_path_buf(),
            reason: "its lesion mask disappeared during training".into(),
        })
}

impl Iterator for Loader {
    type Item = Result<HostBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.total {
            return None;
        }
        loop {
            if let Some(b) = self.pending.remove(&self.next) {
                self.next += 1;
                self.consumed.store(self.next, Ordering::SeqCst);
                return Some(b);
            }
            match self.rx.recv() {
                Ok((i, b)) => {
                    self.pending.insert(i, b);
                }
                Err(_) => {
                    self.next = self.total;
                    return Some(Err(TriscopeError::Compute(
                        "the data loader threads stopped early".into(),
                    )));
                }
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.quit.store(true, Ordering::SeqCst);
        // Unblock senders, then wait for the workers.
        while self.rx.try_recv().is_ok() {}
        for h in self.handles.drain(..) {
            while !h.is_finished() {
                while self.rx.try_recv().is_ok() {}
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations_and_keyed() {
        let a = epoch_order(50, 7, 0);
        let b = epoch_order(50, 7, 0);
        let c = epoch_order(50, 7, 1);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        let mut x = keyed_rng(1, 2, 3, 4);
        let mut y = keyed_rng(1, 2, 3, 5);
        assert_ne!(x.next_u64(), y.next_u64());
    }
}
