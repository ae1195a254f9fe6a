"""Turns the raw lines `deploy/bench` recorded (one JSON object per measurement, every run) into
min / median / max tables: printed (--print) or written (--write DOCS) to DOCS/benchmarks.json and
between the generated-results markers of DOCS/benchmarks.md. Every section carries its own date and
number of runs: a section this run did not measure (`deploy/bench api upload`, say, or a GPU section on
a machine without one) keeps its earlier figures, with their date."""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys
from collections import defaultdict

TRAIN_ARCHS = ["mixtral", "qwen3_moe", "gpt_oss"]


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def fmt(s, digits=2, scale=1.0):
    if s is None:
        return "–"
    return " / ".join(f"{s[k] * scale:,.{digits}f}" for k in ("min", "median", "max"))


def load(paths):
    lines = []
    for path in paths:
        with open(path) as f:
            lines += [json.loads(line) for line in f if line.strip().startswith("{")]
    return lines


def train_section(lines, device):
    gemm = [l["gflops"] for l in lines if l["bench"] == "gemm" and l["device"] == device]
    runs = defaultdict(lambda: {"moetune": [], "moetune_loop": [], "anchor": [], "anchor_keep_freed": []})
    for l in lines:
        if l["bench"] == "train" and l["device"] == device:
            if l["impl"] == "moetune":
                # The per-expert loop, measured beside the grouped expert GEMMs (older lines have neither).
                kind = "moetune_loop" if l.get("experts") == "loop" else "moetune"
            else:
                kind = "anchor_keep_freed" if l.get("allocator") == "keep-freed" else "anchor"
            runs[(l["arch"], l["method"])][kind].append(l)
    rows = []
    for (arch, method), r in sorted(runs.items(), key=lambda kv: (kv[0][0] not in TRAIN_ARCHS, kv[0])):
        ours, anchor, tuned, loop = r["moetune"], r["anchor"], r["anchor_keep_freed"], r["moetune_loop"]
        pairs = list(zip(ours, anchor))
        peaks = [(o["model_gflops"] / g) for o, g in zip(ours, gemm)] if gemm else []
        rows.append({
            "arch": arch, "method": method, "dtype": ours[0]["dtype"] if ours else None,
            "batch": (ours or anchor)[0]["batch"], "seq": (ours or anchor)[0]["seq"],
            "moetune_tokens_per_s": spread([o["tokens_per_s"] for o in ours]),
            "anchor_tokens_per_s": spread([a["tokens_per_s"] for a in anchor]),
            "anchor": anchor[0]["impl"] if anchor else None,
            "ratio": spread([o["tokens_per_s"] / a["tokens_per_s"] for o, a in pairs]),
            # The anchor given the allocator settings the runner uses (CPU only; see docs/benchmarks.md).
            "anchor_keep_freed_tokens_per_s": spread([a["tokens_per_s"] for a in tuned]),
            "ratio_keep_freed": spread([o["tokens_per_s"] / a["tokens_per_s"] for o, a in zip(ours, tuned)]),
            "loop_tokens_per_s": spread([o["tokens_per_s"] for o in loop]),
            "grouped_over_loop": spread([o["tokens_per_s"] / l["tokens_per_s"] for o, l in zip(ours, loop)]),
            "model_gflops": spread([o["model_gflops"] for o in ours]),
            "fraction_of_gemm_peak": spread(peaks),
            # Where a moetune step goes (medians over runs): forward and backward (one call since the step
            # interleaves them; older lines have them apart), optimiser.
            "phases_s": {k: statistics.median(o[k] for o in ours) for k in
                         (("forward_backward_s",) if "forward_backward_s" in ours[0] else ("forward_s", "backward_s")) + ("optimizer_s",)} if ours else None,
        })
    return {"gemm_gflops": spread(gemm), "rows": rows}


