"""One self-contained HTML page for a finished search run.

It reads only the run folder (``results.json``, ``manifest.json``, ``trials.csv``,
``test_predictions.csv``) and writes ``report.html`` beside them: the summary, the leaderboard,
the optimisation history, the ensemble's weights, confusion matrices of the best prompt and of the
ensemble on test, and the manifest. Plots are matplotlib PNGs embedded as data URIs, so the page
opens from disk with no server, no script and nothing fetched.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoprompt_search.errors import UserError
from autoprompt_search.fileio import atomic_write_text
from autoprompt_search.label_free import AGREEMENT_RULE
from autoprompt_search.run_folder import PREDICTIONS, REPORT, RESULTS, TRIAL_COLUMNS, TRIALS, RunFolder
from autoprompt_search.templates import outline

SECTIONS = ("summary", "leaderboard", "history", "ensemble", "confusion", "manifest")
LEADERBOARD_ROWS = 20
REPORT_COLUMNS = TRIAL_COLUMNS[:10]  # the ones a report reads (trials.csv of earlier runs lack the others)


@dataclass(frozen=True)
class RunFiles:
    """What a report is made of, read from a run folder."""

    folder: Path
    results: dict[str, Any]
    manifest: dict[str, Any]
    trials: list[dict[str, str]]
    predictions: list[dict[str, str]] | None


def read_run(folder: str | Path) -> RunFiles:
    """The run's files, checked; a folder that is not a finished search run is a user error."""
    run = RunFolder(folder)
    run.check_finished()
    results = run.results()
    for key in ("best", "ensemble"):
        if not isinstance(results.get(key), dict):
            raise UserError(f"{run.file(RESULTS)}: no {key!r} entry: not the results of a search")
    trials = run.read_csv(TRIALS, REPORT_COLUMNS)
    predictions = run.read_csv(PREDICTIONS, ("gold", "best", "ensemble")) if run.file(PREDICTIONS).is_file() else None
    return RunFiles(run.path, results, run.manifest(), trials, predictions)


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's HTML report (default ``RUN/report.html``) atomically and return its path."""
    run = read_run(folder)
    target = Path(out) if out else run.folder / REPORT
    if target.is_dir():
        raise UserError(f"{target}: is a folder; give a file name such as {target / REPORT}", option="out")
    page = render(run)
    try:
        return atomic_write_text(target, page)
    except OSError as error:
        raise UserError(f"cannot write {target}: {error.strerror or error}") from None


def leaderboard_rows(trials: list[dict[str, str]]) -> list[dict[str, str]]:
    """Completed, non-repeated trials in the search's own order (:func:`ranking.ranking_key`)."""
    from autoprompt_search.ranking import ranking_key

    done = [t for t in trials if t["state"] == "COMPLETE" and t["value"] and not t.get("repeat_of")]
    margin = lambda t: _number(t["mean_margin"]) if t["mean_margin"] else float("-inf")  # noqa: E731
    return sorted(done, key=lambda t: ranking_key(float(t["value"]), margin(t), t["template"], _words(t["verbalizer"]), t["calibration"]))


