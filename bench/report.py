"""Summaries, the Markdown table and the PNG charts of a benchmark run."""
import statistics

from harness import REFERENCE

GROUP_TITLES = {
    "micro": "Micro benchmarks (in-process, ops/s)",
    "echo-protocol": "TCP echo, Protocol API (C echo_client)",
    "echo-streams": "TCP echo, Streams API (C echo_client)",
    "oneway": "One-way streams: client sends, server counts and acks each message",
    "send": "Send side: server streams messages to a receive-only client (MB/s, CPU per MiB)",
    "echo-tls": "TLS echo, Protocol API + ssl.SSLContext (C echo_client over OpenSSL)",
    "zerocopy": "Zero-copy: server streams to a receive-only client, write() vs write_zc()",
    "http": "HTTP and HTTPS: aiohttp hello world (wrk)",
    "websockets": "WebSocket echo (Python websockets client)",
}
CLIENT_BOUND = "client-bound"
#: Share of the window the server waited for its CPU (other processes ran
#: there) above which a cell is flagged: the machine was not quiet.
CONTENDED = 0.05


#: A rotation row's blocks (interleaved slices) are equal shares of one run,
#: so its figures are over all of them: throughput weighted by each block's
#: seconds (total bytes over total time), CPU per op by its bytes.  Medians of
#: 5 blocks threw that away: two runs agreed on 24 of 30 ratios within 10%,
#: the same runs pooled on 28 (docs/benchmarks.md, "Interleaved slices").
POOL_WEIGHT = {"throughput": "duration", "cpu_us_per_op": "bytes"}


def pooled_mean(samples, key):
    """`key` over all of a rotation row's blocks (POOL_WEIGHT); None if none has it."""
    weight = POOL_WEIGHT[key]
    pairs = [(s[key], s[weight]) for s in samples if s.get(key) is not None and s.get(weight)]
    total = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / total if total else None


def summarize(samples, syscalls_per_op=None, pooled=False):
    """Median of each metric over the successful samples of one cell (a
    rotation row's throughput and CPU: pooled over its blocks)."""
    ok = [s for s in samples if "error" not in s]
    failed = [s for s in samples if "error" in s]
    if not ok:
        return {"error": failed[0]["error"] if failed else "not run"}

    def median(key):
        values = [s[key] for s in ok if s.get(key) is not None]
        return statistics.median(values) if values else None

    values = [s["throughput"] for s in ok]
    summary = {key: median(key) for key in ("throughput", "cpu_us_per_op", "p50_us", "p99_us",
                                            "contention", "client_wait")}
    if pooled:
        summary.update((key, pooled_mean(ok, key)) for key in POOL_WEIGHT)
    summary.update(
        spread=(max(values) - min(values)) / summary["throughput"],
        client_bound=sum(bool(s.get("client_bound")) for s in ok) * 2 > len(ok),
        samples=len(ok), failed=len(failed), syscalls_per_op=syscalls_per_op,
        retakes=sum(s.get("retakes", 0) for s in ok),
        not_quiet=sum("quiet_wait_s" in s and s["quiet_wait_s"] is None for s in ok))
    if failed:
        summary["failure"] = failed[0]["error"]
    if any("server_stats" in s for s in ok):
        summary["server_stats"] = sum_server_stats(ok)
    return summary


def sum_server_stats(samples):
    """Totals of the source server's STATS over the samples' connections (each
    covers a whole connection: warm-up, window and the data still queued; a
    rotation's connection spans all its blocks, and its STATS are on the
    block that ``server_stats_in_block`` names)."""
    stats = [s["server_stats"] for s in samples if s.get("server_stats")]
    elsewhere = sum(1 for s in samples if s.get("server_stats_in_block"))
    total = {"connections": len(stats), "missing": len(samples) - len(stats) - elsewhere,
             "written": sum(st["written"] for st in stats)}
    zc = [st["zcloop"] for st in stats if st.get("zcloop")]
    if zc:
        for key in ("zc_bytes", "copy_bytes", "zc_copied", "demotions", "sends"):
            total[key] = sum(z[key] for z in zc)
    released = [st["released"] for st in stats if st.get("released")]
    if released:
        total["released"] = add_counts(released)
    return total


