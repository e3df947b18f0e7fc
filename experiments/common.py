"""The driver behind every reproduction script in ``experiments/`` (one script per paper table).

A script holds only its :class:`Table` (the published numbers, transcribed from
``shared/specs``, and how they were obtained) and calls :func:`main`. This module

1. builds the config: ``configs/<method>_<dataset>.py`` (or, when that file does not exist, the
   method's MVTec config with the dataset fields overridden, which the protocol then says), the
   script's flags (``--data_root``, ``--weights``, ``--categories``) and any ``--config.a.b=v``
   overrides, parsed exactly as ``python -m jad.train`` parses them;
2. runs ``jad.train``'s runner in-process over the categories into ``<workdir>/run/`` (its own
   ``results.json``, checkpoints and heatmaps live there; rerunning resumes / restores);
3. writes ``<workdir>/results.md`` and ``<workdir>/results.json``: per category and the mean,
   jad's numbers beside each published reference with the difference, and a protocol paragraph
   (the reported model / epoch, the labelled-anomaly split, the weights, resolution, coreset).

``--synthetic`` swaps the dataset for jad's generated MVTec-layout set with RANDOM weights and the
method's demo sizes (the values in which ``configs/<method>_synthetic.py`` differs from the
method's base config). Those numbers are not comparable with anything; every output says so.

Conventions: jad's metrics are fractions in [0, 1] and shown here as percentages with two
decimals; published numbers are kept as printed. ``n/p`` = no published number, ``n/c`` = not
comparable (the reason is in the notes), ``n/a`` = jad did not compute the metric.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
if str(REPO) not in sys.path:  # a checkout without `pip install -e .`: an installed jad still wins
    sys.path.append(str(REPO))

LABELS = {  # jad's result keys -> column names
    "image_auroc": "I-AUROC",
    "pixel_auroc": "P-AUROC",
    "aupro": "AU-PRO",
    "image_ap": "I-AP",
    "pixel_ap": "P-AP",
    "image_f1_max": "I-F1max",
    "pixel_f1_max": "P-F1max",
}
DATASET_NAMES = {"mvtec": "MVTec AD", "visa": "VisA", "mpdd": "MPDD", "btad": "BTAD"}

NO_PUBLISHED = "n/p"
NOT_COMPARABLE = "n/c"
NOT_COMPUTED = "n/a"
LEGEND = (
    f"`{NO_PUBLISHED}` = no published number; `{NOT_COMPARABLE}` = not comparable (see the "
    f"notes); `{NOT_COMPUTED}` = not computed by jad. Δ = jad − published, in points."
)
SYNTHETIC_WARNING = (
    "SYNTHETIC MODE: generated synthetic images and a RANDOM-init backbone. These numbers are NOT "
    "comparable with the published ones; they only show that the script runs end to end."
)
SUBSET_NOTE = "mean over a subset of the dataset's categories: the published mean is over all"


# ---------------------------------------------------------------------------------------------
# What a script declares
# ---------------------------------------------------------------------------------------------


def rows(text: str, cols: slice = slice(None)) -> dict[str, tuple[str | None, ...]]:
    """Parses a transcribed table: one ``<category> <v1> <v2> ...`` line per row (``|`` between
    groups of columns is ignored), ``-`` for a value the source does not give; ``cols`` picks
    columns. Values stay strings, so they print exactly as published."""
    out: dict[str, tuple[str | None, ...]] = {}
    for line in text.strip().splitlines():
        name, *values = line.replace("|", " ").split()
        for v in values:
            if v != "-":
                float(v)  # a typo in a transcription fails at import time
        out[name] = tuple(None if v == "-" else v for v in values[cols])
    return out


@dataclass(frozen=True)
class Reference:
    """One published (or logged) set of numbers for the table's method and dataset.

    ``metrics`` are jad's result keys in the order of the values in ``rows`` (percentages, as
    printed by the source); ``rows`` maps a category or ``mean`` to them. ``not_comparable``
    names metrics whose published definition differs from jad's (no Δ is shown; the reason is
    printed); ``notes`` are caveats that keep the Δ (printed too); ``labels`` give the source's
    own name of a metric where it differs from jad's.
    """

    source: str
    metrics: tuple[str, ...]
    rows: Mapping[str, tuple[str | None, ...]]
    protocol: str = ""
    not_comparable: Mapping[str, str] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        unknown = [m for m in self.metrics if m not in LABELS]
        assert not unknown, f"{self.source}: unknown metric keys {unknown}"
        for name, values in self.rows.items():
            assert len(values) == len(self.metrics), (
                f"{self.source}: row {name!r} has {len(values)} values for {len(self.metrics)} "
                f"metrics {self.metrics}"
            )

    def published(self, row: str, metric: str) -> str | None:
        values = self.rows.get(row)
        if values is None or metric not in self.metrics:
            return None
        return values[self.metrics.index(metric)]


@dataclass(frozen=True)
class Table:
    """A paper table: method x dataset, the metrics shown, the references and the protocol text.

    ``no_reference`` says what the method's own paper did not publish for this dataset (and where
    that was checked); it is printed as "no published number". ``references`` may then still hold
    other sources (e.g. a baseline logged by another repository), or be empty. ``protocol`` is the script's text:
    how the published numbers were produced and how jad's run relates to them.
    """

    name: str
    method: str
    dataset: str
    title: str
    metrics: tuple[str, ...]
    references: tuple[Reference, ...] = ()
    no_reference: str = ""
    protocol: str = ""

    def __post_init__(self):
        assert self.references or self.no_reference, f"{self.name}: say why nothing is published"


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


@dataclass
class BuiltConfig:
    config: Any  # ml_collections.ConfigDict
    config_file: Path
    overrides: list[str]  # --config.a.b=v as applied (generated first, then the user's)
    notes: list[str]  # sentences for the protocol paragraph


def config_file(method: str, dataset: str) -> tuple[Path, list[str], list[str]]:
    """``configs/<method>_<dataset>.py``; when absent, the method's MVTec config with the dataset
    fields overridden (returned as overrides) and a sentence saying so."""
    own = CONFIGS / f"{method}_{dataset}.py"
    if own.is_file():
        return own, [], []
    mvtec = CONFIGS / f"{method}_mvtec.py"
    overrides = [f"--config.data.name={dataset}", "--config.data.category_resize="]
    note = (
        f"There is no configs/{own.name}: the config is configs/{mvtec.name} with the dataset "
        f"fields overridden ({' '.join(o.removeprefix('--config.') for o in overrides)}); every "
        f"other value is the MVTec one."
    )
    return mvtec, overrides, [note]


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _load_config(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_jad_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def synthetic_settings(method: str) -> dict[str, Any]:
    """The method's demo values: where ``configs/<method>_synthetic.py`` differs from
    ``jad.config_base.<method>("synthetic")`` (resolution, epochs / steps, widths, mode, random
    weights). Maintained with the demo configs, so the scripts' synthetic mode follows them."""
    import jad.config_base

    demo = _flatten(_load_config(CONFIGS / f"{method}_synthetic.py").to_dict())
    base = _flatten(getattr(jad.config_base, method)("synthetic").to_dict())
    return {k: v for k, v in demo.items() if base.get(k, object()) != v}


