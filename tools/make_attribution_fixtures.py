#!/usr/bin/env python3
"""Reference fixtures for Triscope's attribution methods (pytorch-grad-cam and Captum).

    pip install torch grad-cam captum safetensors numpy
    python3 tools/make_attribution_fixtures.py     # writes tests/fixtures/attribution_w8_c7.safetensors

It reuses the fixture model (tests/fixtures/resnet50_w8_c7.safetensors) and the first two
inputs (the HAM10000 images) of tests/fixtures/parity_w8_c7.safetensors written by
tools/make_fixtures.py, so inputs are bit-identical to the ones the Rust tests feed.

Stored (float16 where the test tolerance allows, to stay small):
  predicted          top-1 class per image
  cam_<method>_<layer>   [2, 128, 128] pytorch-grad-cam maps (targets: predicted class)
                     methods gradcampp, xgradcam, layercam, hirescam, scorecam, eigencam
                     on layer4; gradcampp, layercam and scorecam also on layer3
  eigencam_<layer>_projection  [2, h, w] numpy's first-component projection (before ReLU)
  eigencam_<layer>_aligned     [2, 128, 128] the same map with Triscope's sign convention
                     (projection correlated positively with the channel sum of activations)
  ig_steps50         [2, 3, 128, 128] Captum IntegratedGradients (black baseline, 50 steps,
                     gausslegendre = Captum's default), target = predicted logit
  ig_delta           [2] Captum's convergence delta for the same call
  ig_delta_f64, ig_torch_f32_vs_f64  [2] the same IG in float64: its delta, and
                     max |IG_f32 - IG_f64| / max |IG_f64| (the conditioning of each image)
  ig_trapezoid_steps32 [1, 3, 128, 128] the same with method riemann_trapezoid, 32 steps
  saliency           [1, 3, 128, 128] Captum Saliency (abs=True), target = predicted logit
  saliency_torch_f32_vs_f64  [1] max |sal_f32 - sal_f64| / max |sal_f64| for the same call
  occlusion_w16_s8   [1, 3, 128, 128] Captum Occlusion, window (3, 16, 16), strides (3, 8, 8),
                     baseline 0, target = predicted logit
  occlusion_w20_s12  [1, 3, 128, 128] window 20 stride 12 (the last window is cut at the edge)
"""

import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import BASE_WIDTH, MEAN, NUM_CLASSES, STD, Normalized, ResNet50  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")


def cam(cls, wrapped, layer, x, targets):
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with cls(model=wrapped, target_layers=[layer]) as c:
        return torch.from_numpy(c(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])).float()