def add_counts(dicts):
    """Sum dicts of counts key by key (nested dicts too)."""
    total = {}
    for counts in dicts:
        for key, value in counts.items():
            if isinstance(value, dict):
                total[key] = add_counts([total.get(key, {}), value])
            else:
                total[key] = total.get(key, 0) + value
    return total


def base_loop(loops):
    """Ratios are against uvloop, the bar to beat, when it was measured."""
    return "uvloop" if "uvloop" in loops else loops[0]


def base_row(rows, row):
    """The row whose base-loop cell `row` is compared with: itself, or its
    compare_to row (a zcloop-only API against the base loop's plain one)."""
    target = row.get("compare_to")
    return next((r for r in rows if r["name"] == target), row) if target else row


def paired_samples(rows, row, contender, base, key="throughput"):
    """(contender's, base's) samples round by round: both were measured in
    the same round, minutes apart at most, so the machine's state (which
    changes over tens of seconds here, docs/benchmarks.md) is mostly the same
    for both.  Rounds where either has no `key` are left out."""
    mine = row["results"].get(contender, {}).get("samples", [])
    theirs = base_row(rows, row)["results"].get(base, {}).get("samples", [])
    return [(a, b) for a, b in zip(mine, theirs) if a.get(key) is not None and b.get(key)]


def paired_ratios(rows, row, contender, base, key="throughput"):
    """`key` of `contender` over `base`, round by round (paired_samples)."""
    return [a[key] / b[key] for a, b in paired_samples(rows, row, contender, base, key)]


def ratio(rows, row, contender, base, key="throughput"):
    """Median of the paired per-round ratios (None if no round has both); for
    a rotation row, `key` pooled over the blocks both have."""
    both = paired_samples(rows, row, contender, base, key)
    if not both:
        return None
    if row.get("pooled"):
        return (pooled_mean([a for a, _ in both], key) /
                pooled_mean([b for _, b in both], key))
    return statistics.median(a[key] / b[key] for a, b in both)


def ratio_text(rows, row, contender, base):
    values = paired_ratios(rows, row, contender, base)
    if not values:
        return "-"
    text = f"{ratio(rows, row, contender, base):.2f}x"
    if len(values) > 1 and not (contender == base and base_row(rows, row) is row):
        text += f" [{min(values):.2f}-{max(values):.2f}]"
    return text


def fmt(value, digits=0, suffix=""):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{suffix}"


def cpu_unit(row):
    return "µs/MiB" if row.get("per_mib") else "µs/op"


def mib(nbytes):
    return f"{nbytes / 2**20:,.0f} MiB"


def zero_copy_notes(stats):
    """What the source server saw, from zcloop's get_extra_info('zcloop')."""
    if stats["missing"]:
        return [f"no STATS for {stats['missing']} sample(s)"]
    if "zc_bytes" not in stats:
        return []  # not zcloop: nothing to say
    sent = stats["zc_bytes"] + stats["copy_bytes"]
    share = stats["zc_bytes"] / sent if sent else 0
    notes = [f"SEND_ZC {share:.0%} of bytes ({mib(stats['zc_bytes'])} of {mib(sent)})",
             f"'copied' notifications: {stats['zc_copied']:,}"]
    if stats["demotions"]:
        notes.append(f"write() demoted to copy on {stats['demotions']} of "
                     f"{stats['connections']} connections")
    if released := stats.get("released"):
        outcomes = ", ".join(f"{key} {value}" for key, value
                             in sorted(released.get("zerocopy_sent", {}).items()))
        notes.append(f"write_zc released: {released['zerocopy']:,} zero-copy"
                     + (f" (their sent: {outcomes})" if outcomes else "")
                     + f", {released['copied']:,} copied"
                     + (f", {released['unknown']:,} unknown" if released["unknown"] else "")
                     + (f", {released['pending']:,} still pending" if released["pending"]
                        else ""))
    return notes


