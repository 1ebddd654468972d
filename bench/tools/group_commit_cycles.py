#!/usr/bin/env python3
"""Where a group commit's cycle goes, from a scheduler trace of `logship-bench append`.

    perf sched record -o sched.data target/release/logship-bench append --cases 100x64:tasks
    perf script -i sched.data -F tid,comm,cpu,time,event,trace > sched.txt
    python3 bench/tools/group_commit_cycles.py sched.txt logship-writer bench-task-work   # the case
    python3 bench/tools/group_commit_cycles.py sched.txt logship-bench bench-ceiling-w    # its ceiling

The writer is the thread of the given name that switches most while the appender tasks' worker
threads (names starting with the given prefix) exist. A cycle starts when the writer, back from
a sleep in the kernel's D state (its write or fdatasync), wakes the first worker thread; the
"flush" is from the moment the next write first blocks in D to the writer's return from its
last D sleep before it wakes the workers again. Within the gather part (back from the sync to
the next write blocking) it sums the writer's time on a CPU, its sleeps in S (waiting for the
group to append again, or for a lock), its time woken but waiting for a CPU, and each worker's
time on a CPU. Times are µs; the trace itself slows every switch, so cycles run longer than
untraced: compare the case with its ceiling in the same trace, not with untraced figures.
"""

import re
import statistics
import sys
from collections import Counter

LINE = re.compile(r"^\s*(\S.*?)\s+(-?\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:sched_(\w+):\s+(.*)$")
SWITCH = re.compile(
    r"prev_comm=(.*?) prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=(.*?) next_pid=(\d+)"
)
WAKING = re.compile(r"comm=(.*?) pid=(\d+)")


def read_events(path):
    """(kind, µs, fields...) for each switch and waking event."""
    events = []
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            _comm, tid, _cpu, t, ev, rest = m.groups()
            t = float(t) * 1e6
            if ev == "switch":
                p = SWITCH.search(rest)
                if p:
                    events.append(("switch", t, p.group(1), int(p.group(2)), p.group(3), int(p.group(5))))
            elif ev == "waking":
                p = WAKING.search(rest)
                if p:
                    events.append(("wake", t, int(p.group(2)), int(tid)))
    return events


def cycles_of(events, writer, workers):
    """The writer's cycles, as dicts of their parts."""
    running_since = {}
    writer_sleep = ("R", None)
    writer_woken = None
    back_from_d = None
    cycles, cur = [], None
    for e in events:
        if e[0] == "wake":
            _, t, target, waker = e
            if target == writer:
                writer_woken = t
            starts = waker == writer and target in workers and back_from_d is not None
            if starts and (cur is None or "write_at" in cur):
                if cur is not None:
                    cur["flush"] = back_from_d - cur["write_at"]
                    cycles.append(cur)
                cur = {"start": back_from_d, "first_wake": t, "writer_run": 0.0,
                       "worker_run": {}, "writer_sleep": 0.0, "writer_wait_cpu": 0.0}
            continue
        _, t, _prev_comm, prev, prev_state, nxt = e
        gathering = cur is not None and "write_at" not in cur
        if prev in running_since:
            ran = t - running_since.pop(prev)
            if gathering and prev == writer:
                cur["writer_run"] += ran
            elif gathering and prev in workers:
                cur["worker_run"][prev] = cur["worker_run"].get(prev, 0.0) + ran
        if prev == writer:
            if prev_state.startswith("D") and gathering and t > cur["first_wake"]:
                cur["write_at"] = t
            writer_sleep = (prev_state, t)
        if nxt == writer:
            state, since = writer_sleep
            woke = writer_woken if since is not None and writer_woken is not None and writer_woken >= since else t
            if state.startswith("D"):
                back_from_d = woke
            elif state.startswith("S") and gathering and since is not None:
                cur["writer_sleep"] += woke - since
                cur["writer_wait_cpu"] += t - woke
        if nxt == writer or nxt in workers:
            running_since[nxt] = t
    return [c for c in cycles if c.get("flush", 0) > 0]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    path, writer_comm, worker_prefix = sys.argv[1:]
    events = read_events(path)
    workers = {e[3] for e in events if e[0] == "switch" and e[2].startswith(worker_prefix)}
    if not workers:
        sys.exit(f"no thread named {worker_prefix}* in {path}")
    times = [e[1] for e in events if e[0] == "switch" and (e[3] in workers or e[5] in workers)]
    lo, hi = min(times), max(times)
    events = [e for e in events if lo <= e[1] <= hi]
    names = Counter(e[3] for e in events if e[0] == "switch" and e[2].startswith(writer_comm))
    if not names:
        sys.exit(f"no thread named {writer_comm}* beside the workers in {path}")
    writer = names.most_common(1)[0][0]
    cycles = cycles_of(events, writer, workers)
    if not cycles:
        sys.exit("no cycle found")
    print(f"writer {writer}, workers {sorted(workers)}, {(hi - lo) / 1e6:.2f} s, {len(cycles)} cycles")

    def show(name, xs):
        xs = sorted(xs)
        q = lambda p: xs[int(p * (len(xs) - 1))]
        print(f"{name:44s} p50 {q(.5):6.1f}  p10 {q(.1):6.1f}  p90 {q(.9):6.1f}  mean {statistics.mean(xs):6.1f}")

    show("cycle", [c["flush"] + c["write_at"] - c["start"] for c in cycles])
    show("flush (write blocks -> back from the sync)", [c["flush"] for c in cycles])
    show("gather (back from the sync -> write blocks)", [c["write_at"] - c["start"] for c in cycles])
    show("  back from the sync -> first worker woken", [c["first_wake"] - c["start"] for c in cycles])
    show("  writer on a CPU", [c["writer_run"] for c in cycles])
    show("  writer asleep", [c["writer_sleep"] for c in cycles])
    show("  writer woken, waiting for a CPU", [c["writer_wait_cpu"] for c in cycles])
    show("  workers on a CPU (both)", [sum(c["worker_run"].values()) for c in cycles])
    show("  workers on a CPU (the busier)", [max(c["worker_run"].values(), default=0) for c in cycles])


if __name__ == "__main__":
    main()