def _override_key(arg: str) -> str:
    return arg.removeprefix("--config.").partition("=")[0]


def build_config(
    table: Table,
    *,
    data_root: str | None,
    weights: str | None,
    categories: str | None,
    synthetic: bool,
    overrides: Sequence[str] = (),
) -> BuiltConfig:
    """The run's config, parsed by ml_collections' config flags exactly as ``jad.train`` parses
    ``--config=<file> --config.a.b=v`` (types, tuples, placeholders, unknown keys)."""
    from absl import flags
    from ml_collections import config_flags

    from jad.train_lib import cli
    from jad.utils.errors import UserError

    path, generated, notes = config_file(table.method, table.dataset)
    if synthetic:
        generated = ["--config.data.name=synthetic", "--config.backbone.weights=random"]
    if data_root:
        generated.append(f"--config.data.root={data_root}")
    if weights and not synthetic:
        generated.append(f"--config.backbone.weights={weights}")
    if categories:
        generated.append(f"--config.data.categories={categories}")
    args = [*generated, *overrides]
    argv = ["experiments", f"--config={path}", *args]
    values = flags.FlagValues()  # private: never touches absl's global FLAGS
    try:
        holder = config_flags.DEFINE_config_file(
            "config", None, "run config", flag_values=values, lock_config=True, sys_argv=argv
        )
        values(argv)
    except flags.Error as e:
        raise UserError(str(e).splitlines()[0]) from None
    except (AttributeError, KeyError) as e:
        message = cli.unknown_key_message(argv, str(path))
        raise UserError(message or f"bad --config override: {e}") from None
    config = holder.value
    if synthetic:
        set_by_user = {_override_key(a) for a in args}
        demo = {k: v for k, v in synthetic_settings(table.method).items() if k not in set_by_user}
        demo.pop("data.root", None)  # the synthetic root: --data_root, else the generated set
        with config.unlocked():
            for key, value in demo.items():
                *parents, leaf = key.split(".")
                node = config
                for p in parents:
                    node = node[p]
                node[leaf] = tuple(value) if isinstance(node[leaf], tuple) else value
        args = [f"--config.{k}={v}" for k, v in demo.items()] + args
        notes.append(
            f"Synthetic mode: configs/{path.name} with the dataset swapped for jad's generated "
            f"MVTec-layout set ({data_root or 'generated under $JAD_DATA_DIR'}), random backbone "
            f"weights and the demo settings of configs/{table.method}_synthetic.py "
            f"({', '.join(f'{k}={v}' for k, v in demo.items()) or 'none'})."
        )
    return BuiltConfig(config, path, args, notes)