def cell_notes(summary):
    notes = []
    if "server_stats" in summary:
        notes += zero_copy_notes(summary["server_stats"])
    if summary.get("client_bound"):
        notes.append(CLIENT_BOUND)
    if summary.get("failed"):
        notes.append(f"{summary['failed']} sample(s) failed: {summary['failure']}")
    if (summary.get("contention") or 0) > CONTENDED:
        notes.append(f"CPU contention {summary['contention']:.0%}")
    if (summary.get("client_wait") or 0) > CONTENDED:
        notes.append(f"load generator waited {summary['client_wait']:.0%}")
    if summary.get("retakes"):
        notes.append(f"{summary['retakes']} sample(s) re-taken (load generator not alone)")
    if summary.get("not_quiet"):
        notes.append(f"{summary['not_quiet']} sample(s) started on a busy machine")
    if summary.get("spread", 0) > 0.10:
        notes.append(f"spread {summary['spread']:.0%}")
    return "; ".join(notes)


def markdown(results, charts):
    loops, settings, machine = results["loops"], results["settings"], results["machine"]
    versions = results["versions"]
    base = base_loop(loops)
    lines = [
        "# zcloop benchmark results",
        "",
        f"- date: {results['date']} (took {results['elapsed_s']:.0f} s)"
        f"{', quick mode' if settings['quick'] else ''}"
        f"{', only rows matching ' + repr(settings['only']) if settings.get('only') else ''}",
        f"- machine: {machine['cpu_model']}, {machine['nproc']} CPUs; server on CPU "
        f"{machine['server_cpu']}, load generator on CPU {machine['client_cpu']}",
        f"- kernel: {machine['uname']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v),
        f"- method: {settings['rounds']} interleaved rounds, median shown; windows of "
        f"{settings['duration']} s after {settings['warmup']} s warm-up (wrk: "
        f"{settings['http_duration']} s); 'vs {base}': median [range] of the ratios of "
        f"the same rounds; one-way, send and zero-copy rows: one client drives every server in "
        f"turn in {settings.get('slice_ms', 50):g} ms slices, {settings.get('slices', 300)} "
        f"per server, each round a block of consecutive slices, the figures over all of "
        f"them, the range over blocks (docs/benchmarks.md, "
        f"'Interleaved slices'); TCP congestion control of the C clients' rows: "
        f"{settings.get('cc', 'system')}"
        + (f"; one-way rows with net.ipv4.tcp_rmem = "
           f"{', '.join(sorted(set(map(str, settings['tcp_rmem_one_way'].values()))))}"
           if isinstance(settings.get("tcp_rmem_one_way"), dict) else "") + ".",
        "",
    ]
    rows = results["rows"]
    groups = list(dict.fromkeys(row["group"] for row in rows))
    for group in groups:
        group_rows = [r for r in rows if r["group"] == group]
        header = (f"| workload | loop | throughput | vs {base} | server CPU "
                  f"{cpu_unit(group_rows[0])} | p50 / p99 µs | syscalls/op | notes |")
        lines += [f"## {GROUP_TITLES.get(group, group)}", "", header,
                  "|---|---|--:|--:|--:|--:|--:|---|"]
        for row in group_rows:
            for index, (contender, cell) in enumerate(row["results"].items()):
                summary = cell["summary"]
                name = row["name"] if index == 0 else ""
                label = f"{contender} (reference)" if contender == REFERENCE else contender
                if "error" in summary:
                    status = "skipped" if summary["error"].startswith("skipped") else "error"
                    lines.append(f"| {name} | {label} | {status} | | | | | "
                                 f"{summary['error'][:160].replace('|', '/')} |")
                    continue
                digits = 1 if row["unit"] == "MB/s" else 0
                latency = ("-" if summary["p50_us"] is None or summary["p99_us"] is None else
                           f"{summary['p50_us']:,.0f} / {summary['p99_us']:,.0f}")
                lines.append(
                    f"| {name} | {label} | {fmt(summary['throughput'], digits)} {row['unit']} "
                    f"| {ratio_text(rows, row, contender, base)} "
                    f"| {fmt(summary['cpu_us_per_op'], 2)} | {latency} "
                    f"| {fmt(summary['syscalls_per_op'], 2)} "
                    f"| {cell_notes(summary).replace('|', '/')} |")
        compared = [r for r in group_rows if r.get("compare_to")]
        if compared:
            lines += ["", "'vs " + base + "' of " + ", ".join(f"`{r['name']}`" for r in compared)
                      + ": against " + base + " in " + ", ".join(
                          f"`{r['compare_to']}`" for r in compared) + " (same bytes, plain "
                      "write(): the other loops have no write_zc())."]
        if group in charts:
            lines += ["", f"![{group}]({charts[group]})"]
        lines.append("")
    return "\n".join(lines)


