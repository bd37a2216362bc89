#!/usr/bin/env python3
"""Weight-average (EMA) reference values for triscope-lib/src/train/ema.rs tests.

torch.optim.swa_utils.AveragedModel with get_ema_multi_avg_fn(decay) and use_buffers=True
(the average of weights and BatchNorm statistics, as timm's ModelEmaV2): a Linear(3, 2) and a
BatchNorm1d(2)'s running statistics, set to four successive states (as after four optimizer
steps), update_parameters after each; the flat average (parameters, then buffers, in module
order) after every update.

    python3 tools/make_ema_fixture.py > tests/fixtures/ema_torch.json
"""
import json

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

DECAY = 0.9
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2, track_running_stats=True))
# Integer buffers are not averaged by Triscope (ResNet-50 keeps none); leave it out here too.
del model[1].num_batches_tracked
model[1].register_buffer("num_batches_tracked", None)
ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(DECAY), use_buffers=True)


def flat(m):
    return torch.cat([t.detach().flatten() for t in list(m.parameters()) + list(m.buffers())
                      if t is not None and t.is_floating_point()]).tolist()


states, averages = [], []
for step in range(4):
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t is not None and t.is_floating_point():
                t.copy_(torch.randn_like(t))
    states.append(flat(model))
    ema.update_parameters(model)
    averages.append(flat(ema.module))
print(json.dumps({"torch": torch.__version__, "decay": DECAY, "states": states,
                  "averages": averages}, indent=1))
