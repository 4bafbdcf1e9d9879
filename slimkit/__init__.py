"""slimkit: compress trained PyTorch / Hugging Face models and measure what each step bought.

```python
import slimkit as sk
model, tok = sk.zoo.load_model("smollm2-135m")
res = sk.compress(model, {"steps": [{"prune": {"method": "magnitude", "sparsity": 0.5}}]})
sk.save(res.model, "out")
```
"""
from __future__ import annotations

__version__ = "0.1.0"

from slimkit import data, zoo
from slimkit.core.errors import CheckpointError, ConfigError, DataError, SlimkitError, UnsupportedModelError
from slimkit.core.recipe import Recipe, Step
from slimkit.core.registry import STEP_NAMES, methods_of
from slimkit.core.runner import Result, compress
from slimkit.stream import compress_stream
from slimkit.io.checkpoint import load, save
from slimkit.export import export
from slimkit import measure
from slimkit.measure import Accuracy, Agreement, CosineFidelity, Perplexity, TopKAgreement, as_evaluator
from slimkit.report import Report
from slimkit.search.recipes import SearchResult, search

__all__ = [
    "__version__",
    "compress",
    "compress_stream",
    "Result",
    "Recipe",
    "Step",
    "save",
    "load",
    "export",
    "measure",
    "zoo",
    "data",
    "Report",
    "search",
    "SearchResult",
    "Perplexity",
    "Accuracy",
    "CosineFidelity",
    "Agreement",
    "TopKAgreement",
    "as_evaluator",
    "STEP_NAMES",
    "methods_of",
    "SlimkitError",
    "ConfigError",
    "UnsupportedModelError",
    "DataError",
    "CheckpointError",
]
