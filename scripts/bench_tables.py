"""The benchmark's Markdown tables: the helpers, and the tables that set cells side by side (REST vs V2,
int8 vs float, 1 vs N workers, and the batch sizes of each cell)."""

from __future__ import annotations

from typing import Any

from bench_baselines import one_per_core
from bench_forms import INT8_FORMS, REST_VS_V2, WORKER_FORMS
from bench_load import Cell
from bench_servers import DEFAULT, FP32, INT8, ONE_WORKER, WORKERS_ENGINE, WORKERS_INLINE, Server

Index = dict[tuple[str, str, int], Cell]


def fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def yes_no(flag: bool | None) -> str:
    return "—" if flag is None else ("yes" if flag else "no")


def quotient(a: float | None, b: float | None) -> str:
    """a ÷ b with two decimals; "" when either is missing or b is 0."""
    return fmt(a / b, 2) if a is not None and b else ""


def md_table(title: str, columns: str, rows: list[list[Any]], note: str = "") -> list[str]:
    """A Markdown section; `columns` is "a|b:|c", a trailing ":" right-aligns the column."""
    names = columns.split("|")
    align = ["---:" if name.endswith(":") else "---" for name in names]
    head = [f"| {' | '.join(name.rstrip(':') for name in names)} |", f"|{'|'.join(align)}|"]
    return [
        f"## {title}",
        "",
        *([note, ""] if note else []),
        *head,
        *(f"| {' | '.join(map(str, row))} |" for row in rows),
        "",
    ]


def index(cells: list[Cell]) -> Index:
    return {(c.server, c.form, c.concurrency): c for c in cells}


def levels_of(cells: list[Cell], servers: set[str]) -> list[int]:
    return sorted({c.concurrency for c in cells if c.server in servers})


def rest_vs_v2(cells: list[Cell]) -> list[str]:
    """The default server's REST forms beside the V2 forms that send the same images."""
    at, rows = index(cells), []
    if not any(c.server == DEFAULT and c.form in REST_VS_V2 for c in cells):
        return []
    forms = [*dict.fromkeys(REST_VS_V2.values()), *REST_VS_V2]
    for concurrency in levels_of(cells, {DEFAULT}):
        for form in forms:
            if (cell := at.get((DEFAULT, form, concurrency))) is None:
                continue
            rest = at.get((DEFAULT, REST_VS_V2.get(form, ""), concurrency))
            protocol = (
                "REST" if form not in REST_VS_V2 else "V2, tritonclient" if form == "tritonclient" else "V2"
            )
            speed = [fmt(cell.req_s, 0), fmt(cell.inputs_per_s, 0), fmt(cell.p50_ms, 2), fmt(cell.cpu_us, 0)]
            versus = f"{quotient(cell.req_s, rest.req_s)} ({rest.form})" if rest and rest.req_s else ""
            rows.append([protocol, form, concurrency, *speed, versus])
    note = (
        "Each V2 form beside the REST form that sends the same images in the same encoding (JSON numbers, "
        "or raw uint8 bytes). `hey` sends every form but tritonclient's: Triton's HTTP client, in the "
        "bench process, at the same concurrency. CPU is the server's, per request."
    )
    columns = "protocol|form|c:|req/s:|images/s:|p50 ms:|CPU µs/req:|req/s ÷ REST's:"
    return md_table("REST vs V2 (the default rnnserve)", columns, rows, note) if rows else []


