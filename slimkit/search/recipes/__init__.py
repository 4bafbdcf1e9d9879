"""Search over whole recipes (``sk.search``): spaces of recipe knobs, multi-objective Optuna
studies (``tpe`` / ``nsga2`` / ``random``), constraints, resumable and shared storage, outputs.

```python
sr = sk.search(model, "space.yaml", calib=calib, eval=sk.Perplexity(held_out),
               objectives=("bytes", "quality"), constraints=["quality_drop <= 0.02"],
               n_trials=40, out_dir="search-out")
```
"""
from slimkit.search.recipes.api import search
from slimkit.search.recipes.builtin import builtin_space
from slimkit.search.recipes.goals import Constraint, Objective, parse_constraints, parse_objectives
from slimkit.search.recipes.knobs import RecipeSpace
from slimkit.search.recipes.pruning import PRUNERS, PrunerConfig
from slimkit.search.recipes.result import Candidate, SearchResult
from slimkit.search.recipes.students import student_space

__all__ = ["search", "SearchResult", "Candidate", "RecipeSpace", "Objective", "Constraint", "parse_objectives",
           "parse_constraints", "builtin_space", "student_space", "PrunerConfig", "PRUNERS"]