def draw_bars(ax, all_rows, rows, contenders, base, key, colors):
    """Grouped bars: one group per row, one bar per contender, `key` relative to base."""
    width = 0.8 / len(contenders)
    for i, contender in enumerate(contenders):
        positions, values = [], []
        for x, row in enumerate(rows):
            position = x - 0.4 + width * (i + 0.5)
            value = ratio(all_rows, row, contender, base, key)
            if value is not None:
                positions.append(position)
                values.append(value)
            elif contender in row["results"]:  # measured but failed
                ax.text(position, 0.02, "error", ha="center", va="bottom", fontsize=7,
                        color="red", rotation=90)
        bars = ax.bar(positions, values, width, label=contender,
                      color=colors.get(contender, "#999999"))
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.margins(y=0.15)


def charts(results, out_dir):
    """One PNG per group: throughput (top) and server CPU per op (bottom) of
    every contender relative to the base loop.  Returns {group: file name}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = base_loop(results["loops"])
    colors = {"asyncio": "#8c8c8c", "uvloop": "#4c72b0", "zcloop": "#dd8452",
              REFERENCE: "#55a868"}
    written = {}
    for group in dict.fromkeys(row["group"] for row in results["rows"]):
        rows = [r for r in results["rows"] if r["group"] == group]
        contenders = list(dict.fromkeys(c for r in rows for c in r["results"]))
        fig, (top, bottom) = plt.subplots(2, 1, sharex=True,
                                          figsize=(max(6.0, 2.0 * len(rows) + 2), 7))
        draw_bars(top, results["rows"], rows, contenders, base, "throughput", colors)
        top.set_ylabel(f"throughput / {base}\n(higher is better)")
        top.set_title(GROUP_TITLES.get(group, group), fontsize=10)
        top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        draw_bars(bottom, results["rows"], rows, contenders, base, "cpu_us_per_op", colors)
        bottom.set_ylabel(f"server CPU per {cpu_unit(rows[0]).split('/')[1]} / {base}"
                          "\n(lower is better)")
        labels = []
        for row in rows:
            reference = base_row(results["rows"], row)
            summary = reference["results"].get(base, {}).get("summary", {})
            against = "" if reference is row else f" ({reference['name'].split()[-2]})"
            labels.append(row["name"] if summary.get("throughput") is None else
                          f"{row['name']}\n{base}{against}: {summary['throughput']:,.0f} "
                          f"{row['unit']},\n{fmt(summary['cpu_us_per_op'], 2)} "
                          f"{cpu_unit(row)}")
        bottom.set_xticks(range(len(rows)))
        bottom.set_xticklabels(labels, fontsize=8)
        fig.tight_layout()
        name = f"{group}.png"
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written[group] = name
    return written
