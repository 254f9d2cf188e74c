"""x-LLaMA's translation-data scaling law and the allocation of a translation-data budget.

Translation score ``y`` (BLEU, chrF, QA accuracy, ...) against the number ``x`` of English->X
translation pairs in instruction tuning, fitted per language:

* ``log`` (the paper's form):      f(x) = a * log(g * x + b)        (g > 0, b > 0)
* ``power`` (saturating, option):  f(x) = c - k * x ** (-e)         (e > 0)

Fits use ``scipy.optimize.curve_fit`` from a grid-searched start (the models are linear in all
but one parameter, so the start is the exact least-squares optimum on a grid of that parameter),
with standard errors from the covariance and R^2. Both forms have three parameters, so R^2 (or
equivalently the residual sum of squares) decides which fits better.

Allocation: maximise sum_i w_i f_i(x_i) subject to sum_i x_i <= C, 0 <= x_i <= cap_i. For
increasing concave laws the KKT conditions give water-filling on the Lagrange multiplier lambda,
x_i = clip(inverse of f_i' at lambda / w_i, 0, cap_i) -- for the log law
x_i = clip(w_i a_i / lambda - b_i / g_i, 0, cap_i) -- with lambda found by bisection so that the
budget is spent. Integer pair counts come from largest-remainder rounding, then single-pair
exchanges between languages while one improves the objective (for separable concave objectives
an allocation no single exchange improves is the integer optimum).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from megatron_prealign.data.atomic import atomic_text_writer, save_figure
from megatron_prealign.data.bad_input import BadInputError
from megatron_prealign.data.lines import iter_json_objects
from megatron_prealign.errors import ScalingLawError


# ---------------------------------------------------------------------------------------------
# The two forms
# ---------------------------------------------------------------------------------------------


def _log_law(x, a, g, b):
    return a * np.log(g * np.asarray(x, dtype=float) + b)


def _power_law(x, c, k, e):
    with np.errstate(divide="ignore"):
        return c - k * np.power(np.asarray(x, dtype=float), -e)


def _log_jacobian(x, a, g, b):
    x = np.asarray(x, dtype=float)
    inner = g * x + b
    return np.stack([np.log(inner), a * x / inner, a / inner], axis=-1)


def _power_jacobian(x, c, k, e):
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore"):
        power = np.power(x, -e)
    return np.stack([np.ones_like(x), -power, k * power * np.log(x)], axis=-1)


def _linear_fits(z: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares y ~ p + q * z for each row of z (a grid of the nonlinear parameter)."""
    zc = z - z.mean(axis=1, keepdims=True)
    yc = y - y.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        q = (zc @ yc) / np.sum(zc * zc, axis=1)
    p = y.mean() - q * z.mean(axis=1)
    sse = np.sum((p[:, None] + q[:, None] * z - y) ** 2, axis=1)
    return p, q, np.where(np.isfinite(sse), sse, np.inf)


def _log_start(x: np.ndarray, y: np.ndarray) -> Tuple[float, float, float]:
    # a*log(g*x + b) = a*log(g) + a*log(x + d) with d = b/g: linear in (a*log g, a) for fixed d.
    shifts = np.geomspace(x.min() * 1e-4, x.max() * 1e3, 400)
    offsets, slopes, sse = _linear_fits(np.log(x[None, :] + shifts[:, None]), y)
    sse[~(slopes != 0)] = np.inf
    best = int(np.argmin(sse))
    if not np.isfinite(sse[best]):
        raise ScalingLawError("no starting point for the log law (scores do not vary with size)")
    a, d = float(slopes[best]), float(shifts[best])
    g = math.exp(min(max(float(offsets[best]) / a, -700.0), 700.0))
    return a, g, g * d


def _power_start(x: np.ndarray, y: np.ndarray) -> Tuple[float, float, float]:
    exponents = np.geomspace(1e-3, 5.0, 400)
    offsets, slopes, sse = _linear_fits(np.power(x[None, :], -exponents[:, None]), y)
    best = int(np.argmin(sse))
    return float(offsets[best]), float(-slopes[best]), float(exponents[best])


@dataclass(frozen=True)
class LawForm:
    name: str
    formula: str
    parameters: Tuple[str, str, str]
    function: Callable
    jacobian: Callable  # d f / d parameters, shape (points, 3)
    start: Callable
    lower: Tuple[float, float, float]
    upper: Tuple[float, float, float]


