"""Markdown tables rendered from ``bench/results/*.json``: the only source of the docs' figures.

Two ways in:

* **MkDocs hook** (``hooks:`` in ``mkdocs.yml``): every ``<!-- bench-table: NAME -->`` line in a
  docs page is replaced at build time by table NAME rendered from its results file, headed by
  the file, the command that wrote it, its date and its CPU. A figure in the docs therefore cannot
  drift from its JSON; a marker naming no table, or a results file that lacks a key a table
  needs, fails the build.
* **Script**: ``python bench/tables.py [NAME ...]`` prints the tables (all when none is named);
  ``--list`` lists the names.

The results files were written by several generations of the bench scripts, so everything here
reads them defensively. The CPU is taken from a ``cpu`` record (``{"model": str, "flags":
[...] or {flag: bool}}``) at the top level or under ``machine``, or from ``cpu_model`` /
``isa_flags`` keys; files written before CPUs were recorded say "CPU not recorded" plus the
facts they do hold (architecture, cores, native bf16). The date is the file's own (``date``,
``measured_at``, ...), else the date the results were committed (git), else "date not recorded".
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# The flags worth showing when a file lists all of /proc/cpuinfo's (a record that maps flag ->
# bool, as bench/_cpu.py writes, shows every flag it marks present): the ones the serving side
# reads.
from service.backends.cpu import ISA_FLAGS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MARKER = re.compile(r"^<!--\s*bench-table:\s*([\w.-]+)\s*-->\s*$", re.MULTILINE)
ARCH_NAMES = {"", "x86_64", "amd64", "aarch64", "arm64", "i386", "i686"}
DATE_KEYS = ("date", "measured_at", "finished_at", "started_at", "timestamp", "time")


class TableError(Exception):
    """A marker names no table, or a results file lacks what its table needs."""


@dataclass(frozen=True)
class Table:
    """One rendered table: which results file, how to render it, how it was made."""

    source: str  # file name under bench/results
    render: Callable[[dict], list[str]]  # JSON -> Markdown lines
    command: str  # the command that writes the file (used when the file records none)


# ---------------------------------------------------------------------------- formatting


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A Markdown table; cells are ``str()``-ed and pipes escaped."""

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    out = [line(header), line(["---"] * len(header))]
    out += [line(r) for r in rows]
    return out


def num(value: object, fmt: str = ".2f", suffix: str = "") -> str:
    """``value`` formatted, or an empty cell for missing / NaN values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:{fmt}}{suffix}"


def ratio(value: object) -> str:
    return num(value, ".2f", "x")


def pct(value: object, fmt: str = ".0f") -> str:
    return "" if value is None else num(100 * float(value), fmt, "%")


def met(flag: object) -> str:
    return "met" if flag else "**not met**"


def no_issue_refs(text: str) -> str:
    """Row titles written by older bench runs name issues; user docs do not."""
    text = re.sub(r"\s*\(the default before #\d+\)", "", text)
    return re.sub(r"before #\d+", "the previous recipe", text)


# ---------------------------------------------------------------------------- provenance


def _cpu_record(data: dict) -> tuple[str | None, list[str]]:
    """(model name, ISA flags present) from whatever CPU record the file holds."""
    machine = data.get("machine") if isinstance(data.get("machine"), dict) else {}
    model, flags = None, None
    for holder in (data, machine):
        cpu = holder.get("cpu")
        if isinstance(cpu, dict):
            model = model or cpu.get("model") or cpu.get("model_name") or cpu.get("name")
            flags = flags if flags is not None else cpu.get("flags", cpu.get("isa"))
        elif isinstance(cpu, str) and cpu.strip().lower() not in ARCH_NAMES:
            model = model or cpu
        model = model or holder.get("cpu_model")
        if flags is None:
            flags = holder.get("isa_flags", holder.get("cpu_flags"))
    if isinstance(flags, dict):
        return (str(model) if model else None), [k for k, v in flags.items() if v]
    if isinstance(flags, str):
        flags = flags.split()
    present = [f for f in ISA_FLAGS if f in set(flags or ())]
    return (str(model) if model else None), present


def _isa_cap(data: dict) -> str | None:
    """The ONEDNN_MAX_CPU_ISA a file's figures ran under (its CPU block or top level)."""
    cpu = data.get("cpu") if isinstance(data.get("cpu"), dict) else {}
    return cpu.get("onednn_max_cpu_isa") or data.get("onednn_max_cpu_isa")


