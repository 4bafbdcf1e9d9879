"""``strategy="gradient"``: differentiable per-layer sparsity allocation, then TPE over the result.

What it does, exactly (and what it does not):

1. It needs a space with a ``prune`` step whose methods are unstructured ``magnitude``, ``wanda``
   or ``sparsegpt`` (plus ``none``), and the model and calibration data of ``sk.search``. The
   step's ``sparsity`` knob gives the *budgets*: its choices, the points of a stepped range (at
   most ``max_budgets``, evenly spread), ``max_budgets`` evenly spread points of a continuous range,
   or its one fixed value.
2. For each method and budget it learns one sparsity per selected layer on the model, by gradient
   descent (``torch.optim.Adam``): layer ``l`` has a learnable logit ``θ_l``, its sparsity is
   ``s_l = max_sparsity · sigmoid(θ_l)`` (all start at the budget), and its weights are multiplied by
   a relaxed mask ``sigmoid((r - s_l) / τ)``, where ``r`` is each weight's rank in ``[0, 1)`` by the
   method's importance (``|W|`` over the layer for magnitude; ``|W| · ‖X_j‖`` within each output row
   for Wanda, and for SparseGPT as a proxy: SparseGPT's own mask comes from its OBS sweep, which
   is not relaxed here). The temperature ``τ`` anneals geometrically from ``temperature_start`` to
   ``temperature_end``. The loss is the output divergence to the input model on the calibration
   batches (KL of the softmax for outputs with ``logits``, else the MSE over the reference's
   variance), divided by its value at the start, plus ``penalty · (kept - (1 - budget))²`` with
   ``kept`` the fraction of the selected weights kept. The masked weights stand in for the
   layers' parameters during each forward pass only (put back afterwards, also on errors), so the
   input model ends unchanged.
3. The learned sparsities are discretized into a per-layer map ``{layer name: sparsity}`` (4
   decimals) whose weight-weighted mean is the budget (a common shift, found by bisection, before
   rounding), so a map prunes as many weights as the uniform step would (up to the rounding).
4. The prune step's ``sparsity`` knob is replaced by a choice among these maps (per method), and
   the space so changed is searched with TPE like ``strategy="tpe"``: the other knobs, the method and
   which budget's map are TPE's choices; every candidate is an ordinary recipe (the map replays
   without searching) evaluated by the same trial loop.

The maps are computed once per study, under the store's lock, and kept in the study's user
attributes, so every worker and every resume of the study uses the same maps. Cost: for each method
and budget ``steps`` forward and backward passes through the model on one calibration batch each, on
the device the model is on; the ranks take float32 memory equal to the selected weights'.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from slimkit.core.errors import ConfigError
from slimkit.search.recipes.knobs import NONE_METHOD, Knob, RecipeSpace, StepSpace

__all__ = ["GradientConfig", "gradient_plan", "learn_sparsity_maps", "budgets_of", "METHODS"]

#: prune methods whose per-layer sparsity the strategy learns
METHODS = ("magnitude", "wanda", "sparsegpt")
#: options that decide which layers the step prunes: fixed values only
_SELECTION = ("targets", "ignore", "layer_types", "scope", "pattern", "allocation")
_ATTR = "slimkit_gradient_maps"


@dataclasses.dataclass(frozen=True)
class GradientConfig:
    """Settings of the allocation learning (see the module docstring)."""

    steps: int = 80
    lr: float = 0.1
    penalty: float = 100.0
    temperature_start: float = 0.05
    temperature_end: float = 0.005
    max_sparsity: float = 0.95
    max_budgets: int = 8

    def __post_init__(self) -> None:
        for name, low in (("steps", 1), ("max_budgets", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"gradient {name} = {value!r} must be an integer >= {low}")
        for name in ("lr", "penalty", "temperature_start", "temperature_end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"gradient {name} = {value!r} must be a number > 0")
        if not 0.0 < self.max_sparsity < 1.0:
            raise ConfigError(f"gradient max_sparsity = {self.max_sparsity!r} must be in (0, 1)")


def gradient_plan(plan: Any, study: Any, store: Any, cfg: GradientConfig | None = None) -> Any:
    """``plan`` with its space's prune ``sparsity`` knob replaced by learned per-layer maps."""
    cfg = cfg or GradientConfig()
    model, calib = getattr(plan.evaluate, "model", None), getattr(plan.evaluate, "calib", None)
    if not isinstance(model, nn.Module) or not calib:
        raise ConfigError("strategy 'gradient' learns per-layer sparsities on the model with calibration data: "
                          "call sk.search(model, space, calib=[...], strategy='gradient') (got "
                          f"model={type(model).__name__}, calib={'given' if calib else None})")
    steps = _prune_steps(plan.space)
    key = {"space": plan.space.signature(), "seed": int(plan.seed), "config": dataclasses.asdict(cfg)}
    with store.lock():
        stored = study.user_attrs.get(_ATTR)
        if isinstance(stored, Mapping) and stored.get("key") == key:
            maps = stored["maps"]
        else:
            maps = {str(s.index): {m: [[b, learn] for b, learn in _learn_step(model, calib, s, m, cfg, plan.seed)]
                                   for m in _methods(s)} for s in steps}
            study.set_user_attr(_ATTR, {"key": key, "maps": maps})
    new_steps = tuple(_with_maps(s, maps[str(s.index)]) if str(s.index) in maps else s for s in plan.space.steps)
    return dataclasses.replace(plan, space=dataclasses.replace(plan.space, steps=new_steps))


