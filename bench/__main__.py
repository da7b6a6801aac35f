"""coderoom benchmark: `uv run python -m bench [--compare]` (make bench / make bench-compare).

`--report bench/results/<stamp>` rewrites the result files of a finished run (no load).

Environment (all optional):
  SCENARIOS    small wide bigroom idle2000 idle5000 capacity split   (default: all)
               and, only when named, capacity-wide (bench/capwide.py: every target at
               growing sizes until p99 > CAPWIDE_P99_MS or a loss; ~1 min per step)
  CAPWIDE_ROOMS  capacity-wide steps in rooms of 1 + 4 (default "200 400 800 1200")
  CAPWIDE_PINS   capacity-wide placements (default "0:1 -": servers on core 0, then unpinned)
  CAPWIDE_P99_MS the p99 a step must stay under (default 50)
  YWS_ADAPTER  load generator client for coderoom/ywebsocket (default yws; yws-raw is cheap)
  TARGETS      --compare only: coderoom socketio hocuspocus ywebsocket (default: all four);
               also coderoom-cluster: the same gateways on a local Redis Cluster of 3
               primaries with BENCH_CLUSTER_REPLICAS replicas each (default 1)
  QUICK=1      short windows (smoke run); results get a "-quick" suffix, README untouched
  REPEAT       runs per traffic scenario and target (default 3 with --compare, else 1)
  REPEAT_IDLE  runs per idle scenario and target (default 1)
  CAPACITY     idle clients held by ONE gateway, per step (default "2000 5000 8000")
  CAP_HOLD     seconds each capacity step is held (default 20; QUICK 10)
  JOINS        joins of the 2 KB room during each capacity step (default 100)
  QUIET_WAIT   before each matrix run, wait up to this many seconds for the shared
               machine to be quieter than 40 % of a core (default 0: do not wait)
  OUT          results folder (default docs/bench/<UTC date>)
  PEERS_SRC    reference peers to copy (default ../shared/peers)
  MONGODB_URL  use this MongoDB instead of starting `coderoom mongo`
  BENCH_CODE   coderoom code to run: a git ref, snapshotted with `git archive` (default
               HEAD: committed code only, immune to edits made while the bench runs),
               or "live" for the working tree as it is
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from bench import capwide, output
from bench.machine import busy_pct, describe, machine_line
from bench.procs import Procs
from bench.runner import Runner, capacity, say, split
from bench.scenarios import ALL, MATRIX, OPTIONAL, capacity_step, parse_list, scenario
from bench.targets import (
    PEER_NAMES,
    Coderoom,
    CoderoomCluster,
    Peer,
    RedisCluster,
    RedisServer,
    install_peers,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def wait_quiet(limit: float, threshold: float = 40.0) -> None:
    """Wait (at most `limit` s) until the machine's busy CPU is below `threshold` % of a core."""
    deadline = time.monotonic() + limit
    while limit > 0 and time.monotonic() < deadline:
        busy = busy_pct(1.0)
        if busy < threshold:
            return
        say(f"   machine busy ({busy:.0f} % of a core): waiting for quiet")
        time.sleep(2.0)