def cpu_line(data: dict) -> str:
    model, flags = _cpu_record(data)
    if model:
        isa = ", ".join(flags) if flags else "none of " + ", ".join(ISA_FLAGS[:4])
        cap = _isa_cap(data)
        capped = f"; kernels capped with ONEDNN_MAX_CPU_ISA={cap}" if cap else ""
        return f"{model} (ISA: {isa}{capped})"
    machine = data.get("machine") if isinstance(data.get("machine"), dict) else {}
    known = []
    arch = machine.get("cpu") if isinstance(machine.get("cpu"), str) else data.get("machine")
    if isinstance(arch, str) and arch:
        known.append(arch)
    cores = machine.get("cpus", machine.get("threads", data.get("threads")))
    if cores:
        known.append(f"{cores} cores" if "cpus" in machine else f"{cores} threads")
    bf16 = machine.get("cpu_bf16", data.get("cpu_bf16"))
    if bf16 is not None:
        known.append("native bf16" if bf16 else "no native bf16")
    return "CPU not recorded" + (f" ({', '.join(known)})" if known else "")


def date_line(data: dict, path: Path) -> str:
    holders = [data] + [data[k] for k in ("machine",) if isinstance(data.get(k), dict)]
    for holder in holders:
        for key in DATE_KEYS:
            if isinstance(holder.get(key), str) and holder[key][:4].isdigit():
                return holder[key].replace("T", " ")[:16]
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%cs", "--", path.name],
            cwd=path.parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return f"{out} (results committed; run date not recorded)" if out else "date not recorded"


def render(name: str, results: Path = RESULTS) -> str:
    """Table ``name`` with its provenance line, as Markdown."""
    if name not in TABLES:
        raise TableError(f"no bench table {name!r}; known: {', '.join(sorted(TABLES))}")
    table = TABLES[name]
    path = results / table.source
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TableError(f"bench table {name!r}: cannot read {path}: {exc}") from exc
    try:
        body = table.render(data)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise TableError(f"bench table {name!r}: {path.name} lacks {exc!r}") from exc
    command = data.get("command") if isinstance(data.get("command"), str) else table.command
    head = (
        f"*From `bench/results/{table.source}`, written by `{command}`; "
        f"{date_line(data, path)}; {cpu_line(data)}.*"
    )
    return "\n".join([head, "", *body]) + "\n"


def expand(markdown: str, results: Path = RESULTS) -> str:
    """Replace every table marker in a page by its rendered table."""
    return MARKER.sub(lambda m: render(m.group(1), results), markdown)


# ---------------------------------------------------------------------------- the tables


def engine_latency(d: dict) -> list[str]:
    eager = {
        (r["model"], r["size"]): r["median_ms"] for r in d["latency"] if "eager" in r["contender"]
    }
    rows = [
        [
            r["model"],
            r["size"],
            r["contender"],
            num(r["gflop"], ".1f"),
            num(r["median_ms"], ".1f"),
            num(r["gflops_per_s"], ".0f"),
            pct(r["fraction_of_peak"]),
            ratio(eager.get((r["model"], r["size"]), math.nan) / r["median_ms"]),
            num(r.get("cpu_per_wall"), ".2f"),
        ]
        for r in d["latency"]
    ]
    peak = d["matmul_gflops"]["peak"]
    return [
        f"fp32 matmul peak of this machine: **{peak:.0f} GFLOP/s**.",
        "",
        *md_table(
            [
                "model",
                "size",
                "contender",
                "GFLOP",
                "median ms",
                "GFLOP/s",
                "% of peak",
                "vs eager",
                "cpu/wall",
            ],
            rows,
        ),
    ]


def engine_targets(d: dict) -> list[str]:
    def shown(name: str, value: float) -> str:
        if "%" in name:
            return pct(value)
        if "GB" in name:
            return num(value, ".2f", " GB")
        return ratio(value) if "x" in name else num(value, ".3g")

    rows = [[name, shown(name, t["value"]), met(t["met"])] for name, t in d["targets"].items()]
    rss = d.get("rss") or {}
    if rss:
        rows.append(
            [
                f"{rss['side']}x{rss['side']} image, peak RSS (VmHWM) of a fresh process",
                f"{rss['vmhwm_mb']:.0f} MB in {rss['seconds']:.0f} s ({rss.get('model', '')})",
                "",
            ]
        )
    return md_table(["target", "measured", ""], rows)


def engine_sweep(d: dict) -> list[str]:
    rows = [
        [
            s["engine"],
            f"{s['side']}x{s['side']}",
            num(s["megapixels"], ".2f"),
            "yes" if s["tiled"] else "no",
            num(s["median_s"], ".2f"),
            num(s["median_s"] / s["megapixels"], ".2f"),
        ]
        for s in d["sweep"]
    ]
    return md_table(["engine", "image", "MP", "tiled", "median s", "s per MP"], rows)


