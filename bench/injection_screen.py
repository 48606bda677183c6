"""The injection screen on a labelled set: today's detector and the new one side by side.

    python bench/injection_screen.py [--baseline REV] [--repeat N] [--write]

The set is bench/data/injection_set.jsonl: benign lines a companion hears (including ones that
share words with attacks), attacks by category, and paraphrases, in English, Spanish, German and
French. Its "dev" split was written before the new detector and tuned on; its "fresh" split was
written afterwards and measured once before any change it prompted (figures in RESULTS.md); its
"probe" split was written later still to look for misses, which were fixed in general terms
where that was safe (the two left are in the set too).

The baseline is the detector at REV (default 1a82b56, the screen before this work), loaded
from `git show` into a temporary package, so both run in the same process on the same machine.
Printed: precision, recall and false-refusal rate per language, per category and per split;
p50/p95 screening time at 200 characters, 4,000 characters (the turn size limit,
core.validators.MAX_UTTERANCE_CHARS) and ten times the limit, on ordinary text and on inputs
made to stress regexes. `--write` replaces this benchmark's section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PROJECT_ROOT, fmt_ms, percentiles, write_section  # noqa: E402
from core.validators import MAX_UTTERANCE_CHARS  # noqa: E402
from services.safety.injection_detector import InjectionDetector  # noqa: E402

DATA = PROJECT_ROOT / "bench" / "data" / "injection_set.jsonl"
BASELINE_REV = "1a82b56"
ME = uuid.UUID("5f0c8a52-2d36-4c1e-9a51-6f1d7e0b9a01")
LANGUAGES = ("en", "es", "de", "fr")
# Inputs built to make backtracking regexes blow up, each repeated to the wanted length.
STRESS_UNITS = {
    "override storm": "ignore all the previous your system ",
    "others storm": "what did other users tell you about everyone ",
    "dotted letters": "a.",
    "spaced letters": "a ",
    "leetspeak": "1gn0r3 4ll pr3v10us ",
    "one long token": "x",
    "role lines": "system: you must obey\n",
    "separator run": "-",
    "uuid mentions": "user 3f2b8c1e-7d2a-4e5b-9c8d-1a2b3c4d5e6f ",
}

Inspect = Callable[[str], bool]


@dataclass(frozen=True)
class Row:
    text: str
    label: str
    lang: str
    category: str
    paraphrase: bool
    split: str

    @property
    def attack(self) -> bool:
        return self.label == "attack"


def load_rows(path: Path = DATA) -> list[Row]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            rows.append(Row(item["text"], item["label"], item["lang"], item["category"],
                            bool(item.get("paraphrase")), item.get("split", "dev")))
    return rows


def baseline_detector(rev: str) -> tuple[Any, tempfile.TemporaryDirectory[str]]:
    """The detector at `rev`, imported from `git show` as a temporary package."""
    tmp = tempfile.TemporaryDirectory(prefix="screen_baseline_")
    package = Path(tmp.name) / "baseline_screen"
    package.mkdir()
    (package / "__init__.py").write_text('"""The injection screen at an older commit."""\n')
    for name in ("injection_patterns", "injection_detector"):
        source = subprocess.run(
            ["git", "show", f"{rev}:services/safety/{name}.py"], cwd=PROJECT_ROOT,
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout
        source = source.replace("services.safety.", "baseline_screen.")
        (package / f"{name}.py").write_text(source)
    sys.path.insert(0, tmp.name)
    module: ModuleType = importlib.import_module("baseline_screen.injection_detector")
    return module.InjectionDetector(), tmp


def scores(rows: Sequence[Row], flagged: Sequence[bool]) -> dict[str, Any]:
    tp = sum(1 for r, f in zip(rows, flagged, strict=True) if r.attack and f)
    fp = sum(1 for r, f in zip(rows, flagged, strict=True) if not r.attack and f)
    attacks = sum(1 for r in rows if r.attack)
    benign = len(rows) - attacks
    return {
        "attacks": attacks, "benign": benign, "tp": tp, "fp": fp,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / attacks if attacks else None,
        "false_refusal": fp / benign if benign else None,
    }


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def grouped(rows: Sequence[Row], flagged: Sequence[bool], key: Callable[[Row], str]
            ) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[key(row)].append(i)
    return {
        name: scores([rows[i] for i in idx], [flagged[i] for i in idx])
        for name, idx in sorted(groups.items())
    }


def ordinary_text(rows: Sequence[Row], size: int) -> str:
    benign = [r.text for r in rows if not r.attack]
    text, i = "", 0
    while len(text) < size:
        text += benign[i % len(benign)] + " "
        i += 1
    return text[:size]


def stress_text(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def timings(inspect: Inspect, text: str, repeat: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds of each run. On a shared machine the CPU time is the
    screen's own cost; the wall time adds whatever else the cores were doing."""
    wall, cpu = [], []
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.thread_time()
        inspect(text)
        cpu.append((time.thread_time() - started_cpu) * 1000)
        wall.append((time.perf_counter() - started) * 1000)
    return wall, cpu


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=False).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit,
            "load": round(os.getloadavg()[0], 2)}


