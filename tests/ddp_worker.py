"""One rank of the DDP test (tests/test_ddp.py runs it under torch.distributed.run with 2 CPU processes).

Usage: ddp_worker.py BASE_DIR CORPUS OUT_DIR. Each rank trains with the same settings and
writes rank<N>.json next to OUT_DIR: a hash of its weights after the last step (before
Trainer reloads the best checkpoint) and of the batches it saw.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

from transformers import TrainerCallback

from trainer.config import TrainConfig
from trainer.train import train


def weights_hash(model) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Record(TrainerCallback):
    def __init__(self) -> None:
        self.hashes, self.batches = {}, []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:
            self.hashes["initial"] = weights_hash(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == state.max_steps:
            self.hashes["final"] = weights_hash(model)


def main() -> None:
    base, corpus, out = sys.argv[1:4]
    record = Record()

    config = TrainConfig(base=base, corpus=corpus, out=out, max_length=64, batch_size=4, learning_rate=3e-3,
                         max_steps=3, eval_steps=3, logging_steps=1, eval_examples=0, patience=0, progress=False)
    import trainer.train as train_module

    class Spy(train_module.Collator):  # what each rank trained on
        def __call__(self, features):
            record.batches.append([len(f["input_ids"]) for f in features])
            return super().__call__(features)

    train_module.Collator = Spy
    train(config, log=lambda *a, **k: None, callbacks=[record])
    rank = int(os.environ["RANK"])
    result = {"rank": rank, "world": int(os.environ["WORLD_SIZE"]), **record.hashes, "batches": record.batches}
    (Path(out).parent / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