def int8_recipes(d: dict) -> list[str]:
    fp32 = 100 * d["fp32_miou"]
    rows = [
        [
            r["method"],
            "FP32" if r["fp32_head"] else "INT8",
            num(100 * r["miou"], ".2f"),
            num(-r["miou_drop_points"], "+.2f"),
            pct(r.get("fp32_agreement"), ".2f"),
            num(r["fp32_ms"], ".0f"),
            num(r["int8_ms"], ".0f"),
            ratio(r["speedup"]),
            num(r.get("quantize_s"), ".0f", " s"),
        ]
        for r in d["recipes"]
    ]
    return [
        f"FP32 validation mIoU **{fp32:.2f}** (`{d.get('checkpoint', '')}`, "
        f"{d.get('calibration_images', '?')} calibration images).",
        "",
        *md_table(
            [
                "calibration",
                "head (final conv)",
                "mIoU",
                "change vs FP32 (points)",
                "argmax agreement",
                "FP32 ms",
                "INT8 ms",
                "speed-up",
                "calibration time",
            ],
            rows,
        ),
    ]


def _levels(results: dict) -> list[str]:
    first = next(iter(results.values()))
    return sorted(first, key=int)


def http_latency(d: dict) -> list[str]:
    results = d["results"]
    levels = _levels(results)
    rows = []
    for contender, by_level in results.items():
        cells = [contender]
        for c in levels:
            r = by_level[c]
            cells.append(f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f}")
        cells.append(" / ".join(num(by_level[c]["throughput_rps"], ".2f") for c in levels))
        rows.append(cells)
    header = ["contender (slots x threads)"] + [f"c={c} p50 / p99 ms" for c in levels]
    header.append("req/s at c=" + " / ".join(levels))
    return [
        f"{d.get('what', '')}; {d.get('backend', '')} {d.get('precision', '')}, "
        f"{d.get('rounds', '?')} interleaved blocks, {d.get('requests_per_level', '?')} requests "
        "per contender and level.",
        "",
        *md_table(header, rows),
    ]


HTTP_TARGETS = {
    "c1_median_latency_ratio_vs_inprocess": "median latency at c=1 vs in-process",
    "c4_throughput_ratio_vs_inprocess": "throughput at c=4 vs in-process",
    "c4_throughput_ratio_vs_torch": "throughput at c=4 vs the torch endpoint",
    "c2_p99_over_p50": "p99 / p50 at c=2",
}


def http_targets(d: dict) -> list[str]:
    rows = [
        [
            f"fcn serve {setting}",
            HTTP_TARGETS.get(key, key),
            t["target"],
            ratio(t["value"]),
            met(t["met"]),
        ]
        for setting, targets in d["targets"].items()
        for key, t in targets.items()
    ]
    return md_table(["server", "measure", "target", "measured", ""], rows)


def batch_rows(d: dict) -> list[str]:
    rows = [
        [
            r["model"],
            r.get("precision_option", ""),
            r.get("served", r["predict"].get("served", "")),
            num(r["bare"], ".1f"),
            f"**{r['predict']['images_per_s']:.1f}**",
            num(r.get("sequential"), ".1f"),
            num(r.get("torch"), ".2f"),
            ratio(r["predict_vs_bare"]),
            ratio(r["predict_vs_torch"]),
            num(r["predict"].get("peak_rss_mb"), ".0f", " MB"),
        ]
        for r in d["rows"]
    ]
    out = [
        f"{d['images']} generated {d['side']}x{d['side']} JPEGs -> index PNGs; images/s.",
        "",
        *md_table(
            [
                "model",
                "--precision",
                "served as",
                "bare run loop (limit)",
                "fcn predict",
                "sequential loop",
                "PIL + torch eager",
                "predict / bare",
                "predict / torch",
                "peak RSS",
            ],
            rows,
        ),
    ]
    rss = d.get("rss")
    if rss:
        out += [
            "",
            f"Peak RSS of `fcn predict` ({rss['model']} model): "
            f"{rss['small']['peak_rss_mb']:.0f} MB on {rss['small']['images']} images, "
            f"{rss['large']['peak_rss_mb']:.0f} MB on {rss['large']['images']} "
            f"({rss['ratio']:.3f}x).",
        ]
    return out