def _stop_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--compare", action="store_true", help="side by side with the reference peers")
    ap.add_argument(
        "--report",
        metavar="RAW_DIR",
        type=Path,
        help="only rewrite the result files from bench/results/<stamp>/session.json",
    )
    args = ap.parse_args(argv)
    if args.report:
        session = json.loads((args.report / "session.json").read_text())
        out = Path(os.environ.get("OUT") or ROOT / "docs" / "bench" / session["date"])
        return finish(session, out)

    env = os.environ
    quick = env.get("QUICK", "") not in ("", "0")
    wanted = parse_list(env.get("SCENARIOS"), ALL, ALL + OPTIONAL)
    targets = ["coderoom"]
    if args.compare:
        targets = parse_list(
            env.get("TARGETS"),
            ("coderoom", *PEER_NAMES),
            ("coderoom", "coderoom-cluster", *PEER_NAMES),
        )
    repeat = int(env.get("REPEAT", "3" if args.compare else "1"))
    repeat_idle = int(env.get("REPEAT_IDLE", "1"))
    steps = [int(x) for x in env.get("CAPACITY", "2000 5000 8000").split()]
    hold = float(env.get("CAP_HOLD", "10" if quick else "20"))
    joins = int(env.get("JOINS", "100"))
    quiet_wait = float(env.get("QUIET_WAIT", "0"))
    plan = capwide.Plan.from_env(env, quick)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out_dir = Path(
        env.get("OUT") or ROOT / "docs" / "bench" / time.strftime("%Y-%m-%d", time.gmtime())
    )
    raw = HERE / "results" / stamp
    kind = ("compare" if args.compare else "bench") + ("-quick" if quick else "")

    procs = Procs(raw / "logs")
    # Code snapshot, MongoDB data, rooms files: outside the repository (no stray packages
    # for linters and type checkers), removed at exit.
    scratch = Path(tempfile.mkdtemp(prefix=f"coderoom-bench-{stamp}-"))
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGHUP, _stop_on_signal)
    t0 = time.monotonic()
    runner: Runner | None = None
    try:
        peers = install_peers(
            Path(env.get("PEERS_SRC") or ROOT.parent / "shared" / "peers"), HERE / ".peers"
        )
        redis_server = RedisServer(procs)
        machine = describe(redis_server.version())
        say(
            f"bench {kind}: targets {' '.join(targets)}; scenarios {' '.join(wanted)}; "
            f"raw results {raw}"
        )
        runner = Runner(peers, raw)
        coderoom: Coderoom | None = None
        notes: list[str] = []
        needs_coderoom = "coderoom" in targets or "coderoom-cluster" in targets
        on_cluster: CoderoomCluster | None = None
        if needs_coderoom:
            coderoom = Coderoom(procs, redis_server, scratch)
            code = env.get("BENCH_CODE", "HEAD")
            if code != "live":
                coderoom.snapshot(code)
            machine["coderoom_code"] = coderoom.commit
            say(f"coderoom code: {coderoom.commit} from {coderoom.src}")
            try:
                blocks = max(
                    [scenario(s).rooms for s in wanted if s in MATRIX]
                    + [capacity_step(n, hold).rooms for n in steps if "capacity" in wanted]
                    + [max(plan.rooms) for _ in [1] if "capacity-wide" in wanted]
                    + [20]
                )
                t_seed = time.monotonic()
                coderoom.prepare(blocks, env.get("MONGODB_URL"))
                say(
                    f"seeded {blocks} blocks + one 2 KB block into {coderoom.mongodb_url} "
                    f"in {time.monotonic() - t_seed:.1f}s"
                )
                probe = coderoom.start()
                coderoom.stop()
                say(f"coderoom gateways answered /healthz ({', '.join(probe.urls)})")
            except Exception as exc:
                say(f"!! coderoom could not be started ({coderoom.commit}):\n{exc}")
                traceback.print_exc(file=sys.stdout)
                say("nothing measured; fix the gateway or set BENCH_CODE to a working commit")
                return 2
        if coderoom is not None and "coderoom-cluster" in targets:
            replicas = int(env.get("BENCH_CLUSTER_REPLICAS", "1"))
            on_cluster = CoderoomCluster(coderoom, RedisCluster(procs, replicas))
            ports = on_cluster.cluster_ports
            say(f"local Redis Cluster (3 primaries, {replicas} replica each) on {ports}")
        peer_objs = {p: Peer(p, procs, redis_server, peers) for p in targets if p in PEER_NAMES}

        matrix = [s for s in wanted if s in MATRIX]
        rounds = max([repeat if not scenario(s).idle else repeat_idle for s in matrix] or [0])
        for k in range(1, rounds + 1):
            for sc in matrix:
                scen = scenario(sc, quick)
                if k > (repeat_idle if scen.idle else repeat):
                    continue
                for t in targets:
                    target: Any = {"coderoom": coderoom, "coderoom-cluster": on_cluster}.get(
                        t
                    ) or peer_objs.get(t)
                    if target is None:
                        continue
                    label = f"{t}/{sc}" + (f"#{k}" if rounds > 1 else "")
                    try:
                        wait_quiet(quiet_wait)
                        running = target.start()
                        kw: dict[str, Any] = {"tags": {"repeat": k}}
                        if t.startswith("coderoom"):
                            kw["rooms_file"] = target.rooms_file
                        runner.run(target, running, scen, label, **kw)
                    except Exception as exc:  # noted in the results; the matrix goes on
                        notes.append(f"{label}: {exc}".splitlines()[0])
                        say(f"!! {label}: {exc}")
                    finally:
                        target.stop()
        for extra in ("capacity", "split"):
            if coderoom is None or extra not in wanted:
                continue
            try:
                if extra == "capacity":
                    capacity(runner, coderoom, steps, hold, joins)
                else:
                    split(runner, coderoom, quick)
            except Exception as exc:  # one broken measurement must not lose the others
                notes.append(f"coderoom {extra}: {exc}".splitlines()[0])
                say(f"!! coderoom {extra}: {exc}")
        if "capacity-wide" in wanted:
            ours = {"coderoom": coderoom, "coderoom-cluster": on_cluster}
            files = capacity_wide(runner, plan, targets, ours, peer_objs, out_dir, machine)
            say(f"wrote {', '.join(str(f) for f in files)}")
        session = {
            "kind": kind,
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "targets": targets,
            "machine": machine,
            "notes": notes + runner.failures,
            "elapsed_s": time.monotonic() - t0,
            "quick": quick,
            # The README's side-by-side only from a run with a peer in it.
            "readme": args.compare and not quick and any(t in PEER_NAMES for t in targets),
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "results": runner.results,
        }
        (raw / "session.json").write_text(json.dumps(session))
        if not runner.results:  # capacity-wide alone: its own files are written
            return 0
        return finish(session, out_dir)
    finally:
        if runner is not None:
            runner.kill_all()
        procs.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)


