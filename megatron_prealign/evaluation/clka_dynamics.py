"""CLKA learning dynamics (PreAlign Figure 4): accuracy per period x frequency x (training
language, test language).

Input: JSON lines of CLKA items (``clka.py``'s ``{"true", "distractors"}`` or ``{"choices",
"answer"}``) that also carry ``period`` (1, 2, ...), ``frequency`` (how often the fact was stated
in that period's training data) and ``train_language`` (``en`` or ``enclone``), and one
checkpoint iteration per period (the end of the period). Every item is asked, at its period's
checkpoint, in English and in En-Clone (the same statements with the ids shifted by the
En-Clone mapping), so there are four combinations: en->en, en->enclone, enclone->en,
enclone->enclone. Each cell gets the accuracy, the number of items and its Wilson 95% interval;
``pooled`` adds the cells over all periods. Chance is 1 / number of choices.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

from megatron_prealign.data.atomic import save_figure
from megatron_prealign.evaluation.clka import evaluate_clka, parse_items
from megatron_prealign.errors import EvaluationError
from megatron_prealign.stats import proportion_interval

LANGUAGES = ("en", "enclone")
COMBINATIONS = tuple(f"{train}->{test}" for train in LANGUAGES for test in LANGUAGES)
LABELS = {"en->en": "taught in English, asked in English",
          "en->enclone": "taught in English, asked in En-Clone",
          "enclone->en": "taught in En-Clone, asked in English",
          "enclone->enclone": "taught in En-Clone, asked in En-Clone"}


def parse_dynamics_items(records: List[dict], path: str = "") -> List[dict]:
    """``parse_items`` plus each record's period, frequency and training language."""
    items = parse_items(records, path)
    for number, (record, item) in enumerate(zip(records, items), 1):
        for key in ("period", "frequency"):
            if not isinstance(record.get(key), int) or record[key] < 1:
                raise EvaluationError(f"{path} item {number}: needs '{key}', a positive integer")
        if record.get("train_language") not in LANGUAGES:
            raise EvaluationError(f"{path} item {number}: 'train_language' must be one of {', '.join(LANGUAGES)}")
        item.update(period=record["period"], frequency=record["frequency"],
                    train_language=record["train_language"])
    return items


def check_periods(items: Sequence[dict], iterations: Sequence[int]) -> List[int]:
    """The periods 1..K of the items, one checkpoint iteration each, increasing."""
    periods = sorted({item["period"] for item in items})
    if periods != list(range(1, len(periods) + 1)):
        raise EvaluationError(f"the items' periods are {periods}; they must be 1..K without gaps")
    if len(iterations) != len(periods):
        raise EvaluationError(f"--period-iterations gives {len(iterations)} iterations for {len(periods)} "
                              "periods: give the checkpoint iteration at the end of each period, in order")
    if any(b <= a for a, b in zip(iterations, iterations[1:])):
        raise EvaluationError(f"--period-iterations must increase (got {list(iterations)})")
    return periods


def _cell(correct: int, total: int) -> Dict:
    low, high = proportion_interval(correct, total)
    return {"correct": correct, "items": total, "accuracy": correct / total if total else None,
            "ci95": [low, high] if total else None}


def aggregate(items: Sequence[dict], outcomes: Dict[str, Sequence[bool]]) -> Dict:
    """Cells from per-item outcomes: ``outcomes[test_language][i]`` is whether item i was
    answered correctly when asked in that language. Returns {"periods": {p: {combination:
    {frequency: cell}}}, "pooled": {combination: {frequency: cell}}} (keys are strings)."""
    counts: Dict = {}
    for test in LANGUAGES:
        if len(outcomes[test]) != len(items):
            raise ValueError(f"{len(outcomes[test])} outcomes in {test} for {len(items)} items")
        for item, ok in zip(items, outcomes[test]):
            combination = f"{item['train_language']}->{test}"
            for period in (str(item["period"]), "pooled"):
                cell = counts.setdefault(period, {}).setdefault(combination, {}).setdefault(
                    str(item["frequency"]), [0, 0])
                cell[0] += bool(ok)
                cell[1] += 1
    frequencies = sorted({item["frequency"] for item in items})
    out = {}
    for period, combos in counts.items():
        out[period] = {c: {str(f): _cell(*combos.get(c, {}).get(str(f), [0, 0])) for f in frequencies}
                       for c in COMBINATIONS}
    pooled = out.pop("pooled")
    return {"periods": out, "pooled": pooled}