def batch_checks(d: dict) -> list[str]:
    checks = d["unet"]["precision_checks"]
    ref = checks["reference"]
    rows = [[f"{ref['backend']}/{ref['precision']} (reference)", num(ref["miou"], ".2f"), "", ""]]
    rows += [
        [
            path,
            num(r["miou"], ".2f"),
            num(r["miou_delta"], "+.2f"),
            pct(r["argmax_agreement"], ".2f"),
        ]
        for path, r in checks["results"].items()
    ]
    return md_table(["path", "mIoU", "delta (points)", "argmax agreement"], rows)


def train_speed(d: dict) -> list[str]:
    rows = [
        [name, " / ".join(num(v, ".2f") for v in runs), num(d["means"][name], ".2f")]
        for name, runs in d["images_per_s"].items()
    ]
    return [
        f"Batch {d['batch']}, crop {d['crop']}, {d.get('threads', '?')} threads; images/s per "
        "interleaved segment.",
        "",
        *md_table(["loop", "images/s (segments)", "mean"], rows),
        "",
        f"`fcn train` / plain loop: **{d['ratio']:.2f}x** with the defaults, "
        f"{d['ratio_fp32']:.2f}x in float32 (`--no-bf16`).",
    ]


def _recipe_table(results: list[dict], dataset: str) -> list[str]:
    rows = [r for r in results if r["dataset"] == dataset]
    classes = list(rows[0]["per_class_iou"])
    plain = next((r["miou"] for r in rows if r["row"] == "plain"), None)
    tta = any("tta_hflip" in r for r in rows)
    header = ["", "minutes", "mIoU"]
    header += ["with hflip TTA"] if tta else []
    header += ["vs plain"] if plain else []
    header += classes + ["steps", "train img/s", "validations"]
    body = []
    for r in rows:
        title = no_issue_refs(r.get("title", r["row"]))
        cells = [f"{dataset}: {title}", num(r["minutes"], ".0f"), f"**{r['miou']:.3f}**"]
        if tta:
            cells.append(num((r.get("tta_hflip") or {}).get("miou"), ".3f"))
        if plain:
            cells.append(ratio(r["miou"] / plain))
        cells += [num(r["per_class_iou"].get(c), ".3f") for c in classes]
        n = r.get("validations", 0)
        share = r.get("val_share")
        validated = f"{n} x, {100 * share:.0f}%" if n and share is not None else "after the budget"
        cells += [r["steps"], num(r["images_per_s"], ".2f"), validated]
        body.append(cells)
    return md_table(header, body)


def recipe(d: dict) -> list[str]:
    datasets = list(dict.fromkeys(r["dataset"] for r in d["results"]))
    out: list[str] = []
    for ds in datasets:
        out += (["", f"**{ds}**", ""] if len(datasets) > 1 else []) + _recipe_table(
            d["results"], ds
        )
    return out[1:] if out and not out[0] else out


def budget(d: dict) -> list[str]:
    rows = [
        [
            r["row"],
            num(r["budget_s"], ".0f", " s"),
            num(r["wall_s"], ".0f", " s"),
            num(r["over_s"], "+.0f", " s"),
            f"{met(r['within'])} (+/- {r['allowed_over_s']:.0f} s)",
            r["epochs"],
            r["steps"],
            num(r["images_per_s"], ".2f"),
            f"{r['validations']} ({100 * r['val_share']:.0f}%)",
            num(r["best_miou"], ".3f"),
        ]
        for r in d["results"]
    ]
    header = ["run", "budget", "wall (whole process)", "over", "within", "epochs", "steps"]
    header += ["train img/s", "validations (share)", "best mIoU"]
    return md_table(header, rows)


def recipe_screen(d: dict) -> list[str]:
    runs = d["runs"]
    base = runs[0]["args"]
    classes = list(runs[0]["per_class_iou"])
    rows = []
    for r in runs:
        change = (
            " ".join(a for a in r["args"][len(base) :]) if r["args"][: len(base)] == base else ""
        )
        rows.append(
            [
                f"`{change}`" if change.startswith("--") else (change or "(defaults)"),
                f"**{r['best_val_miou']:.3f}**",
                *(num(r["per_class_iou"].get(c), ".3f") for c in classes),
                r["steps"],
                num(r["images_per_s"], ".2f"),
                f"{r.get('validations', '?')} x, {pct(r.get('val_share'))}",
            ]
        )
    cmd = " ".join(base)
    return [
        f"Every row is `{cmd}` plus the change shown; score: `fcn train`'s own validation of "
        "the best epoch (what `best.pt` holds).",
        "",
        *md_table(["change", "mIoU", *classes, "steps", "train img/s", "validations"], rows),
    ]


