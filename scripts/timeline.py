#!/usr/bin/env python3
"""The steps of lone appends, from `perf trace -T` of a leader and a follower (scripts/timeline.sh):
for each request the client sends, the next AppendEntries carrying an entry to the follower, the
follower reading it, writing pages, its fdatasync, its reply, the leader reading the reply and
answering the client. Prints the median and p90 of each step, in ms."""
import re, statistics, sys
d = sys.argv[1]
pat = re.compile(r'^\s*([\d.]+) \(\s*([\d.]*) ms\): (\S+)/(\d+) (\w+)\((?:fd: (\d+))?.*?= (\d+)')
def load(path, who):
    ev = []
    for line in open(path):
        m = pat.match(line)
        if not m: 
            if "[continued]: fdatasync" in line:
                t = float(line.split()[0]); dur = float(re.search(r'\(\s*([\d.]+) ms\)', line).group(1))
                ev.append((t, dur, who, "fdatasync", None, 0))
            continue
        t, dur, comm, tid, call, fd, ret = m.groups()
        ev.append((float(t), float(dur or 0), who, call, int(fd) if fd else None, int(ret)))
    return ev
L = load(f"{d}/leader.trace", "L"); F = load(f"{d}/follower.trace", "F")
evs = sorted(L + F)
# The client's connection: the first socket the leader reads a request of over 150 B from.
client_fd = None
for t, dur, who, call, fd, ret in evs:
    if who == "L" and call == "recvfrom" and ret > 150: client_fd = fd; break
steps = {k: [] for k in ["req->AE sent to F", "AE sent->F received", "F received->F pwrite", "F pwrite->F fsync start", "F fsync", "F fsync end->F reply", "F reply->L received", "L received->client reply", "total", "L own fsync", "L fsync end->F reply received (slack)"]}
n = len(evs)
reqs = [k for k, e in enumerate(evs) if e[2] == "L" and e[3] == "recvfrom" and e[4] == client_fd and e[5] > 150]
for r in reqs:
    t0 = evs[r][0]
    def nxt(start, pred):
        for k in range(start, min(n, start + 4000)):
            if pred(evs[k]): return k
        return None
    ae = nxt(r, lambda e: e[2] == "L" and e[3] == "writev" and e[5] >= 200 and e[4] != client_fd)
    if ae is None: continue
    ffd = evs[ae][4]
    frecv = nxt(ae, lambda e: e[2] == "F" and e[3] == "recvfrom" and e[5] >= 250)
    if frecv is None: continue
    fpw = nxt(frecv, lambda e: e[2] == "F" and e[3] == "pwrite64")
    fs = nxt(fpw or frecv, lambda e: e[2] == "F" and e[3] == "fdatasync")
    frep = nxt(fs or frecv, lambda e: e[2] == "F" and e[3] == "writev" and e[5] < 100)
    lrec = nxt(frep or frecv, lambda e: e[2] == "L" and e[3] == "recvfrom" and e[4] == ffd)
    lfs = nxt(r, lambda e: e[2] == "L" and e[3] == "fdatasync")
    resp = nxt(r, lambda e: e[2] == "L" and e[3] == "writev" and e[4] == client_fd)
    if None in (fpw, fs, frep, lrec, lfs, resp): continue
    if not (evs[resp][0] > evs[lrec][0]): continue
    T = lambda k: evs[k][0]
    steps["req->AE sent to F"].append(T(ae) - t0)
    steps["AE sent->F received"].append(T(frecv) - T(ae))
    steps["F received->F pwrite"].append(T(fpw) - T(frecv))
    steps["F pwrite->F fsync start"].append(T(fs) - T(fpw))
    steps["F fsync"].append(evs[fs][1])
    steps["F fsync end->F reply"].append(T(frep) - (T(fs) + evs[fs][1]))
    steps["F reply->L received"].append(T(lrec) - T(frep))
    steps["L received->client reply"].append(T(resp) - T(lrec))
    steps["total"].append(T(resp) - t0)
    steps["L own fsync"].append(evs[lfs][1])
    steps["L fsync end->F reply received (slack)"].append(T(lrec) - (T(lfs) + evs[lfs][1]))
print(f"{len(steps['total'])} appends")
for k, v in steps.items():
    if v: print(f"{k:40s} median {statistics.median(v):.3f} ms  p90 {sorted(v)[int(len(v)*0.9)]:.3f}")