def aligned_eigencam(acts, size):
    """pytorch-grad-cam's get_2d_projection and post-processing, with Triscope's sign rule."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    projections, maps = [], []
    for a in acts:  # [K, h, w]
        m = a.reshape(a.shape[0], -1).T  # [hw, K]
        m = m - m.mean(axis=0)
        _, _, vt = np.linalg.svd(m, full_matrices=True)
        p = m @ vt[0]
        s = a.sum(axis=0).reshape(-1)
        if np.dot(p, s - s.mean()) < 0:
            p = -p
        projections.append(p.reshape(a.shape[1:]))
    cams = np.maximum(np.float32(projections), 0)
    scaled = scale_cam_image(cams, size)
    return torch.from_numpy(scale_cam_image(np.maximum(scaled, 0))).float()


def main():
    torch.manual_seed(0)
    model = ResNet50(BASE_WIDTH, NUM_CLASSES, 3)
    model.load_state_dict(load_file(os.path.join(FIX, "resnet50_w8_c7.safetensors")))
    model.eval()
    wrapped = Normalized(model, MEAN, STD).eval()
    x = load_file(os.path.join(FIX, "parity_w8_c7.safetensors"))["input"][:2].contiguous()
    with torch.no_grad():
        logits = wrapped(x)
    pred = logits.argmax(1)
    targets = pred.tolist()
    # The inputs are not stored again: the tests read parity_w8_c7.safetensors' input[:2].
    out = {"predicted": pred.to(torch.int64), "logits": logits}

    from pytorch_grad_cam import (
        EigenCAM,
        GradCAMPlusPlus,
        HiResCAM,
        LayerCAM,
        ScoreCAM,
        XGradCAM,
    )

    half = lambda t: t.to(torch.float16)  # noqa: E731
    plan = {
        "layer4": [
            ("gradcampp", GradCAMPlusPlus),
            ("xgradcam", XGradCAM),
            ("layercam", LayerCAM),
            ("hirescam", HiResCAM),
            ("scorecam", ScoreCAM),
            ("eigencam", EigenCAM),
        ],
        "layer3": [("gradcampp", GradCAMPlusPlus), ("layercam", LayerCAM), ("scorecam", ScoreCAM), ("eigencam", EigenCAM)],
    }
    import pytorch_grad_cam.score_cam as sc

    sc.tqdm.tqdm = lambda it, **kw: it  # silence the progress bars
    for layer_name, methods in plan.items():
        layer = getattr(model, layer_name)
        for name, cls in methods:
            m = cam(cls, wrapped, layer, x, targets)
            assert m.shape == (2, 128, 128), m.shape
            assert float(m.max()) > 0.5, f"degenerate {name} {layer_name}"
            out[f"cam_{name}_{layer_name}"] = half(m)
        with torch.no_grad():
            feats = model.features((x - wrapped.mean) / wrapped.std)  # l1, l2, l3, l4, emb
            acts = feats[int(layer_name[-1]) - 1].numpy()
        from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

        out[f"eigencam_{layer_name}_projection"] = torch.from_numpy(get_2d_projection(acts))
        out[f"eigencam_{layer_name}_aligned"] = half(aligned_eigencam(acts, (128, 128)))

    from captum.attr import IntegratedGradients, Occlusion, Saliency

    ig = IntegratedGradients(wrapped)
    attr, delta = ig.attribute(
        x, baselines=torch.zeros_like(x), target=pred, n_steps=50, return_convergence_delta=True
    )
    out["ig_steps50"] = half(attr.detach())
    out["ig_delta"] = delta.detach().float()
    attr_t = ig.attribute(x[:1], baselines=0.0, target=pred[:1], n_steps=32, method="riemann_trapezoid")
    out["ig_trapezoid_steps32"] = half(attr_t.detach())
    out["saliency"] = half(Saliency(wrapped).attribute(x[:1], target=pred[:1], abs=True).detach())
    occ = Occlusion(wrapped)
    out["occlusion_w16_s8"] = occ.attribute(
        x[:1], sliding_window_shapes=(3, 16, 16), strides=(3, 8, 8), baselines=0, target=pred[:1],
        perturbations_per_eval=32,
    ).detach().to(torch.float16)
    out["occlusion_w20_s12"] = occ.attribute(
        x[:1], sliding_window_shapes=(3, 20, 20), strides=(3, 12, 12), baselines=0, target=pred[:1],
        perturbations_per_eval=32,
    ).detach().to(torch.float16)

    # The same IG in float64: how far PyTorch's own float32 result is from it tells how
    # ill-conditioned the path integral is on this (untrained) model: its logit along the path
    # from black is rough, so input gradients flip with rounding (as in parity_w8_c7).
    model.double()
    w64 = Normalized(model, MEAN, STD).double().eval()
    a64, d64 = IntegratedGradients(w64).attribute(
        x.double(), baselines=torch.zeros_like(x).double(), target=pred, n_steps=50,
        return_convergence_delta=True,
    )
    a32 = attr.detach().double()
    out["ig_torch_f32_vs_f64"] = torch.stack(
        [(a32[b] - a64[b]).abs().max() / a64[b].abs().max() for b in range(len(a32))]
    ).float()
    out["ig_delta_f64"] = d64.detach().float()
    s64 = Saliency(w64).attribute(x[:1].double(), target=pred[:1], abs=True).detach()
    s32 = out["saliency"].double()  # float16-rounded: adds at most 4.9e-4 relative
    out["saliency_torch_f32_vs_f64"] = ((s32 - s64).abs().max() / s64.abs().max()).float().reshape(1)
    model.float()

    out = {k: v.detach().contiguous() for k, v in out.items()}
    path = os.path.join(FIX, "attribution_w8_c7.safetensors")
    save_file(out, path, metadata={"source": "tools/make_attribution_fixtures.py"})
    from importlib.metadata import version

    print(f"wrote {path} ({os.path.getsize(path)} bytes); predicted {targets}; "
          f"grad-cam {version('grad-cam')}, captum {version('captum')}, torch {torch.__version__}")
    print("ig delta", out["ig_delta"].tolist(), "f64", out["ig_delta_f64"].tolist())
    print("ig f32 vs f64", out["ig_torch_f32_vs_f64"].tolist(), "saliency", out["saliency_torch_f32_vs_f64"].tolist())


if __name__ == "__main__":
    main()