def backends_latency(d: dict) -> list[str]:
    rows = []
    for r in d["latency_512"]:
        meaningful = r["model"] != "fcn8s" or d.get("checkpoints", {}).get("fcn8s") not in (
            None,
            "None",
        )
        acc = [
            num(r.get("miou"), ".2f"),
            num(r.get("miou_delta"), "+.2f"),
            pct(r.get("argmax_agreement"), ".2f"),
        ]
        path = f"**{r['path']}**" if r["path"] == "auto" else r["path"]
        rows.append(
            [
                r["model"] if meaningful else f"{r['model']} (random weights)",
                path,
                r["served"],
                num(r["median_ms"], ".0f"),
                ratio(r["speedup"]),
                *(acc if meaningful else ["(not meaningful)", "", ""]),
            ]
        )
    return md_table(
        [
            "model",
            "path",
            "served as",
            "512x512 ms (median)",
            "vs ORT fp32",
            "val mIoU",
            "delta (points)",
            "argmax agreement with ORT fp32",
        ],
        rows,
    )


def backends_tiled(d: dict) -> list[str]:
    rows = [
        [
            r["model"],
            r["path"],
            f"{r['side']}x{r['side']}",
            num(r["seconds"], ".1f"),
            ratio(r["speedup"]),
        ]
        for r in d["tiled"]
    ]
    return md_table(["model", "path", "image", "seconds (one run)", "vs ORT fp32"], rows)


def backends_rss(d: dict) -> list[str]:
    rows = [
        [
            path.replace("oneDNN cache 1024 (before)", "oneDNN's default primitive cache (1024)"),
            num(r["after_20_mb"], ".0f"),
            num(r["max_after_mb"], ".0f"),
            num(r["end_mb"], ".0f"),
            num(100 * r["growth"], "+.1f", "%"),
        ]
        for path, r in d["rss_200_sizes"].items()
    ]
    return md_table(
        [
            "path",
            "RSS after 20 sizes (MB)",
            "most over the next 180 (MB)",
            "at the end (MB)",
            "growth",
        ],
        rows,
    )


def openvino_isa(d: dict) -> list[str]:
    rows = [
        [
            f"`{r['ONEDNN_MAX_CPU_ISA']}`",
            ", ".join(f"{kernel} x{n}" for kernel, n in r["kernels"].items()),
            num(r["median_ms"], ".0f"),
        ]
        for r in d["rows"]
    ]
    return md_table(["ONEDNN_MAX_CPU_ISA", "convolution kernels (OpenVINO)", "512x512 ms"], rows)


def onednn_cache(d: dict) -> list[str]:
    rows = []
    for setting, runs in d["runs"].items():
        precision, _, cache = setting.partition(" cache ")

        def both(key: str, runs: list[dict] = runs) -> str:
            return " / ".join(num(r[key], ".1f") for r in runs)

        rows.append(
            [
                precision,
                cache,
                both("fixed_512_ms"),
                both("new_shape_first_ms"),
                both("new_shape_second_ms"),
            ]
        )
    return [
        "Medians in ms, one column entry per repeat (a fresh process each).",
        "",
        *md_table(
            [
                "precision",
                "oneDNN primitive cache",
                "512x512 (seen shape)",
                "first inference at a new size",
                "second inference at it",
            ],
            rows,
        ),
    ]


