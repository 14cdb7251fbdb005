"""transformers' Trainer, adapted: length-bucketed batches, the loss at reply tokens only, atomic checkpoints."""

from __future__ import annotations

import os
import shutil

from torch.utils.data import DataLoader
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from trainer.batching import LengthBucketSampler
from trainer.loss import reply_loss, supports_reply_loss
from trainer.run_dir import STAGING


class MovieTrainer(Trainer):
    """Trainer with length-bucketed batches (same order for a seed and epoch), the loss computed at
    reply tokens only (trainer.loss), optionally a KL term to the base, and atomic checkpoints."""

    def __init__(self, *args, kl_weight: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kl_weight = kl_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Under DDP the forward must go through the wrapper (it syncs gradients): use the model's own loss there.
        if model is not self.accelerator.unwrap_model(model) or not supports_reply_loss(model) or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        kl_weight = self.kl_weight if model.training else 0.0  # validation loss stays the plain reply loss
        loss = reply_loss(model, inputs, num_items_in_batch, kl_weight=kl_weight)
        return (loss, {"loss": loss}) if return_outputs else loss

    def get_train_dataloader(self) -> DataLoader:
        # Under DDP accelerate deals batches out in turn and skips a round whose last batch is short;
        # bucketing leaves short batches anywhere in the order, so there they are dropped instead.
        sampler = LengthBucketSampler(self.train_dataset.lengths, self._train_batch_size, seed=self.args.seed,
                                      largest_first=True, drop_last=self.args.world_size > 1)
        loader = DataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers)
        return self.accelerator.prepare(loader)

    def _save_checkpoint(self, model, trial) -> None:
        # Let Trainer write into <out>/.staging/checkpoint-N, then rename it into place:
        # a kill mid-save leaves only .staging behind, never a half checkpoint.
        root = self.args.output_dir
        staging = os.path.join(root, STAGING)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        final = os.path.join(root, name)
        if self.args.should_save:
            shutil.rmtree(os.path.join(staging, name), ignore_errors=True)
        self.args.output_dir = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.output_dir = root
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            best = self.state.best_model_checkpoint
            if best and best.startswith(staging):
                self.state.best_model_checkpoint = best.replace(staging, root, 1)
            if self.state.best_global_step and os.path.isdir(
                os.path.join(root, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
            ):
                self.state.best_model_checkpoint = os.path.join(root, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
            self.state.save_to_json(os.path.join(staging, name, "trainer_state.json"))
            if os.path.isdir(final):
                shutil.rmtree(final)
            os.replace(os.path.join(staging, name), final)
            from transformers.trainer_utils import rotate_checkpoints

            rotate_checkpoints(output_dir=root, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
        self.accelerator.wait_for_everyone()
