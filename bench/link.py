"""Link inference throughput of Clusformer against the machine's GEMM peak.

For the presets small and paper at L=64, d=256, batch 256: sequences per second of the
model's inference pass, Clusformer.infer (the gather of the tokens and the CDE included),
in float32, with bf16 autocast, and with the weights cast to bf16 (what cf-link does with
--bf16); and, for comparison, the training forward (Clusformer.forward, the layers
written out, with no query-once saving) with bf16 weights. The
FLOPs per sequence counted analytically from the config, and the GFLOP/s achieved. The
peak is measured in the same run: torch.matmul of 4096 x 4096 in float32 and bf16.

    python bench/link.py [--quick] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from cftools.core.clusformer.grammar import centre_cosine
from cftools.core.clusformer.inference import cast_for_inference
from cftools.core.clusformer.model import Clusformer, flops_per_sequence, make_config, unit_rows
from cftools.core.runtime.precision import autocast_dtype


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def gemm_peak(dtype, device, reps):
    n = 4096
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.matmul(a, b)
    times = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / sorted(times)[len(times) // 2] / 1e9


@torch.no_grad()
def throughput(model, device, batch, d, L, mode, batches):
    g = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(20000, d, generator=g), dim=-1).to(device)
    order = torch.randint(0, feats.shape[0], (batch, L), generator=g).to(device)
    mask = torch.ones(batch, L, dtype=torch.bool, device=device)
    amp = torch.bfloat16 if mode == "bf16-autocast" else None
    if mode.startswith("bf16-weights"):
        model = cast_for_inference(model, torch.bfloat16)
    prepared = model.prepare(feats)
    unit = unit_rows(feats) if model.needs_cosine else None  # as cf-link: a cosine-skip model's input

    def step():
        # the raw cosine to the centre, outside autocast, as cf-link's run_batch computes it
        cosine = None if unit is None or mode.endswith("nn-forward") else centre_cosine(unit[order])
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            if mode.endswith("nn-forward"):
                return model(feats[order], mask)
            return model.infer(prepared, order, mask, cosine)

    step()  # warm-up: allocations, kernel selection
    sync(device)
    t = time.perf_counter()
    for _ in range(batches):
        step()
    sync(device)
    return batches * batch / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=256)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    bf16 = autocast_dtype(device, None) == torch.bfloat16
    reps = 3 if a.quick else 10
    L, d = 64, 256
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"bf16 {'yes' if bf16 else 'no'}")
    peaks = {"fp32": gemm_peak(torch.float32, device, reps)}
    if bf16:
        peaks["bf16"] = gemm_peak(torch.bfloat16, device, reps)
    rows = []
    modes = ["fp32"] + (["bf16-autocast", "bf16-weights", "bf16-weights-nn-forward"]
                        if bf16 else [])
    for preset in ("small", "paper"):
        config = make_config(preset, d, L)
        flops = flops_per_sequence(config)
        torch.manual_seed(0)
        model = Clusformer(config).to(device).eval()
        if preset == "paper" and device.type == "cpu":
            batches = 1 if a.quick else 4
        else:
            batches = 3 if a.quick else 10
        for mode in modes:
            rows.append((preset, mode, flops, throughput(model, device, a.batch_size, d, L, mode, batches)))
    # the peak again after the models, and the better of the two: on a shared machine a
    # single measurement can catch a busy moment
    after = {"fp32": gemm_peak(torch.float32, device, reps)}
    if bf16:
        after["bf16"] = gemm_peak(torch.bfloat16, device, reps)
    print("GEMM 4096^2 peak (before / after the models): " + ", ".join(
        f"{k} {peaks[k]:.0f} / {after[k]:.0f} GFLOP/s" for k in peaks))
    peaks = {k: max(peaks[k], after[k]) for k in peaks}
    print(f"{'preset':7s} {'mode':24s} {'MFLOP/seq':>10s} {'seq/s':>9s} {'GFLOP/s':>8s} {'of peak':>8s}")
    for preset, mode, flops, sps in rows:
        gf = sps * flops / 1e9
        peak = peaks["bf16" if mode != "fp32" else "fp32"]
        print(f"{preset:7s} {mode:24s} {flops / 1e6:10.1f} {sps:9.1f} {gf:8.1f} {gf / peak:8.1%}")

if __name__ == "__main__":
    main()