def reliability(d: dict) -> list[str]:
    o, soak, term, kill = d["overload"], d["soak"], d["sigterm"], d["batch-kill"]
    rows = [
        [
            "overload",
            f"{o['seconds']:.0f} s, {o['clients']} clients on {o['capacity']} places, {o['image']}",
            f"{o['requests']} requests: {o['status_200']} x 200, {o['status_503']} x 503, "
            f"{o['server_5xx']} other 5xx, {o['rejected_without_retry_after']} 503s without Retry-After; "
            f"503 p50 / p99 / max {o['rejected_ms']['p50']:.1f} / {o['rejected_ms']['p99']:.1f} / "
            f"{o['rejected_ms']['max']:.1f} ms; /healthz p99 {o['healthz_ms']['p99']:.1f} ms",
            met(o["pass"]),
        ]
    ]
    for s in soak.values():
        if not isinstance(s, dict):
            continue
        env = ", ".join(f"{k}={v}" for k, v in (s.get("server_env") or {}).items())
        rows.append(
            [
                f"soak ({'arena on' if s['memory_arena'] else 'arena off'}{', ' + env if env else ''})",
                f"{s['requests']} requests, {s['distinct_sizes']} distinct sizes",
                f"RSS {s['rss_mb_after_200']:.0f} MB after 200 -> {s['rss_mb_end']:.0f} MB at the end "
                f"({100 * s['growth']:+.1f}%); p50 / p99 {s['latency_ms']['p50']:.0f} / {s['latency_ms']['p99']:.0f} ms",
                met(s["pass"]),
            ]
        )
    ready = term["readyz_after_signal"]
    rows.append(
        [
            "SIGTERM under load",
            f"{term['accepted']} accepted requests, {term.get('image', '')}",
            f"accepted requests answered {', '.join(map(str, sorted(set(term['accepted_statuses']))))}; /readyz "
            f"{ready['status']} {ready['ms_after_signal']:.0f} ms after the signal, new request "
            f"{ready['new_request']} `{ready['new_request_code']}`; exit {term['exit_code']} "
            f"after {term['exit_s_after_signal']:.1f} s",
            met(term["pass"]),
        ]
    )
    rs = kill["resume_statuses"]
    rows.append(
        [
            "fcn predict SIGKILL + --skip-existing",
            f"{kill['images']} images, killed after {kill['outputs_when_killed']} outputs",
            f"{kill['temp_files_after_kill']} temporary files after the kill; resume exit "
            f"{kill['resume_exit']}: {rs['ok']} ok, {rs['skipped']} skipped, {rs['failed']} failed; "
            f"{len(kill['undecodable_or_missing'])} outputs missing or undecodable",
            met(kill["pass"]),
        ]
    )
    return md_table(["part", "load", "measured", ""], rows)


def formats(d: dict) -> list[str]:
    by_job: dict[str, dict[int, dict]] = {}
    for result in d["results"]:
        for row in result["rows"]:
            by_job.setdefault(row["job"], {})[row["side"]] = row
    sides = [r["side"] for r in d["results"]]
    header = ["job", *(f"{s}x{s} median ms" for s in sides), *(f"{s}x{s} bytes" for s in sides)]
    rows = [
        [
            job,
            *(num(per_side[s]["median_ms"], ".1f") for s in sides),
            *("" if per_side[s]["bytes"] is None else f"{per_side[s]['bytes']:,}" for s in sides),
        ]
        for job, per_side in by_job.items()
    ]
    return md_table(header, rows)


def polygons_iou(d: dict) -> list[str]:
    rows = []
    for name, s in d["summary"].items():
        source, tolerance = name.split(" @ ")
        rows.append(
            [
                source,
                f"{float(tolerance):g} px",
                num(s["min_iou"], ".4f"),
                f"{s['classes_below_0.98']} / {s['classes']}",
            ]
        )
    return md_table(["masks", "tolerance", "lowest IoU of a class", "classes below 0.98"], rows)


def oip(d: dict) -> list[str]:
    rows = [
        [name, num(r["p50_ms"]), num(r["p90_ms"]), num(r["mean_ms"]), ratio(r["p50_vs_v1"])]
        for name, r in d["contenders"].items()
    ]
    image = d["image"]
    return [
        *md_table(["contender", "p50 ms", "p90 ms", "mean ms", "p50 vs v1"], rows),
        "",
        f"{image['width']}x{image['height']} image ({image['source']}), {d['rounds']} interleaved "
        f"rounds at concurrency 1; masks identical: {d['masks_identical']}; "
        f"v2 / v1 median {d['ratio_v2_over_v1_p50']:.3f} (target <= 1.05: {met(d['met'])})",
    ]


def compose(d: dict) -> list[str]:
    rows = [
        [name, num(phase["seconds"]), num(phase["load_average"])]
        for name, phase in d["phases"].items()
    ]
    rows.append(["docker total", num(d["docker_total_s"]), ""])
    images = ", ".join(f"{ref} {mb} MB" for ref, mb in d["images_mb"].items())
    largest = ", ".join(f"{k} {v}" for k, v in list(d["serve_venv_largest_mb"].items())[:6])
    ready = d["start_to_ready"]
    return [
        *md_table(["phase", "seconds", "load average (2 cores)"], rows),
        "",
        f"{d['what']}. Images: {images}; the serve image's venv {d['serve_venv_mb']} MB "
        f"(largest, MB: {largest}). Start to ready: `/readyz` answered {ready['readyz_s']} s "
        f"after `compose up`, healthy after {ready['healthy_s']} s. "
        f"E2E suite: {d['e2e_summary']}.",
    ]


