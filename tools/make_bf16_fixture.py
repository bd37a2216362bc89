"""The bf16 parity fixture: PyTorch's convolutions with bf16 operands and f32 sums, which is
what Triscope's `--precision bf16` computes on the CPU (model::fast::bf16), on the narrow
fixture model and the inputs of parity_w8_c7.safetensors.

    python3 tools/make_bf16_fixture.py   (from the repository root; writes
                                          tests/fixtures/parity_bf16_w8_c7.safetensors)

Every Conv2d runs as conv2d(bf16(x), bf16(w)) in f32; BatchNorm, ReLU, pooling and the
linear head stay f32, as in Triscope. bf16(v) is round to nearest
even (torch's .bfloat16()). Also: PyTorch's own autocast bf16 for comparison (it keeps
activations in bf16 too), and the f32 outputs, so the test can state how far each is.

Keys: logits, embedding, layer4, autocast_logits (all 3 images), labels, and
order_logits: the same emulation with f64 sums, to show how far two orders of summation
already move the logits (bf16 rounding boundaries amplify it layer by layer). Input
gradients are not in it: through this random network's ReLUs they move by more than 100%
between bf16 and f32 in PyTorch itself, so no tolerance would mean anything; the bf16
backward is checked layer by layer against f32 ops on bf16-rounded operands
(tests/fast_path.rs) and bit for bit in the GEMM (model::fast::bf16's unit tests).
"""

import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import MEAN, OUT, STD, ResNet50  # noqa: E402


def r(t):
    return t.bfloat16().float()


def bf16_conv_forward(self, x):
    assert self.bias is None
    return F.conv2d(r(x), r(self.weight), None, self.stride, self.padding)


def bf16_conv_forward_f64(self, x):
    w = r(self.weight).double()
    return F.conv2d(r(x).double(), w, None, self.stride, self.padding).float()


def main():
    torch.manual_seed(0)
    net = ResNet50(8, 7, 3)
    net.load_state_dict(load_file(os.path.join(OUT, "resnet50_w8_c7.safetensors")))
    net.eval()
    parity = load_file(os.path.join(OUT, "parity_w8_c7.safetensors"))
    x, labels = parity["input"], parity["labels"]
    mean = torch.tensor(MEAN).view(1, -1, 1, 1)
    std = torch.tensor(STD).view(1, -1, 1, 1)

    plain_forward = torch.nn.Conv2d.forward
    with torch.no_grad():
        torch.nn.Conv2d.forward = bf16_conv_forward
        feats = net.features((x - mean) / std)
        logits = net.fc(feats[-1])
        torch.nn.Conv2d.forward = bf16_conv_forward_f64
        order_logits = net((x - mean) / std)
    torch.nn.Conv2d.forward = plain_forward

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_logits = net((x - mean) / std).float()
    f32_logits = parity["logits"]
    rel = lambda a, b: ((a - b).abs().max() / b.abs().max()).item()  # noqa: E731
    print(f"emulated bf16 vs f32 logits: {rel(logits, f32_logits):.4f} (max relative)")
    print(f"autocast bf16 vs f32 logits: {rel(autocast_logits, f32_logits):.4f}")
    print(f"emulated bf16, f64 vs f32 sums: {rel(order_logits, logits):.4f}")
    out = {
        "logits": logits.contiguous(),
        "embedding": feats[-1].contiguous(),
        "layer4": feats[3].contiguous(),
        "order_logits": order_logits.contiguous(),
        "autocast_logits": autocast_logits.contiguous(),
        "labels": labels,
    }
    path = os.path.join(OUT, "parity_bf16_w8_c7.safetensors")
    save_file(out, path, metadata={"source": "tools/make_bf16_fixture.py", "torch": torch.__version__})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