def fp4_section(lines):
    ours = [l for l in lines if l["bench"] == "fp4" and l["impl"] == "moetune"]
    ref = [l for l in lines if l["bench"] == "fp4" and l["impl"] == "torch"]
    if not ours:
        return None
    rows = []
    for op in ("mxfp4_encode", "mxfp4_decode", "nvfp4_encode", "nvfp4_decode"):
        key = f"{op}_gbps"
        rows.append({
            "op": op, "moetune_gbps": spread([o[key] for o in ours]), "torch_gbps": spread([r[key] for r in ref]),
            "ratio": spread([o[key] / r[key] for o, r in zip(ours, ref)]),
            "fraction_of_memcpy": spread([o[key] / o["memcpy_gbps"] for o in ours]),
        })
    return {"bytes": ours[0]["bytes"], "memcpy_gbps": spread([o["memcpy_gbps"] for o in ours]), "rows": rows}


def api_section(lines):
    rows = []
    for name in ("api_create_job", "api_list_jobs"):
        r = [l for l in lines if l["bench"] == name]
        if r:
            rows.append({"name": name, "connections": r[0]["connections"], "requests": r[0]["requests"],
                         **{k: spread([x[k] for x in r]) for k in ("per_s", "p50_ms", "p99_ms", "baseline_per_s", "baseline_p50_ms", "baseline_p99_ms", "ratio")}})
    return {"rows": rows}


def upload_section(lines):
    r = [l for l in lines if l["bench"] == "upload"]
    if not r:
        return None
    return {"bytes": r[0]["bytes"], **{k: spread([x[k] for x in r]) for k in ("api_mbps", "direct_mbps", "ratio", "api_rss_idle_mib", "api_rss_peak_mib")}}


def placement_section(lines):
    r = [l for l in lines if l["bench"] == "placement"]
    if not r:
        return None
    names = [x["name"] for x in r[0]["results"]]
    rows = [{"name": n, **{k: spread([next(x for x in run["results"] if x["name"] == n)[k] for run in r]) for k in ("p50_ms", "p99_ms")}} for n in names]
    return {"runners": r[0]["runners"], "jobs": r[0]["jobs"], "tenants": r[0]["tenants"], "rows": rows,
            **{k: spread([x[k] for x in r]) for k in ("enqueue_per_s", "claims_per_s", "registry_ms", "snapshot_ms")}}


def memory_section(lines):
    r = [l for l in lines if l["bench"] == "memory"]
    if not r:
        return None
    rows = []
    for key in dict.fromkeys((x["config"], x["activation_checkpointing"], x.get("stage", "sft")) for x in r):
        runs = [x for x in r if (x["config"], x["activation_checkpointing"], x.get("stage", "sft")) == key]
        first = runs[0]
        rows.append({"stage": first.get("stage", "sft")} | {k: first[k] for k in ("config", "architecture", "base_experts", "dtype", "activation_checkpointing", "batch", "seq_len", "estimated_weights_gib", "estimated_peak_gib")}
                    | {k: spread([x[k] for x in runs]) for k in ("measured_weights_gib", "measured_peak_gib", "measured_over_estimate")})
    return {"rows": rows}


def distributed_section(lines):
    r = [l for l in lines if l["bench"] == "distributed"]
    if not r:
        return None
    # Lines from before split modes were measured are LoRA, data parallel.
    method = lambda x: x.get("method", "lora")
    split = lambda x: x.get("split", "none")
    rows = []
    for m, sp, w in sorted({(method(x), split(x), x["world_size"]) for x in r}, key=lambda k: (k[0] != "lora", ["none", "expert_parallel", "fully_sharded"].index(k[1]), k[2])):
        rates = spread([x["tokens_per_s"] for x in r if (method(x), split(x), x["world_size"]) == (m, sp, w)])
        # Against one rank of the same method holding the whole model.
        base = spread([x["tokens_per_s"] for x in r if (method(x), split(x), x["world_size"]) == (m, "none", 1)])
        efficiency = {k: rates[k] / (w * base["median"]) for k in ("min", "median", "max")} if base else None
        rows.append({"method": m, "split": sp, "world_size": w, "tokens_per_s": rates, "efficiency": efficiency})
    first = r[0]
    return {"batch": first["batch"], "accumulation": first["accumulation"], "threads_per_rank": first["threads_per_rank"], "rows": rows}


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}