def cpu_precision(d: dict) -> list[str]:
    rows = []
    for r in d["results"]:
        path = f"**{r['path']}**" if r["path"] == "auto" else r["path"]
        rows.append(
            [
                path,
                r["served"],
                num(r["median_ms"], ".0f"),
                ratio(r["speedup_vs_ort_fp32"]),
                num(r["miou"], ".2f"),
                num(r["miou_delta"], "+.2f"),
                pct(r["argmax_agreement"], ".2f"),
            ]
        )
    auto = d["auto"]
    lines = md_table(
        [
            "path",
            "served as",
            "512x512 ms (median)",
            "vs ORT fp32",
            "val mIoU",
            "delta (points)",
            "agreement with ORT fp32",
        ],
        rows,
    )
    return [*lines, "", f"`auto` here: {auto['served']} ({auto['reason']})."]


def finetune(d: dict) -> list[str]:
    """bench/finetune_bench.py: the default fine-tuned vs from scratch, same minutes."""
    classes = d["rows"][0]["classes"]
    rows = [
        [
            r["command"],
            r.get("steps", ""),
            num(r["miou"], ".4f"),
            num(r["pixel_accuracy"], ".3f"),
            *[num(v, ".3f") for v in r["per_class_iou"]],
        ]
        for r in d["rows"]
    ]
    header = ["run", "steps", "val mIoU", "pixel acc.", *classes]
    return md_table(header, rows)


def geo(d: dict) -> list[str]:
    rows = [
        [
            f"{r['width']:,} x {r['height']:,} ({r['megapixels']:g} MP, {r['km2']:g} km^2)",
            f"{r['tiles']:,} ({r['tiles_run']:,} run)",
            num(r["seconds"], ".0f", " s"),
            num(r["mp_per_s"], ".3f"),
            num(r["km2_per_hour"], ".2f"),
            num(r["peak_rss_mb"], ".0f", " MB"),
            num(r["cores_busy"], ".2f"),
            "yes" if r["cog_valid"] else "**no**",
        ]
        for r in d["runs"]
    ]
    lines = md_table(
        [
            "raster",
            "windows",
            "time",
            "MP/s",
            "km^2/hour",
            "peak RSS",
            "cores busy",
            "valid COG",
        ],
        rows,
    )
    loads = [f"{r['raster']} {r['loadavg'][0]:g}" for r in d["runs"] if r.get("loadavg")]
    if loads:
        lines += [
            "",
            f"Load average when each run started ({d['cpu'].get('cores_usable', '?')} usable "
            f"cores, a shared machine): {', '.join(loads)}. 'cores busy' is the CPU time the "
            "run got, not what it could use.",
        ]
    seams = d.get("seams")
    if seams:
        lines += [
            "",
            f"Seam check ({seams['raster']}, windows {seams['tile']}/{seams['overlap']}, "
            f"{seams['served']}): the raster path agrees with the engine's tiled mask on "
            f"{pct(seams['vs_engine_tiled'], '.2f')} of pixels; with one untiled run on "
            f"{pct(seams['vs_untiled'], '.2f')}: {pct(seams['vs_untiled_border_bands'], '.2f')} "
            f"in the 32-pixel bands around window borders "
            f"({pct(seams['border_band_share'], '.0f')} of pixels), "
            f"{pct(seams['vs_untiled_elsewhere'], '.2f')} elsewhere.",
        ]
    return lines


