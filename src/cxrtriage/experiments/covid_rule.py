"""The out-of-source rule a COVID-19 model must pass before it ships (``cxr covid-rule``).

A COVID-19 classifier trained on one collection learns that collection (DeGrave et al., "AI for radiographic
COVID-19 detection selects shortcuts over signal", Nat Mach Intell 2021; Roberts et al., Nat Mach Intell 2021:
none of 62 published models was fit for clinical use). Our rule, fixed before any figure was measured: on
datasets of sources the model was **not** trained on,

* COVID-vs-non-COVID AUROC of the model's COVID probability >= :data:`MIN_AUROC` (0.80), and
* at most :data:`MAX_PNEUMONIA_CALLED_COVID` (20 %) of the non-COVID pneumonias are called COVID by the model's
  decision rule (arg-max, or the saved threshold of a binary model).

Non-COVID pneumonias are the images whose class is neither COVID nor a normal class of the task (bacterial,
fungal and non-COVID viral pneumonias of ``ieee8023-cxr``, mapped by the task's alias table). A model that fails
on any external dataset stays withdrawn; the figures that decided it are published either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cxrtriage.config import ModelConfig
from cxrtriage.data.discover import DATASET_LABEL
from cxrtriage.experiments.evaluate import dataset_names, score_dataset
from cxrtriage.inference.predictor import Predictor
from cxrtriage.metrics.classification import auroc
from cxrtriage.tasks import TaskSpec, get_task

__all__ = ["MIN_AUROC", "MAX_PNEUMONIA_CALLED_COVID", "CovidRuleResult", "covid_rule", "rule_summary", "rule_markdown"]

#: Lowest COVID-vs-non-COVID AUROC on a source the model never saw.
MIN_AUROC = 0.80
#: Highest share of non-COVID pneumonias of an unseen source that the model may call COVID.
MAX_PNEUMONIA_CALLED_COVID = 0.20


@dataclass
class CovidRuleResult:
    """The rule's figures on one external dataset.

    Attributes
    ----------
    name, data : str
        Short name and location of the dataset.
    n_covid, n_non_covid, n_pneumonia : int
        COVID images, non-COVID images (all other classes), non-COVID pneumonias among them.
    auroc : float or None
        COVID-vs-non-COVID AUROC of the COVID probability, in [0, 1] (None: one side empty).
    pneumonia_called_covid : float or None
        Share of the non-COVID pneumonias decided as COVID, in [0, 1] (None: no such image).
    covid_sensitivity : float or None
        Share of the COVID images decided as COVID.
    called_covid_by_label : dict
        ``{dataset label: [called COVID, images]}``: the decision per label as the dataset writes it.
    passed : bool
        Both limits hold (a missing figure fails).
    """

    name: str
    data: str
    n_covid: int
    n_non_covid: int
    n_pneumonia: int
    auroc: float | None
    pneumonia_called_covid: float | None
    covid_sensitivity: float | None
    called_covid_by_label: dict = field(default_factory=dict)
    passed: bool = False


def _covid_task(name: str, model_dir: str | Path) -> TaskSpec:
    task = get_task(name)
    if "COVID" not in task.classes:
        raise ValueError(f"{model_dir}: task {task.name!r} has no COVID class")
    return task


def covid_rule(
    model_dir: str | Path,
    datasets: Sequence[str | Path],
    cache_dir: str | None = None,
    exclude_where: Sequence[str] = (),
) -> tuple[bool, list[CovidRuleResult]]:
    """Apply the shipping rule to a COVID model on datasets of sources it was not trained on.

    Parameters
    ----------
    model_dir : path
        Model folder of a task with a ``COVID`` class (``covid``, ``covid4``).
    datasets : sequence of path
        External datasets (folders or manifests); each must hold COVID and non-COVID images of the task.
    cache_dir : str, optional
        Decoded-image cache.
    exclude_where : sequence of str
        Manifest columns that leave an image out when set (e.g. ``covid19_radiography_duplicate`` of ieee8023,
        the images also in the COVID-19 Radiography Database a model may have trained on).

    Returns
    -------
    (passed, results)
        ``passed``: the rule holds on every dataset; ``results``: one :class:`CovidRuleResult` per dataset.

    Raises
    ------
    ValueError
        The model's task has no ``COVID`` class.
    cxrtriage.data.DatasetError
        A dataset holds no readable image of the task.
    """
    config_file = Path(model_dir) / "config.json"
    if config_file.is_file():  # refuse before loading weights
        _covid_task(ModelConfig.load(config_file).task, model_dir)
    predictor = Predictor(model_dir)
    task = _covid_task(predictor.config.task, model_dir)
    k_covid = task.classes.index("COVID")
    normal = {task.classes.index(c) for c in task.normal_classes}
    results = []
    for name, data in zip(dataset_names(datasets), datasets):
        scored = score_dataset(predictor, data, None, cache_dir, 0, False, 0, exclude_where)
        y = np.array([s.target for s in scored.samples])
        is_covid = y == k_covid
        pneumonia = ~is_covid & ~np.isin(y, sorted(normal))
        called = scored.y_pred == k_covid
        by_label: dict[str, list[int]] = {}
        for s, c in zip(scored.samples, called):
            entry = by_label.setdefault(str(s.extra.get(DATASET_LABEL) or s.label), [0, 0])
            entry[0] += int(c)
            entry[1] += 1
        p_covid = scored.probs[:, k_covid]
        auc = auroc(is_covid.astype(np.int64), np.stack([1.0 - p_covid, p_covid], axis=1))
        share = float(called[pneumonia].mean()) if pneumonia.any() else None
        sens = float(called[is_covid].mean()) if is_covid.any() else None
        ok = auc is not None and auc >= MIN_AUROC and share is not None and share <= MAX_PNEUMONIA_CALLED_COVID
        results.append(
            CovidRuleResult(
                name=name,
                data=str(data),
                n_covid=int(is_covid.sum()),
                n_non_covid=int((~is_covid).sum()),
                n_pneumonia=int(pneumonia.sum()),
                auroc=auc,
                pneumonia_called_covid=share,
                covid_sensitivity=sens,
                called_covid_by_label=dict(sorted(by_label.items())),
                passed=bool(ok),
            )
        )
    return all(r.passed for r in results), results


def rule_summary(model: str, passed: bool, results: Sequence[CovidRuleResult]) -> dict:
    """JSON-ready record of one :func:`covid_rule` call (limits, verdict, figures per dataset)."""
    return {
        "model": model,
        "rule": {"min_auroc": MIN_AUROC, "max_pneumonia_called_covid": MAX_PNEUMONIA_CALLED_COVID},
        "passed": passed,
        "verdict": "ships" if passed else "stays withdrawn",
        "datasets": [asdict(r) for r in results],
    }


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def rule_markdown(record: dict) -> str:
    """Markdown table of a :func:`rule_summary` record (verdict, figures per dataset, calls per dataset label)."""
    rule = record["rule"]
    lines = [
        f"# COVID shipping rule: {record['model']}",
        "",
        f"Rule (fixed before measuring): on every source the model was not trained on, COVID-vs-non-COVID AUROC "
        f">= {rule['min_auroc']:.2f} and at most {100 * rule['max_pneumonia_called_covid']:.0f} % of the non-COVID "
        f"pneumonias called COVID. **Verdict: {record['verdict']}.**",
        "",
    ]
    if record.get("command"):
        lines += [f"Command: `{record['command']}`", ""]
    lines += [
        "| dataset | COVID | non-COVID (pneumonias) | AUROC | non-COVID pneumonias called COVID | COVID sensitivity | pass |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in record["datasets"]:
        lines.append(
            f"| {d['name']} | {d['n_covid']} | {d['n_non_covid']} ({d['n_pneumonia']}) | {_fmt(d['auroc'])} | "
            f"{_fmt(d['pneumonia_called_covid'])} | {_fmt(d['covid_sensitivity'])} | {'yes' if d['passed'] else 'no'} |"
        )
    for d in record["datasets"]:
        lines += [
            "",
            f"Called COVID per label of {d['name']}:",
            "",
            "| label | called COVID | images |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {c} | {n} |" for k, (c, n) in d["called_covid_by_label"].items()]
    return "\n".join(lines) + "\n"
