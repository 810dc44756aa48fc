"""The Markdown report of a bench run: one table per section (the 508 px setting, the bundled
default model), each ratio beside its multiply-add floor."""

from __future__ import annotations

from typing import Any

LABELS = (("fctl", ""), ("fctl_exact", ", exact context"))


def _section(r: dict[str, Any], title: str) -> list[str]:
    c = r["config"]
    fl = r.get("floors", {})
    lines = [f"### {title}", "",
             f"Backbone `{c['backbone']}`, patch {c['patch_size']} px, contexts "
             f"{c['medium_context']} / {c['large_context']}. FCtL in the default mode (shared "
             "medium context) unless the row says *exact context* (per-patch contexts).", "",
             "| measure | FCtL | FCN-8s baseline | FCtL / baseline | multiply-add floor |",
             "|---|---|---|---|---|"]

    def row(label: str, a: float, b: float, fmt: str = "{:.3f}", floor: float | None = None
            ) -> None:
        fl_txt = f"{floor:.2f}x" if floor is not None else ""
        lines.append(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {a / b:.2f}x | {fl_txt} |")

    for key in r["patch"]["fctl"]:
        bl = r["patch"]["baseline"][key]
        for name, label in LABELS:
            f = r["patch"][name][key]
            floor = fl.get("per_patch" if name == "fctl" else "per_patch_exact")
            row(f"s per patch ({key}){label}", f["per_patch_s"], bl["per_patch_s"], floor=floor)
            row(f"patches per s ({key}){label}", f["patches_per_s"], bl["patches_per_s"],
                "{:.2f}")
            if "peak_gpu_mb" in f:
                row(f"peak GPU MB ({key}){label}", f["peak_gpu_mb"], bl["peak_gpu_mb"], "{:.0f}")
    if fl:
        row("GMACs per patch", fl["gmacs_per_patch_fctl"], fl["gmacs_per_patch_baseline"],
            "{:.2f}")
        row("GMACs per patch, exact context", fl["gmacs_per_patch_fctl_exact"],
            fl["gmacs_per_patch_baseline"], "{:.2f}")
    mem = r.get("memory", {})
    for name, label in LABELS:
        f, bl = mem.get(name), mem.get("baseline")
        if f and bl:
            for dtype in ("fp32", "bf16"):
                row(f"activation MB per patch, batched, {dtype}{label}",
                    f[f"activations_{dtype}_mb"], bl[f"activations_{dtype}_mb"], "{:.0f}")
    if mem.get("fctl"):
        row("weights MB", mem["fctl"]["weights_mb"], mem["baseline"]["weights_mb"], "{:.1f}")
    for size, rr in r["raster"].items():
        bl = rr["baseline"]
        for key, label in LABELS:
            f = rr[key]
            floor = fl.get(f"raster_{size}" + ("" if key == "fctl" else "_exact"))
            row(f"{size} x {size} wall s{label}", f["wall_s"], bl["wall_s"], "{:.1f}", floor)
            row(f"{size} x {size} s per megapixel{label}", f["s_per_megapixel"],
                bl["s_per_megapixel"], "{:.2f}")
            row(f"{size} x {size} peak RSS MB{label}", f["peak_rss_mb"], bl["peak_rss_mb"],
                "{:.0f}")
            if "read_ms_per_patch" in f:
                row(f"{size} x {size} reading ms per patch (one thread){label}",
                    f["read_ms_per_patch"], bl["read_ms_per_patch"], "{:.1f}")
    lines.append("")
    for name, label in (("fctl", "FCtL"), ("fctl_exact", "FCtL, exact context")):
        if name in r["profile"]:
            prof = r["profile"][name]
            shares = ", ".join(f"{k} {v:.0%}" for k, v in prof.items() if k != "total_s")
            lines.append(f"{label} time per patch by module: {shares}.")
    lines.append("")
    return lines


def to_markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    dev = m["gpu"] or f"CPU, {m['cpu_threads']} threads"
    lines = [f"Machine: {dev}; {m['platform']}; torch {m['torch']}.", ""]
    lines += _section(r, "The paper's setting")
    if "default_model" in r:
        lines += _section(r["default_model"], "The bundled default model (its own file and "
                                              "configuration)")
    return "\n".join(lines)
