"""Data-parallel scaling of `moetune-runner train` on this machine: WORLD runner processes (one
intra-op thread each) train the built-in tiny model over Gloo on loopback. Prints one JSON line with
the median tokens/s of the SFT steps after the first (rank 0's metrics events; the tokens are the
global batch's, summed over ranks).

    data_parallel.py --runner target/release/moetune-runner --world 2 --data deploy/demo/finance-alpaca-mini.jsonl
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile

OPTIONS = {"max_steps": 12, "gradient_accumulation_steps": 4, "qat": {"steps": 1}, "checkpoint_every_n_steps": 0,
           "log_every_n_steps": 1, "monitor": {"every_n_steps": 100}}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runner", required=True)
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    env = {**os.environ, "MOETUNE_THREADS": "1", "MOETUNE_DEVICE": "cpu"}
    rendezvous = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory() as out:
        procs = []
        for rank in range(args.world):
            cmd = [args.runner, "train", "--data", args.data, "--out", os.path.join(out, "out"), "--batch-size", str(args.batch),
                   "--options", json.dumps(OPTIONS)]
            if args.world > 1:
                cmd += ["--world-size", str(args.world), "--rank", str(rank), "--rendezvous", rendezvous, "--bind", "127.0.0.1"]
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = [proc.communicate() for proc in procs]
        for rank, (proc, (_, err)) in enumerate(zip(procs, outputs)):
            if proc.returncode != 0:
                sys.exit(f"rank {rank} of {args.world} failed:\n{err}")
    events = [json.loads(line) for line in outputs[0][0].splitlines() if line.startswith("{")]
    steps = [e for e in events if e.get("type") == "metrics" and e["stage"] == "sft"]
    rates = [e["tokens_per_second"] for e in steps[1:]]
    print(json.dumps({"bench": "distributed", "world_size": args.world, "threads_per_rank": 1, "batch": args.batch,
                      "accumulation": OPTIONS["gradient_accumulation_steps"], "steps": len(rates),
                      "tokens_per_s": statistics.median(rates)}), flush=True)


if __name__ == "__main__":
    main()
