"""paddle DataLoaders from a config's TrainReader / EvalReader, built so that runs repeat.

Not ppdet's reader call: it starts an iterator at once (with workers, that forks them and
draws their seed from numpy's global generator), and ppdet's wrapper restarts one the moment
an epoch ends, so the draws land at times nobody controls and a resumed run would not repeat.
Here an iterator exists only while a loop runs over the loader, and workers are seeded from
(seed, rank, epoch, worker id) alone.
"""

import contextlib
import hashlib
import io
import random

from picosparse import paddle_env, progress
from picosparse.steps.data_paths import check_dataset

SHM_MIN_MB = 1024  # PaddleDetection's rule: below 1 GB of /dev/shm, no shared memory


class WorkerSeed:
    """worker_init_fn: seeds a loader worker from (seed, rank, epoch, worker id) only.

    Set `epoch` before each pass; workers are forked when the pass starts and see it.
    """

    def __init__(self, seed, rank):
        self.seed, self.rank, self.epoch = seed, rank, 0

    def __call__(self, worker_id):
        s = paddle_env.stack()
        key = f"{self.seed}/{self.rank}/{self.epoch}/{worker_id}".encode()
        n = int.from_bytes(hashlib.sha256(key).digest()[:4], "little")
        random.seed(n)
        s.np.random.seed(n)
        s.paddle.seed(n)


def shared_memory(reader, workers, section):
    """Whether the DataLoader may use shared memory, as PaddleDetection decides; a note when
    the config asks for it and it does not apply."""
    if not getattr(reader, "use_shared_memory", False):
        return False
    if workers == 0:
        progress.say(f"note: {section}.use_shared_memory has no effect with worker_num: 0")
        return False
    from ppdet.data.shm_utils import _get_shared_memory_size_in_M
    mb = _get_shared_memory_size_in_M()
    if mb is not None and mb < SHM_MIN_MB:
        progress.say(f"note: {section}.use_shared_memory: /dev/shm has {mb:.0f} MB (< 1 GB); "
                     "loading without shared memory, as PaddleDetection does")
        return False
    return True


def _dataset(reader_name, dataset_name):
    with contextlib.redirect_stdout(io.StringIO()):
        reader = paddle_env.create(reader_name)
        dataset = paddle_env.create(dataset_name)()
        dataset.check_or_download_dataset()
        dataset.parse_dataset()
        dataset.set_transform(reader._sample_transforms)
        dataset.set_kwargs(**reader.kwargs)
    return reader, dataset


def train_loader(cfg, seed=0, rank=0):
    """(DataLoader, its DistributedBatchSampler, its WorkerSeed) for cfg's TrainReader; the
    sampler gives this rank its shard of each epoch's shuffled order."""
    s = paddle_env.stack()
    check_dataset(cfg, "TrainDataset")
    reader, dataset = _dataset("TrainReader", "TrainDataset")
    sampler = s.paddle.io.DistributedBatchSampler(dataset, batch_size=reader.batch_size,
                                                  shuffle=reader.shuffle,
                                                  drop_last=reader.drop_last)
    workers = cfg.get("worker_num", 0)
    seeder = WorkerSeed(seed, rank)
    loader = s.paddle.io.DataLoader(dataset, batch_sampler=sampler,
                                    collate_fn=reader._batch_transforms, num_workers=workers,
                                    return_list=False, worker_init_fn=seeder,
                                    use_shared_memory=shared_memory(reader, workers,
                                                                    "TrainReader"))
    return loader, sampler, seeder


def eval_loader(cfg):
    """(DataLoader, dataset) for cfg's EvalDataset, in order, one process's whole set."""
    s = paddle_env.stack()
    check_dataset(cfg, "EvalDataset")
    reader, dataset = _dataset("EvalReader", "EvalDataset")
    sampler = s.paddle.io.BatchSampler(dataset, batch_size=reader.batch_size)
    workers = cfg.get("worker_num", 0)
    loader = s.paddle.io.DataLoader(dataset, batch_sampler=sampler,
                                    collate_fn=reader._batch_transforms, num_workers=workers,
                                    return_list=False,
                                    use_shared_memory=shared_memory(reader, workers,
                                                                    "EvalReader"))
    return loader, dataset