def render(run: RunFiles) -> str:
    manifest = run.manifest
    space = manifest.get("space") or {}
    title = f"{space.get('name', 'search')} · {(manifest.get('model') or {}).get('name', '?')} · seed {manifest.get('seed')}"
    parts = {
        "summary": ("Summary", _summary(run)),
        "leaderboard": ("Leaderboard", _leaderboard(run)),
        "history": ("Optimisation history", _history(run)),
        "ensemble": ("Ensemble weights", _ensemble(run)),
        "confusion": ("Confusion matrices on test", _confusion(run)),
        "manifest": ("Manifest", f"<pre class=manifest>{_e(json.dumps(manifest, indent=2, ensure_ascii=False))}</pre>"),
    }
    navigation = " · ".join(f'<a href="#{key}">{_e(heading)}</a>' for key, (heading, _) in parts.items())
    body = "\n".join(f'<section id="{key}">\n<h2>{_e(heading)}</h2>\n{content}\n</section>' for key, (heading, content) in parts.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }} th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }} tr.manual td {{ color: #555; }}
pre {{ background: #f6f6f6; padding: 1em; overflow: auto; font-size: 0.8em; }} pre.manifest {{ max-height: 40em; }}
code {{ white-space: pre-wrap; }}
img {{ max-width: 100%; }} nav {{ margin-bottom: 1em; }}
</style></head>
<body>
<h1>{_e(title)}</h1>
<nav>{navigation}</nav>
{body}
</body></html>
"""


def _estimate_cell(estimate: dict[str, Any] | None) -> str:
    """The held-out estimate with its interval; said plainly when the interval includes chance."""
    if not estimate or estimate.get("accuracy") is None:
        return "&ndash;"
    low, high = estimate["interval"]
    text = f"{estimate['accuracy']:.4f} [{low:.3f}, {high:.3f}]"
    return text + (f"<br>includes chance ({estimate['chance']:.2f}): not shown to beat guessing" if estimate["includes_chance"] else "")


def _summary(run: RunFiles) -> str:
    results, manifest = run.results, run.manifest
    dataset = results.get("dataset") or {}
    splits = dataset.get("splits", {})
    rows = []
    for name, label in (("best_manual", "best manual prompt"), ("best", "searched single prompt"), ("ensemble", "ensemble")):
        entry = results.get(name)
        if not entry:
            continue
        cells = [entry["train_dev"]["accuracy"], entry["dev"]["accuracy"], entry["test"]["accuracy"], entry["test"]["macro_f1"]]
        rows.append(f"<tr><td>{_e(label)}</td>" + f'<td class="num">{_estimate_cell(entry.get("estimate"))}</td>'
                    + "".join(f'<td class="num">{value:.4f}</td>' for value in cells) + "</tr>")
    timings = results.get("timings", {})
    model = manifest.get("model") or {}
    facts = [
        (
            "dataset",
            f"{dataset.get('name')} (K={dataset.get('k')}, train {splits.get('train', {}).get('n')}, "
            f"dev {splits.get('dev', {}).get('n')}, test {splits.get('test', {}).get('n')})",
        ),
        ("model", f"{model.get('name')} ({model.get('kind')}, weights sha256 {str(model.get('weights_sha256', ''))[:12]}…)"),
        ("objective", results.get("objective")),
        ("wall time", f"{timings.get('total_seconds', 0):.0f} s, of which forward passes {timings.get('forward_seconds', 0):.0f} s"),
        ("command", _command((manifest.get("provenance") or {}).get("command"))),
    ]
    best = results["best"]
    return (
        "<table><tr><th></th><th>held-out estimate (95% interval)</th><th>train+dev accuracy (chosen on it)</th><th>dev accuracy</th>"
        "<th>test accuracy</th><th>test macro-F1</th></tr>"
        + "".join(rows)
        + "</table>\n<p>Best prompt: "
        + _prompt(best["template"], best["verbalizer"], best["calibration"], _demonstrations(run))
        + (f" (#{best['rank']} of the leaderboard: {_e(AGREEMENT_RULE)})" if best.get("selected_by") == "agreement" else "")
        + "</p>\n<table>"
        + "".join(f"<tr><th>{_e(key)}</th><td>{_e(str(value))}</td></tr>" for key, value in facts)
        + "</table>"
    )


def _leaderboard(run: RunFiles) -> str:
    rows = leaderboard_rows(run.trials)
    header = ("<tr><th>#</th><th>trial</th><th>score</th><th>accuracy</th><th>macro-F1</th><th>margin</th><th>calibration</th>"
              "<th>prompt</th></tr>")
    body = []
    for rank, trial in enumerate(rows[:LEADERBOARD_ROWS], 1):
        manual = trial["manual"] == "True"
        numbers = "".join(f'<td class="num">{_number(trial[key]):.4f}</td>' for key in ("value", "accuracy", "macro_f1", "mean_margin"))
        body.append(
            f'<tr{" class=manual" if manual else ""}><td class="num">{rank}</td><td class="num">{_e(trial["number"])}</td>{numbers}'
            f"<td>{_e(trial['calibration'])}</td><td>{_prompt(trial['template'], _words(trial['verbalizer']), None, _demonstrations(run))}"
            f"{' (manual)' if manual else ''}</td></tr>"
        )
    states: dict[str, int] = {}
    for trial in run.trials:
        states[trial["state"]] = states.get(trial["state"], 0) + 1
    counts = ", ".join(f"{count} {state.lower()}" for state, count in sorted(states.items()))
    return (
        f"<p>{len(rows)} distinct completed trials ({counts}); the top {min(len(rows), LEADERBOARD_ROWS)}, ranked on train+dev "
        f"by the objective, then the mean log-likelihood margin.</p>\n<table>{header}{''.join(body)}</table>"
    )


def _history(run: RunFiles) -> str:
    figure = _new_figure(8, 3.6)
    axes = figure.subplots()
    done = [t for t in run.trials if t["state"] == "COMPLETE" and t["value"]]
    for manual, colour, label in ((True, "#888888", "manual baseline"), (False, "#1f77b4", "searched")):
        points = [(int(t["number"]), float(t["value"])) for t in done if (t["manual"] == "True") == manual]
        if points:
            axes.scatter(*zip(*points), s=14, color=colour, label=label)
    best, line = float("-inf"), []
    for trial in sorted(done, key=lambda t: int(t["number"])):
        best = max(best, float(trial["value"]))
        line.append((int(trial["number"]), best))
    if line:
        axes.step(*zip(*line), where="post", color="#d62728", label="best so far")
    pruned = [int(t["number"]) for t in run.trials if t["state"] == "PRUNED"]
    if pruned:
        low = min((float(t["value"]) for t in done), default=0.0)
        axes.scatter(pruned, [low] * len(pruned), marker="x", s=14, color="#999999", label="pruned")
    axes.set_xlabel("trial")
    axes.set_ylabel(f"{run.results.get('objective', 'objective')} on train+dev")
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(alpha=0.3)
    return _image(figure, "optimisation history")


def _ensemble(run: RunFiles) -> str:
    ensemble = run.results["ensemble"]
    members, weights = ensemble["members"], ensemble["weights"]
    shown = [_short(outline(m["template"], _demonstrations(run))) for m in members]
    names = [
        _plot_text(f"#{m['trial']} {name} [{'/'.join(w[0] for w in m['verbalizer'].values())}, {m['calibration']}]")
        for m, name in zip(members, shown)
    ]
    figure = _new_figure(8, 0.5 + 0.4 * len(members))
    axes = figure.subplots()
    axes.barh(range(len(members)), weights, color="#2ca02c")
    axes.set_yticks(range(len(members)), names, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("weight")
    figure.tight_layout()
    rows = "".join(
        f'<tr><td class="num">{weight:.3f}</td><td class="num">{m["test"]["accuracy"]:.4f}</td>'
        f"<td>{_prompt(m['template'], m['verbalizer'], m['calibration'], _demonstrations(run))}</td></tr>"
        for m, weight in zip(members, weights)
    )
    return (
        _image(figure, "ensemble weights")
        + "\n<table><tr><th>weight</th><th>test accuracy alone</th><th>prompt</th></tr>"
        + rows
        + f"</table>\n<p>Ensemble test accuracy {ensemble['test']['accuracy']:.4f}, macro-F1 {ensemble['test']['macro_f1']:.4f}.</p>"
    )


def _confusion(run: RunFiles) -> str:
    import numpy as np
    from sklearn.metrics import confusion_matrix

    if run.predictions is None:
        return f"<p>This run has no {PREDICTIONS} (it was made before the search wrote one): no confusion matrix.</p>"
    if not run.predictions:
        return f"<p>{PREDICTIONS} holds no example: no confusion matrix.</p>"
    labels = [column[len("best_p_") :] for column in run.predictions[0] if column.startswith("best_p_")]
    gold = [row["gold"] for row in run.predictions]
    figure = _new_figure(4.2 * 2, 3.8)
    for axes, (column, name) in zip(figure.subplots(1, 2), (("best", "best prompt"), ("ensemble", "ensemble"))):
        matrix = confusion_matrix(gold, [row[column] for row in run.predictions], labels=labels)
        axes.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            axes.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black", fontsize=8)
        axes.set_xticks(range(len(labels)), [_plot_text(label) for label in labels], rotation=45, ha="right", fontsize=8)
        axes.set_yticks(range(len(labels)), [_plot_text(label) for label in labels], fontsize=8)
        axes.set_xlabel("predicted")
        axes.set_ylabel("gold")
        accuracy = sum(g == p for g, p in zip(gold, (row[column] for row in run.predictions))) / len(gold)
        axes.set_title(f"{name}: accuracy {accuracy:.4f}", fontsize=9)
    figure.tight_layout()
    return _image(figure, "confusion matrices") + f"\n<p>{len(gold)} test examples; rows are the gold labels.</p>"


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    return Figure(figsize=(width, height), dpi=100)


def _image(figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{encoded}">'


def _demonstrations(run: RunFiles) -> Any:
    """The demonstration generator's record, which outlines its templates (:func:`templates.outline`)."""
    return (run.manifest.get("pools") or {}).get("demonstrations")


def _prompt(template: str, verbalizer: dict[str, list[str]], calibration: str | None, demonstrations: Any = None) -> str:
    """A prompt as a table shows it; a template with demonstrations by its outline, its full text on hover."""
    words = "; ".join(f"{label} → {', '.join(words)}" for label, words in verbalizer.items())
    shown = outline(template, demonstrations)
    code = f"<code>{_e(shown)}</code>" if shown == template else f'<code title="{_e(template)}">{_e(shown)}</code>'
    return f"{code} [{_e(words)}]" + (f" ({_e(calibration)})" if calibration else "")


def _number(text: str) -> float:
    """A numeric CSV cell; blank (a trial that stopped before reporting it) reads as NaN."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def _words(text: str) -> dict[str, list[str]]:
    """A trial's verbalizer from its CSV cell (empty where the cell is unreadable)."""
    try:
        words = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return words if isinstance(words, dict) else {}


def _plot_text(text: str) -> str:
    """Text for matplotlib, which would read a pair of $ as mathematics."""
    return text.replace("$", r"\$")


def _command(command: str | list[str] | None) -> str:
    return " ".join(command) if isinstance(command, list) else str(command or "")


def _short(template: str, length: int = 48) -> str:
    flat = template.replace("\n", "\\n")
    return flat if len(flat) <= length else flat[: length - 1] + "…"


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)
