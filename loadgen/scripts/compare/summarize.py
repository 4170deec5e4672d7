#!/usr/bin/env python3
"""Reads what run.sh left in a run folder and prints one JSON record (`run DIR`), or prints the
side-by-side table of medians over runs (`table results.jsonl`).

Per run, from each tool's own report:
  loadgen   loadgen.json (schema loadgen-report/1): HdrHistograms, microseconds
  Artillery artillery.json aggregate: counters and summaries of the chat.* histograms (ms, DDSketch,
            printed to 0.1 ms)
  Tsung     tsung-log/*/tsung.log: per-10 s samples (count, mean, stddev, max, min) of tr_rtt
            and counters; Tsung reports no percentiles for websocket requests
and, the same for every tool: /usr/bin/time -v of the tool (CPU, peak RSS), the gateway's CPU and
peak RSS, and the gateway's /metrics sampled twice a second (peak open WebSockets, message rate).
"""
import glob
import json
import math
import os
import re
import statistics
import sys


def time_v(path):
    out = {}
    try:
        text = open(path).read()
    except OSError:
        return out
    for key, pat in [
        ("user_s", r"User time \(seconds\): ([\d.]+)"),
        ("sys_s", r"System time \(seconds\): ([\d.]+)"),
        ("rss_kb", r"Maximum resident set size \(kbytes\): (\d+)"),
        ("exit", r"Exit status: (\d+)"),
    ]:
        m = re.search(pat, text)
        if m:
            out[key] = float(m.group(1))
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    if m:
        secs = 0.0
        for part in m.group(1).split(":"):
            secs = secs * 60 + float(part)
        out["elapsed_s"] = secs
    return out


def server_view(path):
    """Peak open WebSockets and the highest message rate over any 5 s window."""
    rows = []
    try:
        for line in open(path):
            t, o, m = line.split()
            rows.append((float(t), int(o), int(m)))
    except (OSError, ValueError):
        pass
    if not rows:
        return {}
    peak_open = max(r[1] for r in rows)
    best = 0.0
    j = 0
    for i in range(len(rows)):
        while rows[i][0] - rows[j][0] > 5.0:
            j += 1
        if rows[i][0] - rows[j][0] >= 4.0:
            best = max(best, (rows[i][2] - rows[j][2]) / (rows[i][0] - rows[j][0]))
    return {"server_peak_open": peak_open, "server_msgs_total": rows[-1][2] - rows[0][2],
            "server_peak_rate": round(best, 1)}


def ms(us):
    return None if us is None else us / 1000.0


def loadgen(d):
    r = json.load(open(os.path.join(d, "loadgen.json")))
    met = r["metrics"]
    out = {
        "opened": r["sessions"]["opened"],
        "attempted": r["sessions"]["attempted"],
        "sent": r["messages"]["sent"],
        "acked": r["messages"]["acked"],
        "replied": r["messages"]["replied"],
        "errors": sum(v for k, v in r["errors"].items() if k != "busy"),
        "error_codes": r["errors"],
        "rtt_p50": ms(met["rtt"]["p50_us"]), "rtt_p99": ms(met["rtt"]["p99_us"]),
        "rtt_mean": ms(met["rtt"]["mean_us"]), "rtt_max": ms(met["rtt"]["max_us"]),
        "ttft_p50": ms(met["ttft"]["p50_us"]), "ttft_p99": ms(met["ttft"]["p99_us"]),
        "reply_p50": ms(met["reply"]["p50_us"]), "reply_p99": ms(met["reply"]["p99_us"]),
        "send_lag_p99": ms(r["send_lag"]["p99_us"]),
        "tool_rate": r["messages"]["rate_per_s"],
        "tool_bytes_per_session": r["sessions"].get("bytes_per_session"),
        "complete": r.get("complete"),
    }
    return out


def artillery(d):
    r = json.load(open(os.path.join(d, "artillery.json")))["aggregate"]
    c, s = r["counters"], r["summaries"]

    def q(name, stat):
        return s.get(name, {}).get(stat)

    errors = {k[len("chat.error."):]: v for k, v in c.items() if k.startswith("chat.error.")}
    errors.update({k: v for k, v in c.items() if k.startswith("errors.")})
    return {
        "opened": s.get("chat.welcome", {}).get("count", 0),
        "attempted": c.get("vusers.created", 0),
        "vusers_failed": c.get("vusers.failed", 0),
        "sent": c.get("chat.sent", 0),
        "acked": c.get("chat.acked", 0),
        "replied": c.get("chat.replied", 0),
        "errors": sum(errors.values()),
        "error_codes": errors,
        "rtt_p50": q("chat.rtt", "p50"), "rtt_p99": q("chat.rtt", "p99"),
        "rtt_mean": q("chat.rtt", "mean"), "rtt_max": q("chat.rtt", "max"),
        "ttft_p50": q("chat.ttft", "p50"), "ttft_p99": q("chat.ttft", "p99"),
        "reply_p50": q("chat.reply", "p50"), "reply_p99": q("chat.reply", "p99"),
    }