TABLES: dict[str, Table] = {
    "geo": Table("geo_bench.json", geo, "bench/geo_bench.py --seams"),
    "compose": Table("compose_bench.json", compose, "bench/compose_bench.py"),
    "cpu-precision-avx2": Table(
        "cpu_precision_avx2.json", cpu_precision, "bench/cpu_precision_bench.py"
    ),
    "formats": Table("formats_bench.json", formats, "bench/formats_bench.py"),
    "polygons-iou": Table("polygons_iou.json", polygons_iou, "bench/polygons_iou.py"),
    "engine-latency": Table("engine_bench.json", engine_latency, "bench/engine_bench.py"),
    "engine-targets": Table("engine_bench.json", engine_targets, "bench/engine_bench.py"),
    "engine-sweep": Table("engine_bench.json", engine_sweep, "bench/engine_bench.py"),
    "int8-recipes": Table(
        "int8_accuracy.json",
        int8_recipes,
        "bench/int8_accuracy.py --checkpoint runs/isbi-unet-r18/best.pt",
    ),
    "http-latency": Table("http_bench.json", http_latency, "bench/http_bench.py"),
    "http-targets": Table("http_bench.json", http_targets, "bench/http_bench.py"),
    "batch": Table(
        "batch_bench.json", batch_rows, "bench/batch_bench.py --unet-checkpoint RUN/best.pt"
    ),
    "batch-checks": Table(
        "batch_bench.json", batch_checks, "bench/batch_bench.py --unet-checkpoint RUN/best.pt"
    ),
    "train-speed": Table("train_speed.json", train_speed, "bench/train_speed.py"),
    "finetune": Table("finetune_bench.json", finetune, "bench/finetune_bench.py"),
    "recipe": Table("recipe_bench.json", recipe, "bench/recipe_bench.py"),
    "recipe-ablation": Table("recipe_ablation.json", recipe, "bench/recipe_bench.py"),
    "recipe-defaults": Table("recipe_ablation_defaults.json", recipe, "bench/recipe_bench.py"),
    "recipe-rerun": Table("recipe_rerun.json", recipe, "bench/recipe_bench.py"),
    "recipe-zen5": Table("recipe_bench_zen5.json", recipe, "bench/recipe_bench.py"),
    "recipe-avx2cap": Table("recipe_bench_avx2cap.json", recipe, "bench/recipe_bench.py"),
    "recipe-avx2cap-zoom": Table(
        "recipe_bench_avx2cap_zoom.json",
        recipe,
        "ONEDNN_MAX_CPU_ISA=AVX2 bench/recipe_bench.py --minutes 15 --rows fcn-fp32,plain",
    ),
    "recipe-bf16-zoom": Table(
        "recipe_bench_bf16_zoom.json",
        recipe,
        "bench/recipe_bench.py --minutes 15 --datasets dubai --rows fcn,zoom-always",
    ),
    "recipe-zoom-screen": Table(
        "recipe_screen_scale.json",
        recipe,
        "bench/recipe_bench.py --minutes 6 --datasets dubai --rows fcn,scale-1,scale-0.75-1.5,ce",
    ),
    "recipe-few-steps-screen": Table(
        "recipe_screen2.json",
        recipe,
        "bench/recipe_bench.py --minutes 6 --datasets dubai "
        "--rows fcn,val-0.03,hflip-0,lr-3e-3,batch-4,warmup-10",
    ),
    "recipe-avx2cap-light": Table(
        "recipe_bench_avx2cap_light.json",
        recipe,
        "ONEDNN_MAX_CPU_ISA=AVX2 bench/recipe_bench.py --minutes 15 --datasets dubai "
        "--rows light-decoder-fp32,plain",
    ),
    "budget": Table("budget_bench.json", budget, "bench/budget_bench.py"),
    "recipe-screen": Table(
        "recipe_screen.json",
        recipe_screen,
        "fcn train ... --max-minutes 6 (one run per row, one after another)",
    ),
    "backends-latency": Table(
        "backends_bench.json",
        backends_latency,
        "bench/backends_bench.py --unet runs/isbi-unet34/best.pt --reps 9",
    ),
    "backends-latency-zen5": Table(
        "backends_bench_zen5.json",
        backends_latency,
        "bench/backends_bench.py --unet runs/isbi-unet34/best.pt --big 0 --skip-rss",
    ),
    "backends-tiled": Table(
        "backends_bench.json",
        backends_tiled,
        "bench/backends_bench.py --unet runs/isbi-unet34/best.pt --reps 9",
    ),
    "backends-rss": Table(
        "backends_bench.json",
        backends_rss,
        "bench/backends_bench.py --unet runs/isbi-unet34/best.pt --reps 9",
    ),
    "openvino-isa": Table("openvino_isa.json", openvino_isa, "bench/openvino_isa.py"),
    "onednn-cache": Table(
        "onednn_cache_bench.json",
        onednn_cache,
        "bench/onednn_cache_bench.py --model runs/bench-models/unet-r34.onnx",
    ),
    "reliability": Table("reliability_bench.json", reliability, "bench/reliability_bench.py"),
    "oip": Table("oip_bench.json", oip, "bench/oip_bench.py"),
}


# ---------------------------------------------------------------------------- MkDocs hook


def on_page_markdown(markdown: str, page: object, config: object, files: object) -> str:
    """MkDocs hook: render the bench tables a page asks for."""
    try:
        return expand(markdown)
    except TableError as exc:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"{getattr(page, 'file', page)}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="tables to print (default: all)")
    parser.add_argument("--list", action="store_true", help="list the table names")
    args = parser.parse_args(argv)
    if args.list:
        for name, table in TABLES.items():
            print(f"{name:18} bench/results/{table.source}")
        return 0
    for name in args.names or TABLES:
        print(f"### {name}\n\n{render(name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
