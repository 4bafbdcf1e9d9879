"""Streaming holds one block, not the model: peak RSS measured in a subprocess by getrusage."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.stream.conftest import write_llama

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, {root!r})
    import torch, transformers, safetensors
    import slimkit as sk
    from slimkit.stream import api  # every import done before the baseline
    torch.set_num_threads(1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = sk.compress_stream({src!r}, [{{"quantize": {{"method": "rtn", "bits": 4, "group_size": 64}}}}], {out!r},
                             progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({{"base_kb": base, "peak_kb": peak, "input_bytes": res.report["stream"]["input_gb"] * 1e9}}))
""")


def test_peak_rss_well_below_weight_bytes(tmp_path: Path) -> None:
    # 8 blocks of ~50 MB float32 (+ a 16 MB tied embedding): ~395 MB of weights
    src = write_llama(tmp_path / "src", hidden=1024, inter=2816, layers=8, vocab=4096, shard="120MB")
    weights = sum(f.stat().st_size for f in src.glob("*.safetensors"))
    assert weights > 380e6
    script = CHILD.format(root=str(ROOT), src=str(src), out=str(tmp_path / "out"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    grew = (rec["peak_kb"] - rec["base_kb"]) * 1024
    assert abs(rec["input_bytes"] - weights) < 0.01 * weights
    # one block (~50 MB) and its int4 copy, the embedding and its int8 copies: well under 40 % of the weights
    assert grew < 0.4 * weights, f"peak grew {grew / 1e6:.0f} MB over the baseline for {weights / 1e6:.0f} MB of weights"
