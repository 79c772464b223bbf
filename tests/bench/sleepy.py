"""A stand-in benchmark for the harness tests: prints, then sleeps or exits with a code.

python -m tests.bench.sleepy [--exit CODE] [--sleep SECONDS]
"""

from __future__ import annotations

import argparse
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--exit", type=int, default=0)
parser.add_argument("--sleep", type=float, default=0.0)
args = parser.parse_args()
print("sleepy started", flush=True)
time.sleep(args.sleep)
sys.exit(args.exit)