def int8_vs_float(cells: list[Cell], ort: list[dict[str, Any]]) -> list[str]:
    """rnnserve with RNNSERVE_PRECISION=int8 beside fp32, and ONNX Runtime alone on both graphs."""
    at, rows = index(cells), []
    for form in INT8_FORMS:
        for concurrency in levels_of(cells, {INT8, FP32}):
            fp32, int8 = at.get((FP32, form, concurrency)), at.get((INT8, form, concurrency))
            if fp32 is None and int8 is None:
                continue
            rates = [fp32.inputs_per_s if fp32 else None, int8.inputs_per_s if int8 else None]
            rows.append(
                [f"rnnserve, {form}", concurrency, *map(fmt, rates, (0, 0)), quotient(rates[1], rates[0])]
            )
    digits = (r for r in one_per_core(ort) if r["model"] == "digit_lstm")
    alone = {(r["precision"], r["batch"]): r["inputs_per_s"] for r in digits}
    for batch in sorted({batch for precision, batch in alone if precision == "int8"}):
        fp32_rate, int8_rate = alone.get(("fp32", batch)), alone[("int8", batch)]
        rows.append(
            [
                "ONNX Runtime alone",
                batch,
                fmt(fp32_rate, 0),
                fmt(int8_rate, 0),
                quotient(int8_rate, fp32_rate),
            ]
        )
    note = (
        "digit_lstm's newest version: its float graph (model.onnx) and its int8 variant (model.int8.onnx). "
        "rnnserve rows: the default configuration with RNNSERVE_PRECISION=fp32 or int8, images/s at "
        "concurrency c; ONNX Runtime rows: the graph alone in the bench process, at that batch size."
    )
    columns = "measured|c or batch:|float images/s:|int8 images/s:|int8 ÷ float:"
    return md_table("int8 vs float", columns, rows, note) if rows else []


def workers(cells: list[Cell], server_list: list[Server]) -> list[str]:
    """The default number of workers, and two workers either way, against one worker."""
    at, rows = index(cells), []
    others = (DEFAULT, WORKERS_ENGINE, WORKERS_INLINE)
    for form in WORKER_FORMS:
        for concurrency in levels_of(cells, {ONE_WORKER}):
            one = at.get((ONE_WORKER, form, concurrency))
            found = [at.get((name, form, concurrency)) for name in others]
            if one is None and not any(found):
                continue
            rates = [one.req_s if one else None, *(c.req_s if c else None for c in found)]
            versus = [quotient(rate, rates[0]) for rate in rates[2:]]
            rows.append(
                [form, concurrency, fmt(rates[0], 0), fmt(rates[1], 0), quotient(rates[1], rates[0]), *versus]
            )
    processes = next((s.processes for s in server_list if s.name == DEFAULT), None)
    note = f"The default configuration's process tree held {processes or 'an unknown number of'} processes "
    note += "(the server, its workers and helpers); req/s at concurrency c, each ÷ RNNSERVE_WORKERS=1's."
    columns = "form|c:|1 worker req/s:|default req/s:|default ÷ 1 worker:|2 workers, shared engine ÷ 1:"
    columns += "|2 workers, independent ÷ 1:"
    return md_table("1 vs N workers", columns, rows, note) if rows else []


def batch_sizes(cells: list[Cell]) -> list[str]:
    """Model calls per bucket of `rnnserve_batch_size` in each cell, up to the largest bucket used."""
    measured = [c for c in cells if c.batch_sizes]
    every = sorted({b for c in measured for b in c.batch_sizes or {}}, key=float)
    used = [b for b in every if any((c.batch_sizes or {}).get(b) for c in measured)]
    bounds = every[: every.index(used[-1]) + 1] if used else []
    labels = [
        f"≤ {float(b):g}:" if b != "+Inf" else f"> {float(every[-2] if len(every) > 1 else 0):g}:"
        for b in bounds
    ]
    rows = [
        [c.server, c.form, c.concurrency, fmt(sum((c.batch_sizes or {}).values()), 0), fmt(c.mean_batch)]
        + [fmt((c.batch_sizes or {}).get(b, 0.0), 0) for b in bounds]
        for c in measured
    ]
    note = "Model calls in each cell (warm-up excluded) by batch size, from the server's rnnserve_batch_size."
    columns = "|".join(["server|form|c:|model calls:|mean batch:", *labels])
    return md_table("Batch sizes per cell", columns, rows, note) if rows else []
