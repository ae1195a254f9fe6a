"""Scaling of `moetune-runner train` across ranks on this machine: WORLD runner processes (one
intra-op thread each) train the built-in tiny model over Gloo on loopback, the model whole on every
rank (data parallel) or split across them (`--split expert_parallel` or `fully_sharded`, which train
every weight: `--method full`). Prints one JSON line with the median tokens/s of the SFT steps after
the first (rank 0's metrics events; the tokens are the global batch's, summed over ranks).

    data_parallel.py --runner target/release/moetune-runner --world 2 --data deploy/demo/finance-alpaca-mini.jsonl
    data_parallel.py --runner target/release/moetune-runner --world 4 --method full --split fully_sharded --data ...
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
    p.add_argument("--method", choices=["lora", "full"], default="lora")
    p.add_argument("--split", choices=["none", "expert_parallel", "fully_sharded"], default="none")
    args = p.parse_args()
    if args.split != "none" and (args.method != "full" or args.world < 2):
        sys.exit("--split trains every weight across 2 or more ranks: add --method full and --world 2 or more")
    options = {**OPTIONS, "sft_method": args.method, "world_size": args.world}
    if args.split != "none":
        options[args.split] = True
    env = {**os.environ, "MOETUNE_THREADS": "1", "MOETUNE_DEVICE": "cpu"}
    rendezvous = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory() as out:
        procs = []
        for rank in range(args.world):
            cmd = [args.runner, "train", "--data", args.data, "--out", os.path.join(out, "out"), "--batch-size", str(args.batch),
                   "--options", json.dumps(options)]
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
    print(json.dumps({"bench": "distributed", "world_size": args.world, "method": args.method, "split": args.split, "threads_per_rank": 1, "batch": args.batch,
                      "accumulation": OPTIONS["gradient_accumulation_steps"], "steps": len(rates),
                      "tokens_per_s": statistics.median(rates)}), flush=True)


if __name__ == "__main__":
    main()