def dated(section, runs):
    """A measured section with when and over how many runs; None when this run did not measure it."""
    if not section or ("rows" in section and not section["rows"]):
        return None
    return {"measured_at": datetime.date.today().isoformat(), "runs": runs, "cpu": machine()["cpu"], **section}


def summarise(lines):
    count = lambda bench, **match: sum(1 for l in lines if l["bench"] == bench and all(l.get(k) == v for k, v in match.items()))
    gpu = None
    if any(l.get("device") == "cuda" for l in lines):
        gpu = {"device": next(l.get("gpu", "cuda") for l in lines if l.get("device") == "cuda"), **train_section(lines, "cuda")}
        gpu = dated(gpu, count("gemm", device="cuda"))
    elif any(l["bench"] == "gpu" for l in lines):
        gpu = {"skipped": next(l["skipped"] for l in lines if l["bench"] == "gpu")}
    return {
        "measured_at": datetime.date.today().isoformat(), "machine": machine(),
        "train": dated(train_section(lines, "cpu"), count("gemm", device="cpu")),
        "fp4": dated(fp4_section(lines), count("fp4", impl="moetune")),
        "api": dated(api_section(lines), count("api_create_job")),
        "upload": dated(upload_section(lines), count("upload")),
        "placement": dated(placement_section(lines), count("placement")),
        "distributed": dated(distributed_section(lines), count("distributed", world_size=1, method="lora")),
        "memory": dated(memory_section(lines), count("memory") // max(1, len({(l["config"], l["activation_checkpointing"], l.get("stage", "sft")) for l in lines if l["bench"] == "memory"}))),
        "gpu": gpu,
    }


SECTIONS = ("train", "fp4", "api", "upload", "placement", "memory", "distributed", "gpu")


def keep_earlier(s, earlier):
    """Sections this run did not measure (or skipped) keep the earlier figures, which carry their date
    and the CPU they were measured on (the earlier run's, for sections written before each recorded it)."""
    for name in SECTIONS:
        old = earlier.get(name)
        if (s.get(name) is None or "skipped" in s[name]) and old and "skipped" not in old:
            s[name] = {"cpu": earlier.get("machine", {}).get("cpu", "an unrecorded CPU"), **old}
    return s


def when(section):
    runs = section["runs"]
    on = f" on {section['cpu']}" if section.get("cpu") and "device" not in section else ""
    return f"Measured {section['measured_at']}{on}, {runs} run{'s' if runs != 1 else ''}; min / median / max."


def train_table(t, title):
    # The anchor with the runner's malloc settings is measured on the CPU only.
    tuned = any(r.get("anchor_keep_freed_tokens_per_s") for r in t["rows"])
    extra_head = " anchor, runner's malloc settings, tokens/s | × that |" if tuned else ""
    # The per-expert loop measured in the same run as the grouped expert GEMMs.
    looped = any(r.get("loop_tokens_per_s") for r in t["rows"])
    loop_head = " per-expert loop tokens/s | grouped × loop |" if looped else ""
    out = [f"GEMM peak measured in the same run: {fmt(t['gemm_gflops'], 0)} GFLOP/s.", "",
           f"| {title} | moetune tokens/s | anchor tokens/s | × anchor |{extra_head}{loop_head} model GFLOP/s | of GEMM peak | moetune step: forward + backward + optimiser |",
           "|---|---|---|---|" + ("---|---|" if tuned else "") + ("---|---|" if looped else "") + "---|---|---|"]
    for r in t["rows"]:
        p = r.get("phases_s")
        unit, scale = ("ms", 1e3) if t["rows"] and (r["moetune_tokens_per_s"] or {}).get("median", 0) > 5000 else ("s", 1.0)
        if p and "forward_backward_s" in p:
            phases = f"{p['forward_backward_s'] * scale:.3g} (together) + {p['optimizer_s'] * scale:.3g} {unit}"
        else:
            phases = f"{p['forward_s'] * scale:.3g} + {p['backward_s'] * scale:.3g} + {p['optimizer_s'] * scale:.3g} {unit}" if p else "–"
        extra = f" {fmt(r.get('anchor_keep_freed_tokens_per_s'), 0)} | {fmt(r.get('ratio_keep_freed'))} |" if tuned else ""
        extra += f" {fmt(r.get('loop_tokens_per_s'), 0)} | {fmt(r.get('grouped_over_loop'))} |" if looped else ""
        out.append(f"| {r['arch']} {r['method']} ({r['anchor']}) | {fmt(r['moetune_tokens_per_s'], 0)} | {fmt(r['anchor_tokens_per_s'], 0)} | "
                   f"{fmt(r['ratio'])} |{extra} {fmt(r['model_gflops'], 0)} | {fmt(r['fraction_of_gemm_peak'], 1, 100)} % | {phases} |")
    return out


def markdown(s):
    out = [f"On {s['machine']['cores']}-core machines of this kind. Each section says when and on which CPU it was measured, and over how many runs.", ""]
    if s["train"]:
        out += ["### Training throughput (CPU, fp32)", "", when(s["train"])] + train_table(s["train"], "architecture, method (anchor)") + [""]
    if s["fp4"]:
        f = s["fp4"]
        out += ["### FP4 codecs", "", when(f) + f" A {f['bytes'] / 2**30:.0f} GiB f32 weight; plain memory copy {fmt(f['memcpy_gbps'])} GB/s.", "",
                "| codec | moetune GB/s | torch reference GB/s | × torch | of memcpy |", "|---|---|---|---|---|"]
        for r in f["rows"]:
            out.append(f"| {r['op'].replace('_', ' ')} | {fmt(r['moetune_gbps'])} | {fmt(r['torch_gbps'])} | {fmt(r['ratio'], 1)} | {fmt(r['fraction_of_memcpy'], 0, 100)} % |")
        out.append("")
    if s["api"]:
        out += ["### API at 64 connections", "", when(s["api"]), "", "| request | API req/s | p50 ms | p99 ms | baseline req/s | baseline p99 ms | × baseline |", "|---|---|---|---|---|---|---|"]
        for r in s["api"]["rows"]:
            out.append(f"| {r['name']} ({r['requests']} requests) | {fmt(r['per_s'], 0)} | {fmt(r['p50_ms'], 1)} | {fmt(r['p99_ms'], 1)} | {fmt(r['baseline_per_s'], 0)} | {fmt(r['baseline_p99_ms'], 1)} | {fmt(r['ratio'])} |")
        out.append("")
    if s["upload"]:
        u = s["upload"]
        out += ["### Upload", "", when(u) + f" {u['bytes'] / 2**30:.2f} GiB of JSONL.", "", "| POST /v1/files MB/s | direct S3 PUT MB/s | × direct | API RSS idle MiB | API RSS peak MiB |", "|---|---|---|---|---|",
                f"| {fmt(u['api_mbps'], 0)} | {fmt(u['direct_mbps'], 0)} | {fmt(u['ratio'])} | {fmt(u['api_rss_idle_mib'], 0)} | {fmt(u['api_rss_peak_mib'], 0)} |", ""]
    if s["placement"]:
        p = s["placement"]
        out += ["### Placement", "", when(p) + f" {p['runners']:,} simulated runners, {p['jobs']:,} queued jobs, {p['tenants']} tenants.", "",
                "| measurement | p50 ms | p99 ms |", "|---|---|---|"]
        out += [f"| {r['name']} | {fmt(r['p50_ms'], 3)} | {fmt(r['p99_ms'], 3)} |" for r in p["rows"]]
        out += ["", f"Enqueue {fmt(p['enqueue_per_s'], 0)} jobs/s; claims {fmt(p['claims_per_s'], 0)}/s with every runner at once; "
                f"registry read {fmt(p['registry_ms'], 1)} ms; reconciler snapshot {fmt(p['snapshot_ms'], 1)} ms.", ""]
    if s.get("memory"):
        m = s["memory"]
        out += ["### Memory of one training step (CPU)", "", when(m) + " One SFT step's peak host memory (`VmHWM`, the runner's malloc settings) on a model of the config's shapes with random weights, against the estimate `inspect` gives for the same job on a CPU runner.", "",
                "| config | stage | experts | dtype, checkpointing | tokens | weights: estimate / measured GiB | peak: estimate GiB | peak: measured GiB | measured / estimate |", "|---|---|---|---|---|---|---|---|---|"]
        for r in m["rows"]:
            out.append(f"| {os.path.basename(r['config'])} ({r['architecture']}) | {r['stage']} | {r['base_experts']} | {r['dtype']}, {'on' if r['activation_checkpointing'] else 'off'} | {r['batch']} × {r['seq_len']} | "
                       f"{r['estimated_weights_gib']:.2f} / {fmt(r['measured_weights_gib'])} | {r['estimated_peak_gib']:.2f} | {fmt(r['measured_peak_gib'])} | {fmt(r['measured_over_estimate'])} |")
        out.append("")
    if s.get("distributed"):
        d = s["distributed"]
        out += ["### Scaling across ranks (CPU, Gloo on loopback)", "", when(d) + f" The built-in tiny model; a step is {d['accumulation']} micro-batches of {d['batch']} sequences split over the ranks; one intra-op thread per rank process. "
                f"Efficiency = tokens/s ÷ (ranks × one rank's tokens/s). This machine has {s['machine']['cores']} cores: ranks beyond that share them.", "",
                "Split rows hold the model split across the ranks (experts, or every weight: fully sharded) and train every weight; their efficiency is against one rank of full SFT holding the model whole.", "",
                "| method | model | ranks | tokens/s | efficiency |", "|---|---|---|---|---|"]
        held = {"none": "whole (data parallel)", "expert_parallel": "experts split", "fully_sharded": "fully sharded"}
        for r in d["rows"]:
            m, sp = r.get("method", "lora"), r.get("split", "none")
            out.append(f"| {m} | {held[sp]} | {r['world_size']} | {fmt(r['tokens_per_s'], 0)} | {fmt(r['efficiency'], 0, 100)} % |")
        out.append("")
    return out


def gpu_markdown(g):
    if not g:
        return ["Not measured yet."]
    if "skipped" in g:
        return [f"Skipped: {g['skipped']}."]
    return [f"On {g['device']}, bf16. {when(g)}", ""] + train_table(g, "config, method (anchor)")


def replace_between(text, name, lines):
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        sys.exit(f"docs/benchmarks.md lacks the {begin} … {end} markers")
    return pattern.sub(lambda _: "\n".join([begin, "", *lines, "", end]), text)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--print", action="store_true")
    p.add_argument("--write", metavar="DOCS")
    p.add_argument("results", nargs="+")
    args = p.parse_args()
    s = summarise(load(args.results))
    if args.write:
        json_path, md_path = os.path.join(args.write, "benchmarks.json"), os.path.join(args.write, "benchmarks.md")
        if os.path.exists(json_path):
            with open(json_path) as f:
                s = keep_earlier(s, json.load(f))
        with open(json_path, "w") as f:
            json.dump(s, f, indent=1)
            f.write("\n")
        with open(md_path) as f:
            text = f.read()
        text = replace_between(text, "results", markdown(s))
        text = replace_between(text, "gpu", gpu_markdown(s["gpu"]))
        with open(md_path, "w") as f:
            f.write(text)
    print("\n".join(markdown(s) + ["### GPU", ""] + gpu_markdown(s["gpu"])))


if __name__ == "__main__":
    main()