FORMS: Dict[str, LawForm] = {
    "log": LawForm("log", "a * log(g * x + b)", ("a", "g", "b"), _log_law, _log_jacobian, _log_start,
                   (-np.inf, 1e-300, 1e-300), (np.inf, np.inf, np.inf)),
    "power": LawForm("power", "c - k * x^(-e)", ("c", "k", "e"), _power_law, _power_jacobian, _power_start,
                     (-np.inf, -np.inf, 1e-6), (np.inf, np.inf, 50.0)),
}


@dataclass
class Law:
    """One fitted law: evaluation, derivative and its inverse (for the water-filling)."""

    form: str
    params: Dict[str, float]

    def __post_init__(self):
        if self.form not in FORMS:
            raise ScalingLawError(f"unknown law form {self.form!r}; known: {', '.join(FORMS)}")
        missing = [p for p in FORMS[self.form].parameters if p not in self.params]
        if missing:
            raise ScalingLawError(f"{self.form} law without parameter(s) {missing}")

    def _values(self) -> List[float]:
        return [float(self.params[p]) for p in FORMS[self.form].parameters]

    def __call__(self, x):
        return FORMS[self.form].function(x, *self._values())

    def marginal(self, x):
        """f'(x)."""
        x = np.asarray(x, dtype=float)
        if self.form == "log":
            a, g, b = self._values()
            return a * g / (g * x + b)
        c, k, e = self._values()
        with np.errstate(divide="ignore"):
            return k * e * np.power(x, -e - 1)

    def inverse_marginal(self, slope: float) -> float:
        """The x >= 0 at which f'(x) = slope (> 0); 0 where even f'(0) is below it."""
        if self.form == "log":
            a, g, b = self._values()
            return max(0.0, a / slope - b / g) if a > 0 else 0.0
        c, k, e = self._values()
        return (k * e / slope) ** (1.0 / (e + 1.0)) if k > 0 else 0.0

    @property
    def increasing(self) -> bool:
        return (self.params["a"] > 0) if self.form == "log" else (self.params["k"] > 0)


# ---------------------------------------------------------------------------------------------
# Reading points
# ---------------------------------------------------------------------------------------------