# ---------------------------------------------------------------------------------------------
# Comparison (pure: jad's results.json + the table -> rows, markdown)
# ---------------------------------------------------------------------------------------------


def _pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * float(x)


def _cell(jad: float | None, published: str | None, reason: str | None) -> dict[str, Any]:
    """One metric of one row: jad (%), published (as printed), Δ and its status."""
    if published is None:
        status, delta = "no published number", None
    elif jad is None:
        status, delta = "not computed by jad", None
    elif reason is not None:
        status, delta = f"not comparable: {reason}", None
    else:
        status, delta = "ok", jad - float(published)
    return {"jad": jad, "published": published, "delta": delta, "status": status}


def compare(table: Table, results: Mapping[str, Any], *, synthetic: bool) -> dict[str, Any]:
    """Everything ``results.{md,json}`` show: per category and the mean, jad beside each reference
    (each with the metrics that source reports; the table's own metrics when nothing is published).

    ``results`` is jad's ``results.json`` (``metrics`` per category + ``mean``, fractions). The
    mean's Δ is shown only when the run covered every category of the dataset; in synthetic mode
    no Δ is shown at all.
    """
    from jad.data import KNOWN_CATEGORIES

    metrics = results["metrics"]
    categories = [c for c in metrics if c != "mean"]
    complete = set(categories) == set(KNOWN_CATEGORIES.get(table.dataset, ()))
    references = table.references or (
        Reference(f"no published number: {table.no_reference}", table.metrics, {}),
    )
    shown = list(dict.fromkeys([*table.metrics, *(m for r in references for m in r.metrics)]))
    jad = {row: {m: _pct(metrics[row].get(m)) for m in shown} for row in metrics}
    comparisons = []
    for ref in references:
        out_rows = {}
        for row in [*categories, "mean"]:
            cells = {}
            for m in ref.metrics:
                reason = ref.not_comparable.get(m)
                if synthetic:
                    reason = "synthetic data and random weights"
                elif row == "mean" and not complete:
                    reason = reason or SUBSET_NOTE
                cells[m] = _cell(jad[row][m], ref.published(row, m), reason)
            out_rows[row] = cells
        comparisons.append(
            {
                "source": ref.source,
                "protocol": ref.protocol,
                "published": bool(ref.rows),
                "metrics": list(ref.metrics),
                "labels": {m: ref.labels.get(m, LABELS[m]) for m in ref.metrics},
                "not_comparable": dict(ref.not_comparable),
                "notes": dict(ref.notes),
                "rows": out_rows,
            }
        )
    return {
        "title": table.title,
        "script": f"experiments/{table.name}.py",
        "method": table.method,
        "dataset": table.dataset,
        "synthetic": synthetic,
        "warning": SYNTHETIC_WARNING if synthetic else None,
        "no_published_number": table.no_reference or None,
        "categories": categories,
        "complete": complete,
        "jad": jad,
        "comparisons": comparisons,
    }