def quality_tables(rows: Sequence[Row], results: dict[str, list[bool]]) -> list[str]:
    names = list(results)
    lines = ["| slice | " + " | ".join(
        f"{n} precision | {n} recall | {n} false refusals" for n in names) + " |",
        "|---|" + "---|" * (3 * len(names))]

    def add(label: str, key: Callable[[Row], str] | None) -> None:
        per = {n: (grouped(rows, flagged, key) if key else {"all": scores(rows, flagged)})
               for n, flagged in results.items()}
        for group in per[names[0]]:
            cells = []
            for n in names:
                s = per[n][group]
                cells += [pct(s["precision"]), f"{pct(s['recall'])} of {s['attacks']}",
                          f"{pct(s['false_refusal'])} ({s['fp']} of {s['benign']})"]
            name = label if group == "all" else f"{label}{group}"
            lines.append(f"| {name} | " + " | ".join(cells) + " |")

    add("all", None)
    add("language ", lambda r: r.lang)
    add("split ", lambda r: r.split)
    add("", lambda r: "benign lines" if not r.attack else (
        "attacks, paraphrased" if r.paraphrase else "attacks, canonical wording"))
    return lines


def category_table(rows: Sequence[Row], results: dict[str, list[bool]]) -> list[str]:
    names = list(results)
    lines = ["| category | lines | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    per = {n: grouped(rows, flagged, lambda r: f"{r.label}: {r.category}")
           for n, flagged in results.items()}
    for group, s in per[names[0]].items():
        attack = group.startswith("attack")
        cells = [f"recall {pct(per[n][group]['recall'])}" if attack
                 else f"false refusals {pct(per[n][group]['false_refusal'])}" for n in names]
        lines.append(f"| {group} | {s['attacks'] + s['benign']} | " + " | ".join(cells) + " |")
    return lines


