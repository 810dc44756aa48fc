"""The Markdown report of a bench run."""

from __future__ import annotations

from typing import Any



def to_markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    dev = m["gpu"] or f"CPU, {m['cpu_threads']} threads"
    lines = [f"Machine: {dev}; {m['platform']}; torch {m['torch']}. Backbone "
             f"`{r['config']['backbone']}`, patch {r['config']['patch_size']} px, contexts "
             f"{r['config']['medium_context']} / {r['config']['large_context']}.", "",
             "| measure | FCtL | FCN-8s baseline | FCtL / baseline |", "|---|---|---|---|"]

    def row(label: str, a: float, b: float, fmt: str = "{:.3f}") -> None:
        lines.append(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {a / b:.2f}x |")

    for key in r["patch"]["fctl"]:
        bl = r["patch"]["baseline"][key]
        for name, label in (("fctl", ""), ("fctl_shared", ", shared context")):
            if name not in r["patch"]:
                continue
            f = r["patch"][name][key]
            row(f"s per patch ({key}){label}", f["per_patch_s"], bl["per_patch_s"])
            row(f"patches per s ({key}){label}", f["patches_per_s"], bl["patches_per_s"],
                "{:.2f}")
            if "peak_gpu_mb" in f:
                row(f"peak GPU MB ({key}){label}", f["peak_gpu_mb"], bl["peak_gpu_mb"], "{:.0f}")
    for name, label in (("fctl", ""), ("fctl_shared", ", shared context")):
        f, bl = r.get("memory", {}).get(name), r.get("memory", {}).get("baseline")
        if f and bl:
            for dtype in ("fp32", "bf16"):
                row(f"activation MB per patch, batched, {dtype}{label}",
                    f[f"activations_{dtype}_mb"], bl[f"activations_{dtype}_mb"], "{:.0f}")
    if r.get("memory", {}).get("fctl"):
        row("weights MB", r["memory"]["fctl"]["weights_mb"], r["memory"]["baseline"]["weights_mb"],
            "{:.1f}")
    for size, rr in r["raster"].items():
        bl = rr["baseline"]
        for key, label in (("fctl", ""), ("fctl_shared", ", shared context")):
            if key not in rr:
                continue
            f = rr[key]
            row(f"{size} x {size} wall s{label}", f["wall_s"], bl["wall_s"], "{:.1f}")
            row(f"{size} x {size} s per megapixel{label}", f["s_per_megapixel"],
                bl["s_per_megapixel"], "{:.2f}")
            row(f"{size} x {size} peak RSS MB{label}", f["peak_rss_mb"], bl["peak_rss_mb"],
                "{:.0f}")
            if "read_ms_per_patch" in f:
                row(f"{size} x {size} reading ms per patch (one thread){label}",
                    f["read_ms_per_patch"], bl["read_ms_per_patch"], "{:.1f}")
    lines.append("")
    for name, label in (("fctl", "FCtL"), ("fctl_shared", "FCtL, shared context")):
        if name in r["profile"]:
            prof = r["profile"][name]
            shares = ", ".join(f"{k} {v:.0%}" for k, v in prof.items() if k != "total_s")
            lines.append(f"{label} time per patch by module: {shares}.")
    return "\n".join(lines) + "\n"