def _number(value, path: str, line: int, key: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadInputError(path, line, f"{key} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise BadInputError(path, line, f"{key} {value!r} is not finite")
    return number


def read_points(paths: Sequence[str], language_key: str = "language", size_key: str = "pairs",
                score_key: str = "score") -> Dict[str, List[Tuple[float, float]]]:
    """language -> [(pairs, score)] from CSV files (header row) or JSON lines (``.jsonl``/``.json``)."""
    points: Dict[str, List[Tuple[float, float]]] = {}
    keys = (language_key, size_key, score_key)
    for path in paths:
        if path.endswith((".jsonl", ".json")):
            rows = list(iter_json_objects(path))
        else:
            with open(path, encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                missing = [k for k in keys if k not in (reader.fieldnames or [])]
                if missing:
                    raise BadInputError(path, 1, f"CSV header {reader.fieldnames} lacks column(s) "
                                        f"{missing} (name them with --language-key/--size-key/--score-key)")
                rows = [(index + 2, row) for index, row in enumerate(reader)]
        for line_number, row in rows:
            missing = [k for k in keys if row.get(k) in (None, "")]
            if missing:
                raise BadInputError(path, line_number, f"missing {', '.join(missing)}")
            size = _number(row[size_key], path, line_number, size_key)
            if size <= 0:
                raise BadInputError(path, line_number, f"{size_key} must be positive, got {row[size_key]!r} "
                                    "(the laws are defined for x > 0; drop the zero-data point)")
            score = _number(row[score_key], path, line_number, score_key)
            points.setdefault(str(row[language_key]), []).append((size, score))
    if not points:
        raise ScalingLawError(f"no points in {', '.join(paths)}")
    return points


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------


def fit_law(form: str, sizes: Sequence[float], scores: Sequence[float], label: str = "") -> dict:
    """Fit one form to (size, score) points: parameters, standard errors, R^2, residual SS."""
    if form not in FORMS:
        raise ScalingLawError(f"unknown law form {form!r}; known: {', '.join(FORMS)}")
    spec = FORMS[form]
    where = f" for {label}" if label else ""
    x = np.asarray(sizes, dtype=float)
    y = np.asarray(scores, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ScalingLawError(f"sizes and scores{where} must be two lists of the same length")
    if np.any(~np.isfinite(x)) or np.any(~np.isfinite(y)):
        raise ScalingLawError(f"non-finite size or score{where}")
    if np.any(x <= 0):
        raise ScalingLawError(f"non-positive size{where}: {x[x <= 0].tolist()} (the laws need x > 0)")
    n_params = len(spec.parameters)
    distinct = len(np.unique(x))
    if distinct < n_params:
        raise ScalingLawError(
            f"{len(x)} point(s) at {distinct} distinct size(s){where}: the {form} law has {n_params} "
            f"parameters and needs at least {n_params} distinct sizes (add sweep points)")
    if np.ptp(y) == 0:
        raise ScalingLawError(f"all scores{where} are equal ({y[0]}): nothing to fit")
    from scipy.optimize import OptimizeWarning, curve_fit

    start = spec.start(x, y)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            params, covariance = curve_fit(spec.function, x, y, p0=start, jac=spec.jacobian,
                                           bounds=(spec.lower, spec.upper),
                                           method="trf", x_scale="jac", max_nfev=20000)
    except (RuntimeError, ValueError) as error:
        raise ScalingLawError(f"the {form} fit{where} did not converge: {error}") from None
    predicted = spec.function(x, *params)
    if not (np.all(np.isfinite(params)) and np.all(np.isfinite(predicted))):
        raise ScalingLawError(f"the {form} fit{where} did not converge (non-finite parameters {params.tolist()})")
    sse = float(np.sum((predicted - y) ** 2))
    sst = float(np.sum((y - y.mean()) ** 2))
    if len(x) > n_params:
        if not np.all(np.isfinite(covariance)):
            raise ScalingLawError(f"the {form} fit{where} is degenerate (parameters not identifiable "
                                  "from these points; add points over a wider range of sizes)")
        stderr = {p: float(math.sqrt(max(v, 0.0))) for p, v in zip(spec.parameters, np.diag(covariance))}
        cov = covariance.tolist()
    else:
        stderr, cov = {p: None for p in spec.parameters}, None  # exact fit: no residual degrees of freedom
    return {
        "form": form, "formula": spec.formula,
        "params": dict(zip(spec.parameters, map(float, params))), "stderr": stderr, "covariance": cov,
        "r2": 1.0 - sse / sst, "sse": sse, "n_points": int(len(x)),
        "x_min": float(x.min()), "x_max": float(x.max()),
    }


def fit_points(points: Mapping[str, Sequence[Tuple[float, float]]], forms: Sequence[str] = ("log",)) -> dict:
    """Per-language fits of each form; ``better`` names the form with the larger R^2."""
    languages = {}
    for language in sorted(points):
        sizes, scores = zip(*sorted(points[language]))
        fits = {form: fit_law(form, sizes, scores, label=f"language {language!r}") for form in forms}
        languages[language] = {
            "points": [[float(s), float(v)] for s, v in zip(sizes, scores)],
            "fits": fits,
            "better": max(fits, key=lambda f: fits[f]["r2"]),
        }
    return {"forms": list(forms), "languages": languages}


def prediction_band(fit: dict, xs: np.ndarray, z: float = 1.959964) -> Tuple[np.ndarray, np.ndarray]:
    """Mean curve and its 95% confidence half-width (delta method on the parameter covariance)."""
    spec = FORMS[fit["form"]]
    params = np.array([fit["params"][p] for p in spec.parameters])
    mean = spec.function(xs, *params)
    if fit.get("covariance") is None:
        return mean, np.zeros_like(mean)
    cov = np.asarray(fit["covariance"])
    jac = spec.jacobian(xs, *params)
    variance = np.einsum("ij,jk,ik->i", jac, cov, jac)
    return mean, z * np.sqrt(np.maximum(variance, 0.0))


def plot_fits(result: dict, path: str, extrapolate: float = 4.0, title: str = "") -> str:
    """Points, fitted curves (solid over the data, dashed beyond), 95% band; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    styles = {"log": "-", "power": ":"}
    for index, (language, entry) in enumerate(result["languages"].items()):
        color = f"C{index % 10}"
        xs, ys = zip(*entry["points"])
        axis.plot(xs, ys, "o", color=color, label=f"{language}: measured")
        for form, fit in entry["fits"].items():
            low, high = fit["x_min"], fit["x_max"]
            inside = np.geomspace(low, high, 100)
            beyond = np.geomspace(high, high * extrapolate, 50)
            mean, half = prediction_band(fit, inside)
            axis.plot(inside, mean, styles.get(form, "-"), color=color,
                      label=f"{language}: {form} fit (R^2 {fit['r2']:.3f})")
            axis.fill_between(inside, mean - half, mean + half, color=color, alpha=0.12)
            mean, half = prediction_band(fit, beyond)
            axis.plot(beyond, mean, "--", color=color, alpha=0.7)
            axis.fill_between(beyond, mean - half, mean + half, color=color, alpha=0.06, hatch="//")
    axis.set_xscale("log")
    axis.set_xlabel("translation pairs in instruction tuning")
    axis.set_ylabel("score")
    axis.set_title(title or "translation-data scaling law (dashed: extrapolation, band: 95% CI)")
    axis.legend(fontsize=7)
    return save_figure(figure, path)


def laws_from_fits(result: dict, form: str = "log", languages: Optional[Sequence[str]] = None) -> Dict[str, Law]:
    """The fitted laws of a ``fit`` result; ``form="better"`` takes each language's better form."""
    entries = result.get("languages") or {}
    chosen = list(languages) if languages else sorted(entries)
    laws = {}
    for language in chosen:
        if language not in entries:
            raise ScalingLawError(f"no fit for language {language!r}; fitted: {', '.join(sorted(entries))}")
        fits = entries[language]["fits"]
        name = entries[language]["better"] if form == "better" else form
        if name not in fits:
            raise ScalingLawError(f"language {language!r} has no {name} fit (fitted forms: "
                                  f"{', '.join(fits)}); refit with --forms {name}")
        laws[language] = Law(name, dict(fits[name]["params"]))
    return laws


# ---------------------------------------------------------------------------------------------
# Allocation
# ---------------------------------------------------------------------------------------------


def _objective(laws: Mapping[str, Law], weights: Mapping[str, float], x: Mapping[str, float]) -> float:
    return float(sum(weights[l] * float(laws[l](x[l])) for l in laws))


def water_fill(laws: Mapping[str, Law], budget: float, caps: Mapping[str, float],
               weights: Mapping[str, float]) -> Tuple[Dict[str, float], Optional[float]]:
    """Continuous optimum and its multiplier lambda (None when the caps bind before the budget)."""
    active = [l for l in laws if weights[l] > 0 and laws[l].increasing and caps[l] > 0]
    zero = {l: 0.0 for l in laws}
    if not active or budget <= 0:
        return zero, None
    if sum(caps[l] for l in active) <= budget:
        return {**zero, **{l: float(caps[l]) for l in active}}, None

    def spent(lam: float) -> Tuple[float, Dict[str, float]]:
        x = {l: min(caps[l], laws[l].inverse_marginal(lam / weights[l])) for l in active}
        return sum(x.values()), x

    low = high = 1.0
    while spent(high)[0] > budget:
        high *= 4.0
    while spent(low)[0] < budget:
        low /= 4.0
    for _ in range(200):  # bisection in log space: lambda spans many orders of magnitude
        middle = math.sqrt(low * high)
        if spent(middle)[0] > budget:
            low = middle
        else:
            high = middle
        if high / low < 1 + 1e-15:
            break
    total, x = spent(high)
    if total > 0:  # spend the last rounding residue proportionally within the caps
        scale = budget / total
        x = {l: min(caps[l], v * scale) for l, v in x.items()}
    return {**zero, **x}, high


def round_largest_remainder(x: Mapping[str, float], total: int, caps: Mapping[str, float]) -> Dict[str, int]:
    """Integers summing to ``total`` (within caps): floors, then +1 by largest fractional part."""
    result = {l: int(math.floor(v + 1e-9)) for l, v in x.items()}
    result = {l: (min(v, int(math.floor(caps[l]))) if math.isfinite(caps[l]) else v) for l, v in result.items()}
    order = sorted(x, key=lambda l: (-(x[l] - math.floor(x[l] + 1e-9)), l))
    remaining = total - sum(result.values())
    while remaining > 0:
        progressed = False
        for language in order:
            if remaining and result[language] < caps[language]:
                result[language] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            break
    return result


def _polish(laws, weights, caps, x: Dict[str, int]) -> Dict[str, int]:
    """Single-unit exchanges while one improves the objective (integer optimality for concave laws)."""
    def value(language, count):
        if count < 0 or count > caps[language]:
            return -math.inf
        with np.errstate(divide="ignore", invalid="ignore"):
            return weights[language] * float(laws[language](count))

    for _ in range(10000):
        gain = {l: value(l, x[l] + 1) - value(l, x[l]) for l in x}
        loss = {l: value(l, x[l]) - value(l, x[l] - 1) for l in x}
        best_gain = max(x, key=lambda l: (gain[l], l))
        cheapest = min((l for l in x if l != best_gain), key=lambda l: (loss[l], l), default=None)
        if cheapest is None or not gain[best_gain] > loss[cheapest] + 1e-12 * max(1.0, abs(loss[cheapest])):
            break
        x[best_gain] += 1
        x[cheapest] -= 1
    return x


def uniform_split(languages: Sequence[str], budget: float, caps: Mapping[str, float]) -> Dict[str, float]:
    """Equal shares; a language whose cap is below its share gets its cap, the rest is re-split."""
    x, open_ = {l: 0.0 for l in languages}, list(languages)
    left = float(budget)
    while open_ and left > 1e-9:
        share = left / len(open_)
        capped = [l for l in open_ if caps[l] - x[l] <= share]
        if not capped:
            for l in open_:
                x[l] += share
            break
        for l in capped:
            left -= caps[l] - x[l]
            x[l] = float(caps[l])
            open_.remove(l)
    return x


def allocate(laws: Mapping[str, Law], budget: float, caps: Optional[Mapping[str, float]] = None,
             weights: Optional[Mapping[str, float]] = None, integer: bool = True) -> dict:
    """Allocation maximising sum_i w_i f_i(x_i), sum x_i <= budget, 0 <= x_i <= cap_i, with the
    uniform split's predicted scores for comparison."""
    if not laws:
        raise ScalingLawError("no languages to allocate over")
    if not (budget > 0 and math.isfinite(budget)):
        raise ScalingLawError(f"--budget must be a positive number, got {budget}")
    for name, table in (("cap", caps), ("weight", weights)):
        unknown = sorted(set(table or {}) - set(laws))
        if unknown:
            raise ScalingLawError(f"{name}(s) for language(s) {unknown} without a law; languages: {', '.join(laws)}")
    caps = {l: float((caps or {}).get(l, math.inf)) for l in laws}
    weights = {l: float((weights or {}).get(l, 1.0)) for l in laws}
    for name, table in (("cap", caps), ("weight", weights)):
        bad = {l: v for l, v in table.items() if not v >= 0 or math.isnan(v)}
        if bad:
            raise ScalingLawError(f"negative or invalid {name}(s): {bad}")
    continuous, multiplier = water_fill(laws, budget, caps, weights)
    uniform = uniform_split(list(laws), budget, caps)
    if integer:
        spent = min(int(math.floor(budget)), int(round(sum(continuous.values()))))
        allocation = round_largest_remainder(continuous, spent, caps)
        allocation = _polish(laws, weights, caps, allocation)
        uniform = round_largest_remainder(uniform, int(round(sum(uniform.values()))), caps)
    else:
        allocation = continuous

    def scores(x):
        with np.errstate(divide="ignore", invalid="ignore"):
            values = {l: float(laws[l](x[l])) for l in laws}
        return {l: (v if math.isfinite(v) else None) for l, v in values.items()}

    def weighted(x):
        with np.errstate(divide="ignore", invalid="ignore"):
            value = _objective(laws, weights, x)
        return value if math.isfinite(value) else None  # a power law at x = 0 is -inf

    return {
        "budget": budget, "caps": {l: (c if math.isfinite(c) else None) for l, c in caps.items()},
        "weights": weights, "forms": {l: laws[l].form for l in laws},
        "lambda": multiplier, "continuous": continuous,
        "allocation": allocation, "predicted": scores(allocation), "objective": weighted(allocation),
        "uniform": uniform, "uniform_predicted": scores(uniform), "uniform_objective": weighted(uniform),
    }


EXTRAPOLATION = 4.0  # beyond this multiple of the largest fitted size a prediction is flagged


def allocation_warnings(result: dict, fits: dict) -> List[str]:
    """What makes an allocation's numbers untrustworthy: a law that falls with more data (it
    gets nothing; its predictions are no scaling law) and sizes far beyond the fitted points."""
    found = []
    for language, form in result["forms"].items():
        fit = fits["languages"][language]["fits"][form]
        law = Law(form, dict(fit["params"]))
        if not law.increasing and result["weights"][language] > 0:
            found.append(f"the {form} law of {language} falls with more data: it gets no data and its "
                         "predicted scores mean nothing; check its sweep points or refit")
        largest = fit.get("x_max")
        for name in ("allocation", "uniform"):
            size = result[name][language]
            if largest and size > EXTRAPOLATION * largest:
                found.append(f"{language}: {size:g} pairs ({name}) is {size / largest:.3g}x the largest "
                             f"fitted size {largest:g}; its predicted score is an extrapolation")
                break
    return found


def allocation_table(result: dict) -> str:
    def cell(v):
        return "-" if v is None else f"{v:.3f}"

    lines = ["| language | weight | cap | allocation | predicted | uniform | predicted (uniform) |",
             "|---|---|---|---|---|---|---|"]
    for language in result["allocation"]:
        cap = result["caps"][language]
        lines.append(
            f"| {language} | {result['weights'][language]:g} | {'-' if cap is None else f'{cap:g}'} | "
            f"{result['allocation'][language]:g} | {cell(result['predicted'][language])} | "
            f"{result['uniform'][language]:g} | {cell(result['uniform_predicted'][language])} |")
    lines.append(f"| weighted sum | | | {sum(result['allocation'].values()):g} | {cell(result['objective'])} | "
                 f"{sum(result['uniform'].values()):g} | {cell(result['uniform_objective'])} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Sweep: the datasets and commands that produce the points on a cluster
# ---------------------------------------------------------------------------------------------

DEFAULT_FINETUNE = ("torchrun --nproc-per-node 8 -m megatron_prealign.pretrain --pretrained-checkpoint {base} "
                    "--finetune --sft-packing --data-path {data} --save {run}/ckpt --load {run}/ckpt")
BUILD_MODULE = "megatron_prealign.cli.build_instruction_data"
DEFAULT_EVALUATE = "python tools/evaluate.py translation --load {run}/ckpt --output {run}/translation.json"


def _fill(template: str, fields: Mapping[str, str]) -> List[str]:
    """Split the template shell-style first, then fill each word (paths with spaces stay one word)."""
    try:
        return [word.format(**fields) for word in shlex.split(template)]
    except KeyError as error:
        raise ScalingLawError(f"unknown field {error} in command template {template!r}; "
                              f"fields: {', '.join('{%s}' % f for f in fields)}") from None


def sweep_plan(sizes: Sequence[int], output_dir: str, language: str, build_args: Sequence[str],
               base: str = "BASE_CHECKPOINT", finetune: str = DEFAULT_FINETUNE,
               evaluate: str = DEFAULT_EVALUATE, python: str = "python") -> List[dict]:
    """One entry per translation-data size: the build / fine-tune / evaluate commands (argv lists)."""
    if not sizes:
        raise ScalingLawError("--sizes needs at least one size")
    bad = [s for s in sizes if s <= 0]
    if bad:
        raise ScalingLawError(f"--sizes must be positive, got {bad}")
    if len(set(sizes)) != len(sizes):
        raise ScalingLawError(f"--sizes has duplicates: {sorted(sizes)}")
    forbidden = [a for a in build_args if a.split("=")[0] in ("--translation-pairs", "--output-prefix")]
    if forbidden:
        raise ScalingLawError(f"the sweep sets {forbidden} itself; remove them from the build arguments")
    plan = []
    for size in sorted(sizes):
        name = f"{language}_pairs{size}"
        prefix = os.path.join(output_dir, "data", name)
        run = os.path.join(output_dir, "runs", name)
        fields = {"base": base, "data": prefix + "_text_document", "run": run, "size": str(size),
                  "language": language}
        plan.append({
            "language": language, "pairs": int(size), "prefix": prefix, "run": run,
            "build": [python, "-m", BUILD_MODULE, *build_args, "--translation-pairs", str(size), "--output-prefix", prefix],
            "finetune": _fill(finetune, fields),
            "evaluate": _fill(evaluate, fields),
        })
    return plan


def write_json(path: str, record: dict) -> str:
    """JSON written atomically (no megatron import: the tool stays fast)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_text_writer(path) as handle:
        json.dump(record, handle, indent=1)
        handle.write("\n")
    return path


def write_commands(plan: Sequence[dict], path: str) -> str:
    """A shell script with the fine-tune and evaluate commands of every size, written atomically."""
    with atomic_text_writer(path) as handle:
        handle.write("#!/usr/bin/env bash\n# Written by tools/scaling_law.py sweep: fine-tune and evaluate "
                     "each translation-data size,\n# then collect the scores into points for "
                     "`tools/scaling_law.py fit`.\nset -euo pipefail\n")
        for entry in plan:
            handle.write(f"\n# {entry['language']}: {entry['pairs']} translation pairs\n")
            handle.write(shlex.join(entry["finetune"]) + "\n")
            handle.write(shlex.join(entry["evaluate"]) + "\n")
    os.chmod(path, 0o755)
    return path