def _prune_steps(space: RecipeSpace) -> list[StepSpace]:
    found = []
    for s in space.steps:
        if s.name != "prune":
            continue
        methods = [m for m in s.method.candidates() if m != NONE_METHOD]
        if methods and all(m in METHODS for m in methods):
            found.append(s)
    if not found:
        raise ConfigError("strategy 'gradient' needs a prune step whose methods are among "
                          f"{list(METHODS)} (plus 'none') in the space; the space has steps "
                          f"{[(s.name, s.method.candidates()) for s in space.steps]}")
    for s in found:
        for knob in s.knobs:
            if knob.name in _SELECTION and knob.value is None and (knob.choice is not None or knob.is_range):
                raise ConfigError(f"strategy 'gradient': space steps[{s.index}].prune.{knob.name} is a knob "
                                  f"({knob.to_dict()!r}); the layers the step prunes must be fixed to learn their "
                                  "sparsities")
    return found


def _methods(step: StepSpace) -> list[str]:
    return [m for m in step.method.candidates() if m != NONE_METHOD]


def budgets_of(knob: Knob | None, max_budgets: int) -> list[float]:
    """The global sparsities to learn maps for, from the step's ``sparsity`` knob (see the module docstring)."""
    if knob is None:
        return [0.5]  # the prune methods' default sparsity
    if knob.choice is not None:
        values = list(knob.choice)
    elif knob.is_range:
        lo, hi = float(knob.low), float(knob.high)
        if knob.step is not None:
            values = list(np.arange(lo, hi + 1e-9, float(knob.step)))
            if len(values) > max_budgets:
                idx = np.unique(np.round(np.linspace(0, len(values) - 1, max_budgets)).astype(int))
                values = [values[i] for i in idx]
        else:
            values = list(np.linspace(lo, hi, max_budgets))
    else:
        values = [knob.value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"strategy 'gradient': the prune sparsity knob's value {v!r} is not one number; "
                              "give global sparsities (the strategy learns the per-layer maps)")
    return sorted({round(float(v), 6) for v in values})


def _sparsity_knob(step: StepSpace) -> Knob | None:
    return next((k for k in step.knobs if k.name == "sparsity"), None)


def _learn_step(model: nn.Module, calib: Sequence[Any], step: StepSpace, method: str, cfg: GradientConfig,
                seed: int) -> list[tuple[float, dict[str, float]]]:
    from slimkit.core.context import RunContext
    from slimkit.core.recipe import Recipe
    from slimkit.search.prune_levels import _layers

    budgets = budgets_of(_sparsity_knob(step), cfg.max_budgets)
    options: dict[str, Any] = {"method": method, "sparsity": budgets[0]}
    for knob in step.knobs:
        if knob.name in _SELECTION and knob.active({"method": method}) and knob.choice is None and not knob.is_range:
            options[knob.name] = knob.value
    built = Recipe.from_dict({"steps": [{"prune": options}]}).steps[0]
    layers = _layers(model, built, RunContext(calib=list(calib), show_progress=False))
    maps = learn_sparsity_maps(model, list(calib), layers, method, budgets, cfg, seed)
    return list(zip(budgets, maps))


def learn_sparsity_maps(model: nn.Module, calib: list[Any], layers: list[tuple[str, nn.Module]], method: str,
                        budgets: Sequence[float], cfg: GradientConfig, seed: int = 0) -> list[dict[str, float]]:
    """One per-layer sparsity map per budget (see the module docstring, steps 2 and 3)."""
    torch.manual_seed(seed)
    ranks = _ranks(model, calib, layers, method)
    weights = [m.weight.detach() for _, m in layers]
    numel = torch.tensor([float(w.numel()) for w in weights], dtype=torch.float64)
    with torch.no_grad():
        refs = [_forward(model, {}, b) for b in calib]
    return [_learn_one(model, calib, refs, layers, weights, ranks, numel, b, cfg) for b in budgets]


def _ranks(model: nn.Module, calib: list[Any], layers: list[tuple[str, nn.Module]], method: str) -> list[torch.Tensor]:
    """Each weight's importance rank in [0, 1): over the layer (magnitude) or its row (wanda / sparsegpt)."""
    scores = [m.weight.detach().abs().float() for _, m in layers]
    if method != "magnitude":
        from slimkit.core.inputs import run_with_hooks

        norms: dict[int, torch.Tensor] = {}

        def hook(i: int) -> Any:
            def add(_m: nn.Module, args: tuple[Any, ...], _out: Any) -> None:
                x = args[0].detach().float().reshape(-1, args[0].shape[-1])
                norms[i] = norms.get(i, torch.zeros(x.shape[1])) + x.pow(2).sum(0)
            return add

        handles = [m.register_forward_hook(hook(i)) for i, (_, m) in enumerate(layers)]
        run_with_hooks(model, calib, handles)
        scores = [s * norms[i].sqrt()[None, :] if i in norms else s for i, s in enumerate(scores)]
    out = []
    for s in scores:
        rows = s.reshape(s.shape[0], -1) if method != "magnitude" else s.reshape(1, -1)
        order = rows.argsort(dim=1).argsort(dim=1).float() / rows.shape[1]
        out.append(order.reshape(s.shape))
    return out


