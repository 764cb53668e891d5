"""The data of a run: each phase's prepared folder, its instance order and held-out tail, and the collator
that masks its batches.

The order of instances is a pure function of (seed, phase, epoch), so a run's whole data state is the number
of instances of the current phase consumed so far.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bertwwm.core.errors import UserError
from bertwwm.pretrain.config import Phase, PretrainConfig
from bertwwm.pretrain.distributed import Dist


class PhaseData:
    """The instances of one phase: a deterministic order per epoch, a held-out slice, this rank's share."""

    def __init__(self, cfg: PretrainConfig, index: int, folder: str, d: Dist):
        from bertwwm.data.storage import PreparedDataset

        phase = cfg.phases[index]
        self.dataset = PreparedDataset(folder, verify=True if cfg.verify_data else None)
        m = self.dataset.manifest
        where = Path(folder) / "manifest.json"
        if m["max_seq_length"] > phase.max_seq_length:
            raise UserError(f"phase {index + 1} trains at max length {phase.max_seq_length} but this folder was "
                            f"prepared at {m['max_seq_length']}; prepare it with --max-seq-length "
                            f"{phase.max_seq_length} (or pass the right folder)", where)
        if cfg.nsp and not m["nsp"]:
            raise UserError("the recipe trains NSP but this folder has no NSP labels; prepare it with NSP or "
                            "set model.nsp = false (--no-nsp)", where)
        if cfg.data_masking != "any" and m["masking"] != cfg.data_masking:
            raise UserError(f"the recipe expects {cfg.data_masking} masking but the folder has {m['masking']} "
                            f"masks; prepare with --masking {cfg.data_masking} or pass "
                            f"--set masking.data_masking=any", where)
        n = len(self.dataset)
        # The tail is held out unless a separate held-out folder is given.
        self.n_eval = min(cfg.eval_instances, n // 10) if cfg.eval_instances > 0 and not cfg.heldout else 0
        self.n_train = n - self.n_eval
        micro = phase.batch_size // cfg.grad_accum
        if micro % d.world:
            raise UserError(f"phase {index + 1}: micro-batch {micro} (batch {phase.batch_size} / grad_accum "
                            f"{cfg.grad_accum}) does not split over {d.world} processes")
        if self.n_train < 1:
            raise UserError("the prepared folder holds no instances", folder)
        self.seed, self.index, self.batch = cfg.seed, index, phase.batch_size
        self.micro = micro
        self.local = micro // d.world
        self.rank, self.world = d.rank, d.world
        # the macbert policy's similar-words table, built by `prepare --masking macbert` and named in the manifest
        self.similar_words = ((m.get("config") or {}).get("similar_words") or {}).get("path")
        self._perm_epoch = -1
        self._training_counts: np.ndarray | None = None
        self._perm: np.ndarray | None = None

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            rng = np.random.default_rng([self.seed, self.index, epoch])
            self._perm = rng.permutation(self.n_train)
            self._perm_epoch = epoch
        return self._perm

    def stream(self, start: int, count: int) -> np.ndarray:
        """Instance indices at positions [start, start+count) of the endless shuffled stream."""
        out = []
        while count > 0:
            epoch, offset = divmod(start, self.n_train)
            take = min(count, self.n_train - offset)
            out.append(self._order(epoch)[offset:offset + take])
            start += take
            count -= take
        return np.concatenate(out)

    def local_micro_batches(self, consumed: int, batch: int, grad_accum: int) -> list[list[dict]]:
        """This rank's share of each micro-batch of the optimizer step that starts at stream position `consumed`
        (instances of this phase used so far) with a global batch of `batch`."""
        micro = batch // grad_accum
        local = micro // self.world
        batches = []
        for k in range(grad_accum):
            ids = self.stream(consumed + k * micro + self.rank * local, local)
            batches.append([self.dataset[int(i)] for i in ids])
        return batches

    def eval_items(self) -> list[dict]:
        return [self.dataset[i] for i in range(self.n_train, self.n_train + self.n_eval)]

    def training_token_counts(self, vocab_size: int) -> np.ndarray:
        """How often each token occurs in the text this phase trains on (its held-out tail left out); computed
        once (the output-bias init, the held-out reference and the corpus decoder all ask)."""
        if self._training_counts is None or len(self._training_counts) != vocab_size:
            from bertwwm.pretrain.heldout import training_token_counts

            self._training_counts = training_token_counts(self.dataset, self.eval_items(), vocab_size)
        return self._training_counts

    def unigram_log_probs(self, vocab_size: int, smoothing: float = 1.0):
        """log p(token) of the text this phase trains on (its own held-out tail left out), add-`smoothing`."""
        from bertwwm.pretrain.heldout import smoothed_log_probs

        return smoothed_log_probs(self.training_token_counts(vocab_size), smoothing)

    def training_token_ids(self, vocab_size: int) -> np.ndarray:
        """The token ids that occur in the text this phase trains on (its held-out tail left out)."""
        return np.flatnonzero(self.training_token_counts(vocab_size))


def phase_folders(cfg: PretrainConfig) -> list[str]:
    """Each phase's prepared folder (and the held-out folder's fit), checked before anything is written."""
    folders = []
    for i, p in enumerate(cfg.phases):
        folder = cfg.data if p.data == "data" else cfg.data_512
        if folder is None:
            flag = "--data" if p.data == "data" else "--data-512"
            raise UserError(f"phase {i + 1} (max length {p.max_seq_length}) needs a prepared folder: pass {flag} DIR")
        if not Path(folder).is_dir():
            raise UserError("prepared data folder not found", folder)
        folders.append(folder)
    if cfg.heldout is not None:  # checked before anything is written
        from bertwwm.data.storage import read_manifest
        from bertwwm.pretrain.heldout import check_heldout

        if not (Path(cfg.heldout) / "manifest.json").is_file():
            raise UserError("held-out folder not found (a folder written by `bertwwm prepare`)", cfg.heldout)
        check_heldout(read_manifest(cfg.heldout), cfg.heldout, min(p.max_seq_length for p in cfg.phases))
    return folders


def data_identity(folders: list[str]) -> list[str]:
    """The fingerprint of each phase's prepared data (options + file checksums; not the path)."""
    from bertwwm.data.storage import data_fingerprint, read_manifest

    return [data_fingerprint(read_manifest(f)) for f in folders]


def make_collator(cfg: PretrainConfig, phase: Phase, seed: int, similar_words: str | None = None):
    """The phase's dynamic-masking collator; `similar_words`: the macbert policy's table (the data's)."""
    from bertwwm.data.collate import WholeWordMaskCollator
    from bertwwm.data.masking import MaskingConfig

    mcfg = MaskingConfig(policy=cfg.policy, mask_prob=cfg.mask_prob, max_predictions=phase.max_predictions,
                         decide_per=cfg.decide_per)
    return WholeWordMaskCollator(mcfg, vocab=masking_vocab(cfg), seed=seed, pad_to_multiple_of=8,
                                 similar_words=similar_words)


def masking_vocab(cfg: PretrainConfig):
    """The vocabulary masks draw from: the --init model's extended one (`bertwwm vocab extend`), else the shipped."""
    from bertwwm.text.tokens import VocabInfo, model_vocab

    return VocabInfo.from_vocab(model_vocab(cfg.init) if cfg.init != "random" else None)


def collator_seed(cfg: PretrainConfig, phase_index: int, rank: int) -> int:
    return (cfg.seed * 1_000_003 + phase_index * 7919 + rank) % (2**63)