class InLanguage:
    """``TextToIds`` fixed to one language (En-Clone ids or the tokenizer's own)."""

    def __init__(self, to_ids, clone: bool):
        self.to_ids, self.clone, self.eod = to_ids, clone, to_ids.eod

    def __call__(self, text: str):
        return self.to_ids(text, clone=self.clone)


def evaluate(load_at, items: List[dict], iterations: Sequence[int], to_ids, normalize: bool = False,
             micro_batch_size: int = 8) -> Dict:
    """``load_at(iteration)`` gives the model of that checkpoint; every period's items are asked
    at its iteration in both languages."""
    periods = check_periods(items, iterations)
    outcomes = {test: [None] * len(items) for test in LANGUAGES}
    for period, iteration in zip(periods, iterations):
        model = load_at(iteration)
        indices = [i for i, item in enumerate(items) if item["period"] == period]
        for test in LANGUAGES:
            result = evaluate_clka(model, [items[i] for i in indices], InLanguage(to_ids, test == "enclone"),
                                   normalize, micro_batch_size)
            for i, per_item in zip(indices, result["per_item"]):
                outcomes[test][i] = per_item["correct"]
    chance = sum(1.0 / len(item["choices"]) for item in items) / len(items)
    record = {"frequencies": sorted({item["frequency"] for item in items}), "combinations": list(COMBINATIONS),
              "period_iterations": {str(p): it for p, it in zip(periods, iterations)},
              "items": len(items), "chance": chance, "normalize": normalize}
    record.update(aggregate(items, outcomes))
    record["outcomes"] = outcomes
    return record


def plot(runs: Dict[str, Dict], path: str, title: str = "") -> str:
    """Accuracy vs frequency, one panel per combination, one line per period (colour) and run
    (line style: the first run solid, the next dashed, ...); chance as a grey line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "d"]
    # A legend row of its own: save_figure's tight_layout lays out axes, not figure legends.
    figure = plt.figure(figsize=(10, 9))
    grid = figure.add_gridspec(3, 2, height_ratios=[1, 1, 0.22])
    axes = [figure.add_subplot(grid[r, c]) for r in range(2) for c in range(2)]
    first = next(iter(runs.values()))
    periods = sorted(first["periods"], key=int)
    colours = plt.get_cmap("viridis")([i / max(1, len(periods) - 1) * 0.85 for i in range(len(periods))])
    for index, (axis, combination) in enumerate(zip(axes, COMBINATIONS)):
        for r, (label, result) in enumerate(runs.items()):
            freqs = result["frequencies"]
            for colour, period in zip(colours, periods):
                cells = result["periods"][period][combination]
                axis.plot(freqs, [cells[str(f)]["accuracy"] for f in freqs], styles[r % 4], marker=markers[r % 4],
                          color=colour, markersize=4, label=f"{label}, period {period}")
        axis.axhline(first["chance"], color="grey", linewidth=1, label="chance")
        axis.set_xscale("log")
        axis.set_xticks(first["frequencies"])
        axis.set_xticklabels([str(f) for f in first["frequencies"]])
        axis.minorticks_off()
        axis.set_ylim(0, 1.02)
        axis.set_title(LABELS[combination], fontsize=9)
        if index >= 2:
            axis.set_xlabel("frequency (documents stating the fact in its period)", fontsize=8)
        if index % 2 == 0:
            axis.set_ylabel("accuracy right after the period", fontsize=8)
    legend_axis = figure.add_subplot(grid[2, :])
    legend_axis.axis("off")
    handles, labels = axes[0].get_legend_handles_labels()
    legend_axis.legend(handles, labels, loc="center", ncol=max(1, (len(labels) + 1) // 2), fontsize=7)
    figure.suptitle(title or "CLKA learning dynamics (PreAlign Fig. 4)")
    return save_figure(figure, path)


def summary(result: Dict) -> str:
    lines = [f"chance {100 * result['chance']:.1f}%; pooled over {len(result['periods'])} periods:"]
    freqs = result["frequencies"]
    lines.append(f"{'':18s}" + "".join(f"{'f=' + str(f):>20s}" for f in freqs))
    for combination in COMBINATIONS:
        cells = result["pooled"][combination]
        lines.append(f"{combination:18s}" + "".join(
            f"{100 * c['accuracy']:6.1f}% [{100 * c['ci95'][0]:4.1f},{100 * c['ci95'][1]:5.1f}]" if c["items"]
            else f"{'-':>20s}" for c in (cells[str(f)] for f in freqs)))
    return "\n".join(lines)
