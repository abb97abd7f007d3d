"""bench/batch: stored orders/s through POST /orders/batch (batches of --batch, 100) against single
POST /orders, one ingest and one nats-server, same run, same machine (issue #22's goal: >= 5x).

    python -m bench.batch [--rounds 3] [--seconds 5] [--connections 16] [--batch 100]

Contenders, interleaved per round (single, atomic, pipelined, keyed, single, ...), wrk at --connections:
- single: POST /orders, one order per request (no Idempotency-Key: the common path);
- atomic: POST /orders/batch, --batch orders without keys: one JetStream atomic batch each;
- pipelined: POST /orders/batch?mode=pipelined, the same body: each order published on its own,
  all at once, one answer after every PubAck;
- keyed: POST /orders/batch, --batch orders each with a fresh idempotency key: the pipelined mode
  (a key claim in KV ORDER_KEYS, then the publish, per item).
Stored orders/s = orders answered created inside wrk's window / seconds; the honesty check at the
end: the messages in ORDERS >= the orders answered created (never a created item that was not
stored; requests still in flight when wrk's window closes are stored but not counted by wrk).
Prints figures; it does not pass or fail on timing."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.ingest import BODY, ingest_process, need_wrk, stored_orders, wrk, wrk_bench_parser
from orderflow_tools.kit import NatsServer, StartError, free_port

HEAD = "wrk.method='POST'\nwrk.headers['Content-Type']='application/json'\n"


def lua_scripts(work: Path, batch: int) -> dict[str, Path]:
    items = ",".join(['{"order":' + BODY + "}"] * batch)
    head = HEAD
    scripts = {
        "single": head + f"wrk.body='{BODY}'\n",
        "atomic": head + f"wrk.body='{{\"orders\":[{items}]}}'\n",
        "pipelined": head + f"wrk.body='{{\"orders\":[{items}]}}'\n",
        "keyed": head + keyed_lua(batch, "warm-up"),  # a fresh key per item: a prefix and a counter
    }
    paths = {}
    for name, text in scripts.items():
        paths[name] = work / f"{name}.lua"
        paths[name].write_text(text)
    return paths


def keyed_lua(batch: int, prefix: str) -> str:
    """Fresh keys per run: `prefix` differs per run (wrk's Lua starts each run with the same
    random seed, so a random prefix would repeat, and a repeated key is a replay, not a store)."""
    return (
        "local n = 0\n"
        f"local prefix = '{prefix}'\n"
        "request = function()\n"
        "  local parts = {}\n"
        f"  for i = 1, {batch} do\n"
        "    n = n + 1\n"
        f"    parts[i] = '{{\"order\":{BODY},\"idempotency_key\":\"' .. prefix .. '-' .. n .. '\"}}'\n"
        "  end\n"
        "  return wrk.format(nil, nil, nil, '{\"orders\":[' .. table.concat(parts, ',') .. ']}')\n"
        "end\n"
    )


def main() -> int:
    ap = wrk_bench_parser(__doc__, seconds=5, connections=16)
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()
    need_wrk()
    work = Path(tempfile.mkdtemp(prefix="orderflow-bench-batch-"))
    scripts = lua_scripts(work, args.batch)
    port = free_port()
    nats = NatsServer(work / "js", Path(os.devnull))
    ingest = ingest_process(nats.url, port, Path(os.devnull), "ingest")
    per_request = {"single": 1, "atomic": args.batch, "pipelined": args.batch, "keyed": args.batch}
    paths = {
        "single": "/orders",
        "atomic": "/orders/batch",
        "pipelined": "/orders/batch?mode=pipelined",
        "keyed": "/orders/batch",
    }
    try:
        try:
            nats.start()
            ingest.start()
            ingest.wait_http(f"http://127.0.0.1:{port}/readyz")
        except StartError as exc:
            raise SystemExit(f"bench: {exc}") from None
        time.sleep(1)
        created = 0
        rates: dict[str, list[float]] = {name: [] for name in scripts}
        for name in scripts:  # warm up
            res = wrk(f"http://127.0.0.1:{port}{paths[name]}", 1, args.connections, scripts[name])
            created += int(res["ok"]) * per_request[name]
        for r in range(args.rounds):
            for name in scripts:
                if name == "keyed":
                    scripts[name].write_text(HEAD + keyed_lua(args.batch, f"round-{r}"))
                seconds = max(1, round(args.seconds))
                res = wrk(f"http://127.0.0.1:{port}{paths[name]}", seconds, args.connections, scripts[name])
                orders = int(res["ok"]) * per_request[name]
                created += orders
                rates[name].append(orders / seconds)
                print(
                    f"round {r + 1}/{args.rounds} {name:>9}: {orders / seconds:9.0f} stored orders/s "
                    f"({res['rps']:.0f} requests/s, p50 {res['p50']:.1f} ms, {int(res['errors'])} non-2xx)",
                    flush=True,
                )
        stored = asyncio.run(stored_orders(nats.url))
        med = {n: statistics.median(v) for n, v in rates.items()}
        print()
        print(
            f"stored orders/s (median of {args.rounds}), batches of {args.batch}, {args.connections} connections:"
        )
        for name in scripts:
            print(f"  {name:>9}: {med[name]:9.0f}   x{med[name] / med['single']:.1f} single POSTs")
        print(f"honesty: {created} orders answered created (counted by wrk), {stored} stored in ORDERS")
        print(json.dumps({"median_orders_per_s": med, "created": created, "stored": stored}))
        return 0 if stored >= created else 1
    finally:
        ingest.stop()
        nats.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