def tsung(d):
    logs = sorted(glob.glob(os.path.join(d, "tsung-log", "*", "tsung.log")))
    samples, counters = {}, {}
    if logs:
        for line in open(logs[-1]):
            if not line.startswith("stats: "):
                continue
            f = line.split()
            name = f[1]
            if name.startswith("{"):
                continue
            if len(f) == 9:  # sample: count mean stddev max min meantotal counttotal
                n, mean, sd, mx, mn = int(f[2]), float(f[3]), float(f[4]), float(f[5]), float(f[6])
                acc = samples.setdefault(name, {"n": 0, "sum": 0.0, "sq": 0.0, "max": 0.0, "min": math.inf})
                if n:
                    acc["n"] += n
                    acc["sum"] += n * mean
                    acc["sq"] += n * (sd * sd + mean * mean)
                    acc["max"] = max(acc["max"], mx)
                    acc["min"] = min(acc["min"], mn)
            elif len(f) == 4:  # counter: interval total
                counters[name] = int(float(f[3]))

    def stat(name):
        a = samples.get(name)
        if not a or not a["n"]:
            return None, None, None, 0
        mean = a["sum"] / a["n"]
        sd = math.sqrt(max(0.0, a["sq"] / a["n"] - mean * mean))
        return mean, sd, a["max"], a["n"]

    rtt_mean, rtt_sd, rtt_max, rtt_n = stat("tr_rtt")
    _, _, _, welcomes = stat("tr_welcome")
    errors = {k: v for k, v in counters.items()
              if k.startswith("error") or k in ("timeout", "nomatch", "websocket_fail")}
    return {
        "opened": welcomes,
        "attempted": counters.get("users_count", 0),
        "sent": rtt_n,
        "acked": counters.get("match", 0) - welcomes,
        "replied": None,
        "errors": sum(errors.values()),
        "error_codes": errors,
        "rtt_mean": rtt_mean, "rtt_sd": rtt_sd, "rtt_max": rtt_max,
        "rtt_p50": None, "rtt_p99": None, "ttft_p50": None, "ttft_p99": None,
        "reply_p50": None, "reply_p99": None,
        "async_frames_dropped": counters.get("async_unknown_data_rcv", 0),
    }


def run(d):
    rec = json.load(open(os.path.join(d, "params.json")))
    try:
        rec.update({"loadgen": loadgen, "artillery": artillery, "tsung": tsung}[rec["tool"]](d))
    except (OSError, KeyError, ValueError) as e:
        rec["report_error"] = repr(e)
    t = time_v(os.path.join(d, "time.txt"))
    if t:
        cpu = t.get("user_s", 0) + t.get("sys_s", 0)
        rec.update({"tool_cpu_s": round(cpu, 2), "tool_elapsed_s": t.get("elapsed_s"),
                    "tool_rss_mb": round(t.get("rss_kb", 0) / 1024, 1), "tool_exit": t.get("exit")})
        if rec.get("sent"):
            rec["tool_cpu_us_per_msg"] = round(cpu * 1e6 / rec["sent"], 1)
        rec["tool_rss_kb_per_session"] = round(
            t.get("rss_kb", 0) / max(1, rec.get("opened") or rec["sessions"]), 1)
    try:
        g = json.load(open(os.path.join(d, "gateway.json")))
        rec["gateway_cpu_s"] = g["cpu_s"]
        rec["gateway_rss_mb"] = round(g["rss_peak_kb"] / 1024, 1)
    except (OSError, ValueError, KeyError):
        pass
    rec.update(server_view(os.path.join(d, "metrics.tsv")))
    rec["dir"] = d
    print(json.dumps(rec))


def med(rs, field):
    xs = [r.get(field) for r in rs if r.get(field) is not None]
    return statistics.median(xs) if xs else None


def fmt(x, nd=2):
    if x is None:
        return "-"
    if nd == 0:
        return f"{int(round(x)):,}"
    return f"{x:.{nd}f}"


def table(path):
    """Medians over the runs of each (mode, sessions, think, tool), one table per mode."""
    recs = [json.loads(line) for line in open(path) if line.strip()]
    groups = {}
    for r in recs:
        groups.setdefault((r["mode"], r["sessions"], r["think_s"], r["tool"]), []).append(r)
    order = {"loadgen": 0, "artillery": 1, "tsung": 2}
    for mode in sorted({k[0] for k in groups}, key=lambda m: ["sizes", "ramp", "ceiling"].index(m)
                       if m in ("sizes", "ramp", "ceiling") else 9):
        keys = sorted((k for k in groups if k[0] == mode),
                      key=lambda k: (k[1], -k[2], order.get(k[3], 9)))
        runs = sorted({len(groups[k]) for k in keys})
        print(f"\n{mode} (medians of {'/'.join(map(str, runs))} run(s))\n")
        print("| sessions | offered msg/s | tool | sessions opened | peak open (gateway) "
              "| msg/s (gateway, best 5 s) | rtt p50 ms | rtt p99 ms | rtt mean ms | rtt max ms "
              "| ttft p50 ms | ttft p99 ms | errors | tool CPU s | tool peak RSS MB |")
        print("|---" * 15 + "|")
        for k in keys:
            rs = groups[k]
            _, n, think, tool = k
            m = lambda field: med(rs, field)
            cells = [f"{n:,}", fmt(n / think, 0), tool, fmt(m("opened"), 0),
                     fmt(m("server_peak_open"), 0), fmt(m("server_peak_rate"), 0),
                     fmt(m("rtt_p50")), fmt(m("rtt_p99")), fmt(m("rtt_mean")), fmt(m("rtt_max"), 1),
                     fmt(m("ttft_p50"), 1), fmt(m("ttft_p99"), 1), fmt(m("errors"), 0),
                     fmt(m("tool_cpu_s"), 1), fmt(m("tool_rss_mb"), 0)]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("run", "table"):
        sys.exit("usage: summarize.py run DIR | table results.jsonl")
    {"run": run, "table": table}[sys.argv[1]](sys.argv[2])
