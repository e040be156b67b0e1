"""Run the training CLI under torchrun and record this rank's final weights (for the test)."""
import hashlib
import os
import sys
from pathlib import Path

from segdemo.train import main

if __name__ == "__main__":
    record = Path(sys.argv[1])
    result = main(sys.argv[2:])
    state = result.model.state_dict()
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    rank = int(os.environ["RANK"])
    (record / f"rank{rank}.txt").write_text(f"{digest.hexdigest()} {result.steps}")