def _forward(model: nn.Module, overrides: dict[nn.Module, torch.Tensor], batch: Any) -> Any:
    """The model's output with each module's weight replaced by ``overrides[module]`` for this call
    (the parameters are put back afterwards, also on errors)."""
    from slimkit.core.inputs import call_model

    saved = {}
    try:
        for module, weight in overrides.items():
            order = list(module._parameters)
            saved[module] = (order, module._parameters.pop("weight"))
            module.weight = weight  # a plain tensor attribute for this forward pass
        return call_model(model, batch)
    finally:
        for module, (order, param) in saved.items():
            del module.weight
            restored = {k: param if k == "weight" else module._parameters[k] for k in order}
            module._parameters.clear()
            module._parameters.update(restored)  # the original order: state_dict (and fingerprints) unchanged


def _divergence(out: Any, ref: Any) -> torch.Tensor:
    from slimkit.core.inputs import output_tensor

    y, r = output_tensor(out).float(), output_tensor(ref).float()
    if getattr(ref, "logits", None) is not None:
        logp, logq = F.log_softmax(r, dim=-1), F.log_softmax(y, dim=-1)
        return (logp.exp() * (logp - logq)).sum(-1).mean()
    return F.mse_loss(y, r) / r.var().clamp_min(1e-12)


def _learn_one(model: nn.Module, calib: list[Any], refs: list[Any], layers: list[tuple[str, nn.Module]],
               weights: list[torch.Tensor], ranks: list[torch.Tensor], numel: torch.Tensor, budget: float,
               cfg: GradientConfig) -> dict[str, float]:
    names, modules = [n for n, _ in layers], [m for _, m in layers]
    if budget <= 0.0 or budget >= cfg.max_sparsity:
        return {n: round(float(budget), 4) for n in names}
    smax = cfg.max_sparsity
    theta = torch.full((len(layers),), math.log(budget / (smax - budget)), requires_grad=True)
    opt = torch.optim.Adam([theta], lr=cfg.lr)
    share = (numel / numel.sum()).float()

    def loss_parts(k: int, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        s = smax * torch.sigmoid(theta)
        over = {m: w * torch.sigmoid((r - s[i]) / tau).to(w.dtype)
                for i, (m, w, r) in enumerate(zip(modules, weights, ranks))}
        div = _divergence(_forward(model, over, calib[k % len(calib)]), refs[k % len(calib)])
        kept = (share * (1.0 - s)).sum()
        return div, kept

    with torch.no_grad():
        d0 = float(sum(loss_parts(k, cfg.temperature_start)[0] for k in range(len(calib))) / len(calib))
    d0 = d0 if d0 > 0 else 1.0
    ratio = cfg.temperature_end / cfg.temperature_start
    for k in range(cfg.steps):
        tau = cfg.temperature_start * ratio ** (k / max(cfg.steps - 1, 1))
        div, kept = loss_parts(k, tau)
        loss = div / d0 + cfg.penalty * (kept - (1.0 - budget)) ** 2
        opt.zero_grad()
        theta.grad, = torch.autograd.grad(loss, [theta])  # no gradient lands on the model's own parameters
        opt.step()
    learned = (smax * torch.sigmoid(theta)).detach().double().numpy()
    return dict(zip(names, _project(learned, numel.numpy(), budget, smax)))


def _project(s: np.ndarray, numel: np.ndarray, budget: float, smax: float) -> list[float]:
    """Shift all sparsities by one amount (clipped to [0, smax]) so their weighted mean is ``budget``."""
    lo, hi = -1.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        mean = float((np.clip(s + mid, 0.0, smax) * numel).sum() / numel.sum())
        lo, hi = (mid, hi) if mean < budget else (lo, mid)
    return [round(float(v), 4) for v in np.clip(s + (lo + hi) / 2, 0.0, smax)]


def _with_maps(step: StepSpace, maps: Mapping[str, Any]) -> StepSpace:
    """The step with its ``sparsity`` knob replaced by one choice of learned maps per method."""
    old = _sparsity_knob(step)
    base_when = tuple(w for w in (old.when if old is not None else ()) if w[0] != "method")
    knobs = [k for k in step.knobs if k.name != "sparsity"]
    for method, pairs in maps.items():
        allowed = tuple(m for ref, vals in (old.when if old is not None else ()) if ref == "method" for m in vals)
        if allowed and method not in allowed:
            continue
        knobs.append(Knob(name="sparsity", choice=tuple(dict(m) for _, m in pairs),
                          when=(("method", (method,)),) + base_when))
    return dataclasses.replace(step, knobs=tuple(knobs))