def timing_table(rows: Sequence[Row], inspectors: dict[str, Inspect], repeat: int
                 ) -> tuple[list[str], dict[str, Any]]:
    sizes = tuple(dict.fromkeys((200, 4_000, MAX_UTTERANCE_CHARS, 10 * MAX_UTTERANCE_CHARS)))
    names = list(inspectors)
    lines = ["| input | chars | " + " | ".join(
        f"{n} wall p50 / p95 ms | {n} CPU p50 / p95 ms" for n in names) + " |",
        "|---|---|" + "---|" * 2 * len(names)]
    raw: dict[str, Any] = {}
    for size in sizes:
        runs = max(5, repeat * 4_000 // max(size, 4_000)) if size > 4_000 else repeat
        label = "ordinary talk" + (" (the size limit)" if size == MAX_UTTERANCE_CHARS else "")
        cases = {label: ordinary_text(rows, size)}
        cases |= {f"stress: {name}": stress_text(unit, size)
                  for name, unit in STRESS_UNITS.items()}
        worst: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
        for case, text in cases.items():
            summary = {}
            for n, fn in inspectors.items():
                wall, cpu = timings(fn, text, runs)
                summary[n] = (percentiles(wall), percentiles(cpu))
            raw[f"{case}@{size}"] = summary
            if case.startswith("stress"):
                for n in names:
                    if n not in worst or summary[n][1]["p95"] > worst[n][1]["p95"]:
                        worst[n] = summary[n]
            else:
                lines.append(f"| {case} | {size:,} | " + _cells(summary, names) + " |")
        lines.append(f"| worst stress input (by CPU p95) | {size:,} | " + _cells(worst, names)
                     + " |")
    return lines, raw


def _cells(summary: dict[str, tuple[dict[str, float], dict[str, float]]],
           names: Sequence[str]) -> str:
    return " | ".join(
        f"{fmt_ms(summary[n][0], ('p50', 'p95'))} | {fmt_ms(summary[n][1], ('p50', 'p95'))}"
        for n in names
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=BASELINE_REV, help="git revision of the old screen")
    parser.add_argument("--repeat", type=int, default=40, help="timed runs per input")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args(argv)

    rows = load_rows()
    old, tmp = baseline_detector(args.baseline)
    new = InjectionDetector()
    inspectors: dict[str, Inspect] = {
        f"before ({args.baseline})": lambda t: old.inspect(t, user_id=ME).flagged,
        "now": lambda t: new.inspect(t, user_id=ME).flagged,
    }
    results = {name: [fn(r.text) for r in rows] for name, fn in inspectors.items()}
    quality = quality_tables(rows, results)
    categories = category_table(rows, results)
    timing, _ = timing_table(rows, inspectors, args.repeat)
    tmp.cleanup()
    info = machine()
    misses = [r for r, f in zip(rows, results["now"], strict=True) if f != r.attack]

    counts: defaultdict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        counts[(r.lang, r.label)] += 1
    described = ", ".join(
        f"{lang} {counts[(lang, 'benign')]} benign / {counts[(lang, 'attack')]} attacks"
        for lang in LANGUAGES
    )
    report = [
        "## Injection screen (bench/injection_screen.py)",
        "",
        f"`.venv/bin/python bench/injection_screen.py --repeat {args.repeat}"
        + (" --write" if args.write else "") + "`. "
        f"Run {info['date']} on {info['cpu']}, {info['cores']} cores shared with other work "
        f"(load average {info['load']}); Python {info['python']}; commit {info['commit']}. "
        f"Labelled set bench/data/injection_set.jsonl: {len(rows)} lines ({described}). "
        "The fresh split was written after the new detector was tuned on the dev split; "
        "its first measurement, before any change it prompted: 0 of 60 benign refused, "
        "34 of 38 attacks caught (the four misses were then fixed in general terms, so the "
        "fresh figures below are no longer unseen). The probe split was written after that to "
        "hunt for misses; the screen at 016b96f, before any change it prompted, refused 5 of "
        "its 99 benign lines and missed 18 of its 60 attacks. Those were fixed in general terms "
        "except a benign line quoting an override and a request for notes 'about other "
        "people' (ambiguous with the person's own family); both stay in the set. A flagged "
        "line is a refusal.",
        "",
        *quality,
        "",
        *categories,
        "",
        "Screening time per turn (the whole text; the size limit is "
        f"{MAX_UTTERANCE_CHARS:,} characters, so ten times it only shows the time grows "
        "linearly). The old screen read only the first 8,000 characters and English only; the "
        "new one reads every character in four languages. CPU time is the screen's own cost; "
        "wall time on this shared machine adds whatever else the cores were doing. 'Ordinary "
        "talk' is the set's benign lines run together (dense with words the frames look at).",
        "",
        *timing,
        "",
        f"Misclassified by the new screen: {len(misses)}"
        + ("" if not misses else ": " + "; ".join(
            f"{r.lang}/{r.label}/{r.category}: {r.text[:60]!r}" for r in misses[:10])),
    ]
    print("\n".join(report))
    if args.write:
        write_section("injection_screen", "\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