def _fmt_jad(x: float | None) -> str:
    return NOT_COMPUTED if x is None else f"{x:.2f}"


def _fmt_delta(cell: Mapping[str, Any]) -> str:
    if cell["published"] is None:
        return "–"
    if cell["delta"] is None:
        return NOT_COMPUTED if cell["jad"] is None else NOT_COMPARABLE
    return f"{cell['delta']:+.2f}"


def render_markdown(comparison: Mapping[str, Any], protocol: str) -> str:
    """``results.md``: a warning in synthetic mode, one table per reference, legend, protocol."""
    c = comparison
    lines = [f"# {c['title']}: jad vs published", ""]
    if c["synthetic"]:
        lines += [f"> **{c['warning']}**", ""]
    n = len(c["categories"])
    scope = (
        "the synthetic set"
        if c["synthetic"]
        else ("all" if c["complete"] else "a subset of the")
        + f" {DATASET_NAMES.get(c['dataset'], c['dataset'])} categories"
    )
    lines += [
        f"Produced by `python {c['script']}` over {n} categor{'y' if n == 1 else 'ies'} "
        f"({scope}): {', '.join(c['categories'])}. jad's numbers are percentages from "
        f"`run/results.json`.",
        "",
    ]
    if c["no_published_number"]:
        lines += [f"**No published number**: {c['no_published_number']}", ""]
    for comp in c["comparisons"]:
        lines += [f"## vs {comp['source']}", ""]
        if comp["protocol"]:
            lines += [comp["protocol"], ""]
        header = ["category"]
        for m in comp["metrics"]:
            header += [f"{LABELS[m]} jad", f"{comp['labels'][m]} pub.", "Δ"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row, cells in comp["rows"].items():
            name = f"**mean** ({len(c['categories'])})" if row == "mean" else row
            out = [name]
            for m in comp["metrics"]:
                cell = cells[m]
                out += [
                    _fmt_jad(cell["jad"]),
                    cell["published"] if cell["published"] is not None else NO_PUBLISHED,
                    _fmt_delta(cell),
                ]
            lines.append("| " + " | ".join(out) + " |")
        lines.append("")
        notes = [f"{LABELS[m]}: not comparable, {why}" for m, why in comp["not_comparable"].items()]
        notes += [f"{LABELS[m]}: {why}" for m, why in comp["notes"].items()]
        if not c["complete"] and not c["synthetic"]:
            notes.append(f"mean: {SUBSET_NOTE}")
        if c["synthetic"]:
            notes.append("every Δ: not comparable, synthetic data and random weights")
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    lines += [LEGEND, "", "## Protocol", "", protocol, ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Protocol paragraph
# ---------------------------------------------------------------------------------------------


def run_facts(built: BuiltConfig, results: Mapping[str, Any]) -> list[str]:
    """Sentences on how jad's numbers were produced, read from the run's results.json."""
    cfg = results["config"]
    data, train = cfg["data"], cfg.get("train")
    protocol = results.get("protocol")
    if isinstance(protocol, Mapping):  # categories with different protocols
        protocol = "; ".join(f"{k}: {v}" for k, v in protocol.items())
    if train:
        budget = (
            f"{train['steps']} steps" if int(train["steps"]) > 0 else f"{train['epochs']} epochs"
        )
        steps = sorted({str(d.get("selected_step")) for d in results["details"].values()})
        reported = (
            f"Reported model: {protocol}, train.select={train['select']}, budget {budget} "
            f"(reported step: {', '.join(steps)})."
        )
    else:
        reported = f"Reported model: {protocol}."
    facts = [reported + " Nothing is selected on the test set."]
    bb = results["backbone"]
    weights = (
        "RANDOM initialisation (not comparable with any published number)"
        if bb.get("random")
        else f"{bb.get('source')} (sha256 {str(bb.get('sha256'))[:12]}…, {bb.get('weights_guess')})"
    )
    layers = ", ".join(cfg["backbone"]["layers"])
    facts.append(f"Backbone: {bb.get('arch')}, layers {layers}, weights {weights}.")
    resize = f"{data['resize']} -> centre crop {data['crop']} px"
    if data.get("category_resize"):
        resize += f" (per-category resize {data['category_resize']})"
    facts.append(f"Resolution: {resize}; masks {data['mask_mode']}; seed {cfg['seed']}.")
    # APC's stage 2 is PatchCore: its coreset keys live in the patchcore section
    section = {**cfg.get("patchcore", {}), **cfg.get(results.get("method", ""), {})}
    coreset = [
        f"{k}={section[k]}"
        for k in ("coreset_ratio", "pslabel_ratio", "bank_ratio", "coreset_method")
        if k in section
    ]
    if coreset:
        facts.append(f"Coreset: {', '.join(coreset)}.")
    manifests = [
        d["labelled_anomalies"] for d in results["details"].values() if d.get("labelled_anomalies")
    ]
    if manifests:
        m = manifests[0]
        left = ", ".join(f"{x['category']} {x['test_images_remaining']}" for x in manifests)
        facts.append(
            f"Labelled anomalies: {m['n']} defective test images per category moved into training "
            f"({m['rule']}; split_seed {m['split_seed']}; manifests in "
            f"run/<category>/labelled_anomalies.json); test images left: {left}."
        )
    else:
        facts.append("Labelled anomalies: none (the full test set is evaluated).")
    holdout = cfg.get("calibration", {}).get("holdout", 0)
    if holdout:
        facts.append(
            f"calibration.holdout={holdout}: that fraction of the normal training images is held "
            f"out of the fit for jad's thresholds (the papers fit on all of them; "
            f"--config.calibration.holdout=0 does the same)."
        )
    facts.append(
        f"Metrics: jad.metrics (exact; AU-PRO = the MVTec AD script's, FPR limit "
        f"{cfg['eval']['aupro_limit']}); F1 = F1-max."
    )
    overrides = f" with {' '.join(built.overrides)}" if built.overrides else ""
    facts.append(f"Config: configs/{built.config_file.name}{overrides}.")
    return facts + built.notes


def protocol_text(
    table: Table, built: BuiltConfig, results: Mapping[str, Any], synthetic: bool
) -> str:
    parts = [table.protocol.strip()] if table.protocol else []
    parts.append("This run: " + " ".join(run_facts(built, results)))
    if synthetic:
        parts.append(f"**{SYNTHETIC_WARNING}**")
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------
# The script entry point
# ---------------------------------------------------------------------------------------------


def parse_args(table: Table, argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    name = DATASET_NAMES.get(table.dataset, table.dataset)
    p = argparse.ArgumentParser(
        prog=f"python experiments/{table.name}.py",
        description=f"{table.title}: run jad over all categories and write results.md / "
        f"results.json beside the published numbers. Any --config.a.b=value override of "
        f"`python -m jad.train` is accepted too.",
    )
    p.add_argument("--data_root", help=f"the {name} folder (with --synthetic: a synthetic tree)")
    p.add_argument("--weights", help="a folder written by `python -m jad.convert`")
    p.add_argument("--workdir", help=f"output folder (default runs/experiments/{table.name})")
    p.add_argument("--categories", help="comma-separated subset (default: all)")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="jad's generated synthetic set with random weights (NOT comparable; a smoke run)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args, rest = p.parse_known_args(list(argv))
    bad = [a for a in rest if not re.match(r"^--config\.[A-Za-z0-9_.]+=", a)]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)} (overrides look like --config.a.b=value)")
    return args, rest


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _quiet_logs() -> None:
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    for noisy in ("orbax", "jax._src", "tensorflow_datasets", "grain"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def run(table: Table, argv: Sequence[str]) -> dict[str, Any]:
    """Parse, run jad, write ``results.{md,json}``; returns the comparison (plus ``markdown``)."""
    from jad.train_lib import runner
    from jad.utils.atomic import write_json, write_text
    from jad.utils.errors import UserError

    args, overrides = parse_args(table, argv)
    user_keys = {_override_key(a) for a in overrides}
    if not args.synthetic:
        name = DATASET_NAMES.get(table.dataset, table.dataset)
        if not args.data_root and "data.root" not in user_keys:
            raise UserError(
                f"missing --data_root=/path/to/{table.dataset} (the {name} folder); or run the "
                f"synthetic smoke test with --synthetic"
            )
        if not args.weights and "backbone.weights" not in user_keys:
            raise UserError(
                "missing --weights=/path/to/converted_weights: convert torchvision's file once "
                "with `python -m jad.convert --src wide_resnet50_2-95faca4d.pth --out "
                "weights/wrn50_v1`"
            )
    built = build_config(
        table,
        data_root=args.data_root,
        weights=args.weights,
        categories=args.categories,
        synthetic=args.synthetic,
        overrides=overrides,
    )
    default = f"runs/experiments/{table.name}" + ("_synthetic" if args.synthetic else "")
    workdir = Path(args.workdir or default)
    if args.synthetic:
        log(f"\n{'!' * 100}\n{SYNTHETIC_WARNING}\n{'!' * 100}\n")
        if args.weights:
            log(f"--weights={args.weights} is ignored with --synthetic (random weights)")
    command = f"python experiments/{table.name}.py --workdir={workdir}"
    results = runner.train_and_evaluate(
        built.config, workdir / "run", progress=not args.quiet, command=command
    )
    comparison = compare(table, results, synthetic=args.synthetic)
    protocol = protocol_text(table, built, results, args.synthetic)
    markdown = render_markdown(comparison, protocol)
    comparison |= {
        "protocol": protocol,
        "run": {
            "results_json": str(workdir / "run" / "results.json"),
            "config_file": str(built.config_file.relative_to(REPO)),
            "overrides": built.overrides,
            "jad_protocol": results.get("protocol"),
            "backbone": results.get("backbone"),
        },
    }
    write_json(workdir / "results.json", comparison)
    write_text(workdir / "results.md", markdown)
    print(markdown)
    if table.no_reference:
        print(f"no published number: {table.no_reference}")
    if args.synthetic:
        print(f"\n{'!' * 100}\n{SYNTHETIC_WARNING}\n{'!' * 100}")
    print(f"\nwritten: {workdir / 'results.md'}, {workdir / 'results.json'}")
    return comparison | {"markdown": markdown, "workdir": str(workdir)}


def main(table: Table, argv: Sequence[str] | None = None) -> int:
    """``python experiments/<table>.py ...``: a user mistake is one ``error:`` line, exit 2."""
    from jad.utils.errors import user_error_types

    _quiet_logs()
    try:
        run(table, sys.argv[1:] if argv is None else argv)
    except user_error_types() as e:
        print(
            f"error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
            file=sys.stderr,
        )
        return 2
    return 0