def capacity_wide(
    runner: Runner,
    plan: capwide.Plan,
    targets: list[str],
    ours: dict[str, Coderoom | None],
    peers: dict[str, Peer],
    out_dir: Path,
    machine: dict[str, Any],
) -> list[Path]:
    """bench/capwide.py's steps, each on a freshly started target."""

    def one_step(name: str, pin: str, scen: Any) -> dict[str, Any]:
        target: Any = ours.get(name) or peers[name]
        adapter = target.adapter
        if adapter == "yws":
            target.adapter = capwide.RAW_ADAPTER
        label = f"{name}/{scen.name}@{'pin' + pin if pin != '-' else 'unpinned'}"
        try:
            running = target.start()
            kw: dict[str, Any] = {"tags": {"kind": "capwide", "pin": pin}, "pin": pin}
            if name.startswith("coderoom"):
                kw["rooms_file"] = target.rooms_file
            result = runner.run(target, running, scen, label, **kw)
            runner.results.remove(result)  # its own table (capwide.md), not the matrix's
            return result
        except Exception as exc:  # the step broke; the next target goes on
            say(f"!! {label}: {exc}")
            return {"failed": True, "meta": {"label": label}}
        finally:
            target.stop()
            target.adapter = adapter

    rows = capwide.run(plan, targets, one_step, say)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return capwide.write(out_dir, rows, plan, machine_line(machine), date)


def finish(session: dict[str, Any], out_dir: Path) -> int:
    files, summary = output.write(
        out_dir,
        session["kind"],
        session["results"],
        session["targets"],
        session["machine"],
        session["notes"],
        session["elapsed_s"],
        session["quick"],
        update_readme=session["readme"],
        finished=session.get("finished", ""),
    )
    shown = [str(f.relative_to(ROOT)) if f.is_relative_to(ROOT) else str(f) for f in files]
    say("\n" + summary)
    say(f"\nwrote {', '.join(shown)}")
    say(f"bench took {session['elapsed_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
