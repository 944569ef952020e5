"""Round-by-round evidence for the "two modes" of the large-transfer rows (issue 19).

    python bench/modes.py [--contender c-io_uring] [--kind source-streams]
                          [--size 16777216] [--rounds 10] [--duration 0.8]
                          [--warmup 0.2] [--cc cubic] [--no-halt] [--json FILE]

Runs one send row (bench/run.py's "send" group: the server streams SIZE-byte
messages to a receive-only echo_client -m source, server pinned to CPU 0,
client to CPU 1) for one contender, ROUNDS short rounds on one server, and
prints per round what each candidate cause looked like:

  MB/s, server CPU µs/MiB   as bench/run.py measures them (the window only)
  srv wait/cli busy         share of the window the server spent runnable but
                            waiting for its CPU (other processes held it) /
                            the client spent on its CPU (bench/harness.py)
  idle0/idle1               idle time per CPU, ms (/proc/stat)
  rx0/rx1                   NET_RX softirqs per CPU (/proc/softirqs): which
                            CPU ran the loopback receive path
  pkt0/pkt1                 packets processed per CPU (/proc/net/softnet_stat,
                            first column); dropped/squeezed: its second and
                            third columns, summed over CPUs
  TCP counters              non-zero deltas of loss and receive-drop counters
                            (/proc/net/snmp, /proc/net/netstat: system-wide,
                            so other traffic on the machine counts too)
  si0/si1, st0/st1          softirq and steal time per CPU, ms (/proc/stat)
  MHz0/MHz1                 "cpu MHz" of /proc/cpuinfo after the round
  others ms                 CPU time of every other process during the round:
                            user processes / kernel threads (/proc/PID/stat,
                            with reaped children); more than a few ms of
                            the first means the machine was not quiet
  speed0/speed1, wake       bench/bin/vcpu_probe just before the round: a
                            fixed spin loop's rate per ms of its own CPU time
                            on each CPU at once (lower: the host gave the
                            vCPU less of a physical CPU), and the median /
                            90th percentile round trip of a one-byte pipe
                            ping-pong between the two CPUs, µs (a cross-CPU
                            wake-up each way, as sender and receiver do)
  xfer GB/s                 bench/bin/vcpu_probe just before the round: data
                            written on the client's CPU and copied out on the
                            server's, 50 ms (the host's placement of the two
                            vCPUs: a shared cache or not)
  srv ss / cli ss           `ss -tin` of the server's and the client's end,
                            taken once, in the middle of the window:
                            q=Send-Q/Recv-Q; the sender's congestion control,
                            cwnd, pacing and delivery rate, retransmitted
                            bytes, sndbuf/rwnd-limited time; the receiver's
                            rcv_space and rcv_ssthresh

The /proc deltas span the client's whole run (warm-up and window), not only
the window.  --cc sets the TCP congestion control of both ends (run.py's
--cc); --no-halt holds /dev/cpu_dma_latency at 0 for the run, so idle vCPUs
poll instead of halting (tests whether halted-vCPU wake-ups select the mode).
/sys/kernel/mm/transparent_hugepage/enabled and the TCP sysctls
(congestion control, buffer sizes, autotuning) are printed once.
After the table, rounds are split at the middle of the MB/s range (a
rough "fast"/"slow" split for looking, not a classifier) and each candidate
is averaged per side.  --json keeps every round for later analysis.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
from pathlib import Path

import harness
from harness import REFERENCE, BenchError, Server, run_load

MiB = 1024 * 1024


def read_softirqs():
    """NET_RX softirq count per CPU."""
    for line in Path("/proc/softirqs").read_text().splitlines():
        if line.strip().startswith("NET_RX:"):
            return [int(x) for x in line.split()[1:]]
    return []


def read_softnet():
    """(processed, dropped, time_squeeze) per CPU from /proc/net/softnet_stat (hex)."""
    rows = []
    for line in Path("/proc/net/softnet_stat").read_text().splitlines():
        fields = [int(x, 16) for x in line.split()]
        rows.append((fields[0], fields[1], fields[2]))
    return rows


#: TCP counters (/proc/net/snmp, /proc/net/netstat) about loss and receive-side
#: drops: their deltas go in the JSON, the non-zero ones in the table.
TCP_COUNTERS = ("Tcp:RetransSegs", "TcpExt:TCPLostRetransmit", "TcpExt:TCPSpuriousRTOs",
                "TcpExt:TCPBacklogDrop", "TcpExt:TCPRcvQDrop", "TcpExt:TCPZeroWindowDrop",
                "TcpExt:TCPOFOQueue", "TcpExt:TCPSACKReorder", "TcpExt:TCPDSACKRecv",
                "TcpExt:TCPTimeouts", "TcpExt:TCPRcvCollapsed", "TcpExt:PruneCalled",
                "TcpExt:TCPMemoryPressures")


def read_tcp_counters():
    values = {}
    for name in ("/proc/net/snmp", "/proc/net/netstat"):
        lines = Path(name).read_text().splitlines()
        for keys, numbers in zip(lines[::2], lines[1::2]):
            prefix, keys = keys.split(":", 1)
            for key, number in zip(keys.split(), numbers.split(":", 1)[1].split()):
                values[f"{prefix}:{key}"] = int(number)
    return {key: values.get(key, 0) for key in TCP_COUNTERS}


def read_cpu_times():
    """(softirq, steal) in clock ticks per CPU from /proc/stat."""
    times = []
    for line in Path("/proc/stat").read_text().splitlines():
        if re.match(r"cpu\d+ ", line):
            fields = [int(x) for x in line.split()[1:]]
            times.append((fields[6], fields[7]))
    return times


def read_cpu_idle():
    """Idle clock ticks (idle + iowait) per CPU from /proc/stat."""
    return [int(line.split()[4]) + int(line.split()[5])
            for line in Path("/proc/stat").read_text().splitlines()
            if re.match(r"cpu\d+ ", line)]


def read_mhz():
    return [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("cpu MHz")]


PF_KTHREAD = 0x00200000


def read_others(exclude):
    """CPU ticks of every process but `exclude` (this harness, whose reaped
    children include the client, and the server): [user processes, kernel
    threads].  A process's children that exited and were reaped count in
    its cutime/cstime, so a build's short-lived compilers are seen through
    make or pip; what started and ended between two snapshots under a parent
    that did not exist at the first one is missed."""
    totals = [0, 0]
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After "(comm)": state is fields[0]; flags [6]; utime..cstime [11:15].
        ticks = sum(int(v) for v in fields[11:15])
        totals[1 if int(fields[6]) & PF_KTHREAD else 0] += ticks
    return totals


def snapshot(exclude=()):
    return {"softirqs": read_softirqs(), "softnet": read_softnet(), "cpu": read_cpu_times(),
            "idle": read_cpu_idle(), "tcp": read_tcp_counters(), "others": read_others(exclude)}


#: What ss -ti says that the issue's candidates touch: congestion control and
#: pacing (sender), buffer autotuning (receiver), loss on loopback.
SS_KEYS = ("cwnd", "ssthresh", "pacing_rate", "delivery_rate", "bytes_retrans", "snd_wnd",
           "sndbuf_limited", "rwnd_limited", "rcv_space", "rcv_ssthresh")
#: Shown in the table: the server's (sending) end, then the client's.
SERVER_SS = ("cc", "cwnd", "pacing_rate", "delivery_rate", "bytes_retrans", "sndbuf_limited",
             "rwnd_limited")
CLIENT_SS = ("rcv_space", "rcv_ssthresh")
SYSCTLS = ("net.ipv4.tcp_congestion_control", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
           "net.ipv4.tcp_autocorking", "net.ipv4.tcp_moderate_rcvbuf")


def read_sysctls():
    values = {}
    for name in SYSCTLS:
        path = Path("/proc/sys") / name.replace(".", "/")
        values[name] = " ".join(path.read_text().split()) if path.exists() else None
    return values


def ss_snapshot(port):
    """The server's and the client's end of the connection, from `ss -tin`."""
    try:
        out = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} or "
                              f"dport = :{port} )"], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": str(exc)}
    ends, lines = {}, out.splitlines()
    # ss prints a socket line (Recv-Q Send-Q local peer) and an indented info line.
    for sock, info in zip(lines[::2], lines[1::2]):
        recv_q, send_q, local = sock.split()[:3]
        end = "server" if local.endswith(f":{port}") else "client"
        fields = {"recv_q": int(recv_q), "send_q": int(send_q), "cc": info.split()[0]}
        for key in SS_KEYS:
            if match := re.search(rf"(?:^|\s){key}[: ](\S+)", info):
                fields[key] = match[1]
        ends[end] = fields
    return ends


def vcpu_probe():
    done = subprocess.run([str(harness.BIN / "vcpu_probe"), "-a", str(harness.SERVER_CPU),
                           "-b", str(harness.CLIENT_CPU), "-t", "100", "-n", "1000"],
                          capture_output=True, text=True, timeout=30)
    return json.loads(done.stdout) if done.returncode == 0 else None


def measure_round(server, args, settings):
    command = [str(harness.BIN / "echo_client"), "-m", "source", "-p", str(server.port),
               "-c", "1", "-s", str(args.size), "-d", str(args.duration), "-w", str(args.warmup),
               *(["-g", args.cc] if args.cc else [])]
    probe = vcpu_probe()
    ss = {}
    timer = threading.Timer(args.warmup + args.duration / 2,
                            lambda: ss.update(ss_snapshot(server.port)))
    server.discard_output()
    exclude = {os.getpid(), server.proc.pid}
    before = snapshot(exclude)
    timer.start()
    try:
        sample = run_load(command, server=server, timeout=args.warmup + args.duration + 30)
    finally:
        timer.cancel()
    after = snapshot(exclude)
    ticks_ms = 1000 / settings["clk_tck"]
    return {
        "mb_s": sample["bytes"] / sample["duration"] / 1e6,
        "cpu_us_per_mib": (sample["server_cpu"] / (sample["bytes"] / MiB) * 1e6
                           if sample["server_cpu"] is not None else None),
        "contention": sample["contention"],
        "client_busy": sample["client_busy"],
        "client_wait": sample["client_wait"],
        "idle_ms": [(b - a) * ticks_ms for a, b in zip(before["idle"], after["idle"])],
        "net_rx": [b - a for a, b in zip(before["softirqs"], after["softirqs"])],
        "processed": [b[0] - a[0] for a, b in zip(before["softnet"], after["softnet"])],
        "dropped": sum(b[1] - a[1] for a, b in zip(before["softnet"], after["softnet"])),
        "squeezed": sum(b[2] - a[2] for a, b in zip(before["softnet"], after["softnet"])),
        "tcp": {k: after["tcp"][k] - before["tcp"][k] for k in TCP_COUNTERS},
        "softirq_ms": [(b[0] - a[0]) * ticks_ms for a, b in zip(before["cpu"], after["cpu"])],
        "steal_ms": [(b[1] - a[1]) * ticks_ms for a, b in zip(before["cpu"], after["cpu"])],
        "mhz": read_mhz(),
        "ss": ss,
        "others_ms": [(b - a) * ticks_ms for a, b in zip(before["others"], after["others"])],
        "speed": probe["speed"] if probe else None,
        "wakeup_us": [probe["wakeup_p50_us"], probe["wakeup_p90_us"]] if probe else None,
        "xfer_gbs": probe.get("xfer_gbs") if probe else None,
    }


def ss_text(end, keys):
    if not end:
        return "-"
    return " ".join([f"q={end['send_q']}/{end['recv_q']}"] +
                    [f"{k}={end[k]}" for k in keys if k in end])


def tcp_text(counters):
    return " ".join(f"{k.split(':')[1]}={v:,.0f}" for k, v in counters.items() if v) or "-"


def pair(values, digits=0):
    return "/".join(f"{v:,.{digits}f}" for v in values[:2]) if values else "-"


HEADER = ("| round | MB/s | µs/MiB | others ms | speed0/speed1 | wake p50/p90 µs | xfer GB/s "
          "| srv wait/cli busy/cli wait "
          "| idle0/idle1 ms | rx0/rx1 | pkt0/pkt1 | dropped/squeezed | si0/si1 ms "
          "| st0/st1 ms | MHz0/MHz1 | TCP counters | srv ss | cli ss |")


def row(label, r):
    cpu = "-" if r["cpu_us_per_mib"] is None else f"{r['cpu_us_per_mib']:,.0f}"
    waits = "/".join("-" if v is None else f"{v:.0%}"
                     for v in (r["contention"], r["client_busy"], r.get("client_wait")))
    return (f"| {label} | {r['mb_s']:,.0f} | {cpu} | {pair(r['others_ms'])} | "
            f"{pair(r['speed'])} | "
            f"{pair(r['wakeup_us'])} | "
            f"{'-' if r.get('xfer_gbs') is None else format(r['xfer_gbs'], '.1f')} | "
            f"{waits} | {pair(r['idle_ms'])} | "
            f"{pair(r['net_rx'])} | "
            f"{pair(r['processed'])} | {r['dropped']:,.0f}/{r['squeezed']:,.0f} | "
            f"{pair(r['softirq_ms'])} | {pair(r['steal_ms'])} | {pair(r['mhz'])} | "
            f"{tcp_text(r['tcp'])} | {ss_text(r['ss'].get('server'), SERVER_SS)} | "
            f"{ss_text(r['ss'].get('client'), CLIENT_SS)} |")


def side_means(rounds):
    """Per-key means of the numeric candidates over `rounds`."""
    def mean(values):
        return statistics.fmean(values) if values else float("nan")
    cpu = [r["cpu_us_per_mib"] for r in rounds if r["cpu_us_per_mib"] is not None]
    return {"mb_s": mean([r["mb_s"] for r in rounds]),
            "cpu_us_per_mib": mean(cpu) if cpu else None,
            "net_rx": [mean([r["net_rx"][i] for r in rounds]) for i in range(2)],
            "processed": [mean([r["processed"][i] for r in rounds]) for i in range(2)],
            "contention": (mean([r["contention"] for r in rounds])
                           if None not in [r["contention"] for r in rounds] else None),
            "client_busy": (mean([r["client_busy"] for r in rounds])
                            if None not in [r["client_busy"] for r in rounds] else None),
            "client_wait": (mean([r["client_wait"] for r in rounds])
                            if None not in [r["client_wait"] for r in rounds] else None),
            "idle_ms": [mean([r["idle_ms"][i] for r in rounds]) for i in range(2)],
            "dropped": mean([r["dropped"] for r in rounds]),
            "squeezed": mean([r["squeezed"] for r in rounds]),
            "tcp": {k: mean([r["tcp"][k] for r in rounds]) for k in TCP_COUNTERS},
            "softirq_ms": [mean([r["softirq_ms"][i] for r in rounds]) for i in range(2)],
            "steal_ms": [mean([r["steal_ms"][i] for r in rounds]) for i in range(2)],
            "mhz": [mean([r["mhz"][i] for r in rounds]) for i in range(min(2, len(rounds[0]["mhz"])))],
            "speed": [mean([r["speed"][i] for r in rounds if r["speed"]]) for i in range(2)],
            "others_ms": [mean([r["others_ms"][i] for r in rounds]) for i in range(2)],
            "wakeup_us": [mean([r["wakeup_us"][i] for r in rounds if r["wakeup_us"]])
                          for i in range(2)],
            "xfer_gbs": mean([r["xfer_gbs"] for r in rounds if r.get("xfer_gbs") is not None]),
            "ss": {}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contender", default=REFERENCE,
                        help="c-io_uring, asyncio, uvloop or zcloop (default: %(default)s)")
    parser.add_argument("--kind", default="source-streams",
                        choices=("source-protocol", "source-streams"),
                        help="server kind (the C reference has one mode for both)")
    parser.add_argument("--size", type=int, default=16 * MiB, help="message size, bytes")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--duration", type=float, default=0.8, help="window, seconds")
    parser.add_argument("--warmup", type=float, default=0.2, help="seconds before the window")
    parser.add_argument("--cc", metavar="NAME",
                        help="TCP congestion control of both ends (TCP_CONGESTION, e.g. cubic "
                             "or bbr; default: the system's)")
    parser.add_argument("--no-halt", action="store_true",
                        help="hold /dev/cpu_dma_latency at 0 (idle vCPUs poll, never halt)")
    parser.add_argument("--json", metavar="FILE", help="also write every round here")
    args = parser.parse_args()

    build_error = harness.build_c_helpers()
    if build_error:
        sys.exit(f"C helpers not built: {build_error}")
    settings = {"clk_tck": os.sysconf("SC_CLK_TCK")}
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    thp_text = thp.read_text().strip() if thp.exists() else "absent"
    sysctls = read_sysctls()
    if args.no_halt:
        # Held while the file stays open (PM QoS): the idle governor then
        # only picks states with zero exit latency, i.e. polling.
        qos = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
        os.write(qos, (0).to_bytes(4, sys.byteorder))
    print(f"{args.kind} {args.size:,} B on {args.contender} (congestion control: "
          f"{args.cc or 'system default'}{', no halt' if args.no_halt else ''}): "
          f"{args.rounds} rounds of "
          f"{args.warmup}+{args.duration} s; server CPU {harness.SERVER_CPU}, client CPU "
          f"{harness.CLIENT_CPU}; THP enabled: {thp_text}", flush=True)
    print("; ".join(f"{k} = {v}" for k, v in sysctls.items()), flush=True)
    server = Server(args.kind, args.contender, cc=args.cc)
    rounds = []
    try:
        print(HEADER)
        print("|" + "---|" * (HEADER.count("|") - 1))
        for index in range(args.rounds):
            try:
                result = measure_round(server, args, settings)
            except BenchError as exc:
                print(f"| {index + 1} | error: {exc} |", flush=True)
                continue
            rounds.append(result)
            print(row(str(index + 1), result), flush=True)
    finally:
        server.stop()
    if len(rounds) >= 2:
        speeds = [r["mb_s"] for r in rounds]
        middle = (min(speeds) + max(speeds)) / 2
        fast = [r for r in rounds if r["mb_s"] >= middle]
        slow = [r for r in rounds if r["mb_s"] < middle]
        print(f"\nMB/s: median {statistics.median(speeds):,.0f}, min {min(speeds):,.0f}, "
              f"max {max(speeds):,.0f}; split at {middle:,.0f}: {len(fast)} fast, "
              f"{len(slow)} slow (means per side)")
        for label, side in (("fast", fast), ("slow", slow)):
            if side:
                print(row(f"{label} (n={len(side)})", side_means(side)))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"args": vars(args), "thp": thp_text, "sysctls": sysctls, "server_cpu": harness.SERVER_CPU,
             "client_cpu": harness.CLIENT_CPU, "rounds": rounds}, indent=1))


if __name__ == "__main__":
    main()
